"""Settings: the dev default, TOML, flags over TOML, and a named key in every error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from trelay.config.auth_settings import DEFAULT_REALM
from trelay.config.flags import Flags
from trelay.config.settings import ListenSettings, LogLevel, Settings, load_settings
from trelay.config.values import ListenAddress, SettingsError, format_host_port, parse_host_port
from trelay.node.turn_setup import turn_config

LOOPBACK_ANY = (ListenAddress("127.0.0.1", 0),)


def write(tmp_path: Path, text: str, name: str = "trelay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_nothing_given_is_the_dev_default() -> None:
    settings = load_settings()
    assert settings.listen == ListenSettings(LOOPBACK_ANY, LOOPBACK_ANY, LOOPBACK_ANY)
    assert settings.tls.self_signed
    assert settings.tls.cert_file is None and settings.tls.key_file is None
    assert settings.auth.realm == DEFAULT_REALM == "trelay.local"
    assert settings.stream.idle_timeout == 30.0
    assert settings.log_level is LogLevel.INFO
    assert settings.software.startswith("trelay")


def test_dev_secret_is_fresh_long_and_not_in_repr() -> None:
    first, second = load_settings(), Settings()
    assert len(first.auth.dev_secret) >= 32
    assert first.auth.dev_secret != second.auth.dev_secret
    assert first.auth.dev_secret not in repr(first)
    assert first.auth.dev_secret not in repr(first.auth)


def test_full_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    cert = write(tmp_path / "certs", "not read here", "cert.pem")
    key = write(tmp_path / "certs", "not read here", "key.pem")
    config = write(
        tmp_path,
        """
        software = "relay-7"
        log_level = "DEBUG"
        [listen]
        udp = ["192.0.2.1:3478", "[2001:DB8::1]:3478"]
        tcp = ["0.0.0.0:3478"]
        tls = ["[::]:5349"]
        [tls]
        cert = "certs/cert.pem"
        key = "certs/key.pem"
        [stream]
        idle_timeout = 5
        [auth]
        realm = "example.org"
        """,
    )
    settings = load_settings(config)
    assert settings.listen.udp == (
        ListenAddress("192.0.2.1", 3478),
        ListenAddress("2001:db8::1", 3478),
    )
    assert settings.listen.tcp == (ListenAddress("0.0.0.0", 3478),)
    assert settings.listen.tls == (ListenAddress("::", 5349),)
    # Relative to the file's directory, not to the working directory.
    assert settings.tls.cert_file == cert
    assert settings.tls.key_file == key
    assert not settings.tls.self_signed
    assert settings.stream.idle_timeout == 5.0
    assert isinstance(settings.stream.idle_timeout, float)
    assert settings.auth.realm == "example.org"
    assert settings.software == "relay-7"
    assert settings.log_level is LogLevel.DEBUG


def test_empty_file_is_the_dev_default(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert settings.listen == ListenSettings()
    assert settings.auth.realm == DEFAULT_REALM


def test_naming_one_transport_turns_the_others_off(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[listen]\nudp = ["127.0.0.1:0"]\n'))
    assert settings.listen == ListenSettings(LOOPBACK_ANY, (), ())
    settings = load_settings(flags=Flags(listen_tls=("[::1]:0",)))
    assert settings.listen == ListenSettings((), (), (ListenAddress("::1", 0),))


def test_flags_replace_the_file_per_transport(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'log_level = "error"\n'
        '[listen]\nudp = ["127.0.0.1:1000"]\ntcp = ["127.0.0.1:1001"]\n'
        '[auth]\nrealm = "file.example"\n',
    )
    flags = Flags(
        listen_udp=("127.0.0.2:2000", "127.0.0.3:0"),
        realm="flag.example",
        log_level="warning",
    )
    settings = load_settings(config, flags)
    assert settings.listen.udp == (
        ListenAddress("127.0.0.2", 2000),
        ListenAddress("127.0.0.3", 0),
    )
    assert settings.listen.tcp == (ListenAddress("127.0.0.1", 1001),)
    assert settings.listen.tls == ()
    assert settings.auth.realm == "flag.example"
    assert settings.log_level is LogLevel.WARNING


def test_tls_flags(tmp_path: Path) -> None:
    cert = write(tmp_path, "x", "c.pem")
    key = write(tmp_path, "x", "k.pem")
    settings = load_settings(flags=Flags(tls_cert=str(cert), tls_key=str(key)))
    assert (settings.tls.cert_file, settings.tls.key_file) == (cert, key)


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ('[listen]\nudp = ["127.0.0.1:1", "x"]', "listen.udp[1]", "expected host:port, got 'x'"),
        ('[listen]\ntcp = ["127.0.0.1"]', "listen.tcp[0]", "expected host:port"),
        ('[listen]\ntls = ["[::1]"]', "listen.tls[0]", "expected host:port"),
        ('[listen]\nudp = ["::1:3478"]', "listen.udp[0]", "'[::1]:3478'"),
        ('[listen]\nudp = ["[127.0.0.1]:1"]', "listen.udp[0]", "brackets are for IPv6"),
        ('[listen]\nudp = ["localhost:1"]', "listen.udp[0]", "expected an IP address"),
        ('[listen]\nudp = ["127.0.0.1:"]', "listen.udp[0]", "expected a port number"),
        ('[listen]\nudp = ["127.0.0.1:-1"]', "listen.udp[0]", "expected a port number"),
        ('[listen]\nudp = ["127.0.0.1:65536"]', "listen.udp[0]", "out of range"),
        ('[listen]\nudp = [":80"]', "listen.udp[0]", "expected host:port"),
        ("[listen]\nudp = [3478]", "listen.udp[0]", "got an integer"),
        ('[listen]\nudp = "127.0.0.1:1"', "listen.udp", "expected a list"),
        ("[listen]\nudp = []", "listen", "no address to listen on"),
        ("[listen]\nsctp = []", "listen.sctp", "unknown key"),
        ("listen = 5", "listen", "expected a table, got an integer"),
        ("bogus = 1", "bogus", "unknown key"),
        ("[stream]\nidle = 1", "stream.idle", "unknown key"),
        (
            '[listen]\ntcp = ["127.0.0.1:5000"]\ntls = ["127.0.0.1:5000"]',
            "listen.tls[0]",
            "already listed as listen.tcp[0]",
        ),
        ('[listen]\nudp = ["[::1]:9", "[::1]:9"]', "listen.udp[1]", "already listed"),
        ('[tls]\ncert = "missing.pem"', "tls.cert", "file not found: "),
        ("[tls]\ncert = 1", "tls.cert", "expected a file path"),
        ('[tls]\ncert = "."', "tls.cert", "not a file"),
        ("[stream]\nidle_timeout = 0", "stream.idle_timeout", "positive"),
        ("[stream]\nidle_timeout = -1.5", "stream.idle_timeout", "positive"),
        ("[stream]\nidle_timeout = nan", "stream.idle_timeout", "positive"),
        ("[stream]\nidle_timeout = true", "stream.idle_timeout", "got a boolean"),
        ('[stream]\nidle_timeout = "30"', "stream.idle_timeout", "got a string"),
        ('[auth]\nrealm = ""', "auth.realm", "must not be empty"),
        ("[auth]\nrealm = 5", "auth.realm", "expected a string"),
        ('[auth]\nrealm = "a\\nb"', "auth.realm", "control characters"),
        (f'software = "{"x" * 128}"', "software", "at most 127"),
        ('log_level = "loud"', "log_level", "expected one of debug, info"),
        ('log_level = ""', "log_level", "expected one of"),
        ("log_level = 1979-05-27", "log_level", "expected one of"),
        ("auth = [1]", "auth", "expected a table, got an array"),
        ('[relay]\naddress_v6 = "10.0.0.1"', "relay.address_v6", "not an IPv6 address"),
        ('[relay]\naddress_v6 = "nope"', "relay.address_v6", "not an IP address"),
        ('[relay]\naddress = "::1"\naddress_v6 = "::1"', "relay.address_v6", "IPv6 already"),
        ('[relay]\nexternal_address = "::2"', "relay.external_address", "relay.address's"),
        ('[relay]\naddress = "0.0.0.0"', "relay.external_address", "needed when"),
        ('[relay]\naddress_v6 = "::"', "relay.external_address_v6", "needed when"),
        ('[relay]\nexternal_address_v6 = "1.2.3.4"', "relay.external_address_v6", "IPv6"),
    ],
)
def test_every_file_error_names_its_key(tmp_path: Path, toml: str, key: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, toml))
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value) == f"{key}: {caught.value.problem}"


def test_the_missing_half_of_a_tls_pair_is_named(tmp_path: Path) -> None:
    write(tmp_path, "x", "cert.pem")
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, '[tls]\ncert = "cert.pem"'))
    assert caught.value.key == "tls.key"
    with pytest.raises(SettingsError) as caught:
        load_settings(flags=Flags(tls_key=str(tmp_path / "cert.pem")))
    assert caught.value.key == "tls.cert"


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path / "absent.toml")
    assert caught.value.key == "--config"
    assert caught.value.problem == f"file not found: {tmp_path / 'absent.toml'}"
    broken = write(tmp_path, "a = \n")
    with pytest.raises(SettingsError) as caught:
        load_settings(broken)
    assert caught.value.key == str(broken)
    assert "invalid TOML" in caught.value.problem
    not_utf8 = tmp_path / "latin1.toml"
    not_utf8.write_bytes(b'software = "\xe9"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(not_utf8)
    assert caught.value.key == str(not_utf8)


@pytest.mark.parametrize(
    ("flags", "key", "problem"),
    [
        (Flags(listen_udp=("nope",)), "--listen-udp", "expected host:port, got 'nope'"),
        (Flags(listen_tcp=("127.0.0.1:1", "1.2.3:4")), "--listen-tcp", "IP address"),
        (Flags(listen_tls=("[::1]:99999",)), "--listen-tls", "out of range"),
        (Flags(realm=""), "--realm", "must not be empty"),
        (Flags(log_level="chatty"), "--log-level", "expected one of"),
        (Flags(tls_cert="/nonexistent/cert.pem"), "--tls-cert", "file not found"),
        (Flags(tls_key="/nonexistent/key.pem"), "--tls-key", "file not found"),
        (Flags(listen_udp=(), listen_tcp=(), listen_tls=()), "listen", "no address"),
        (Flags(relay_address_v6="127.0.0.1"), "--relay-address-v6", "not an IPv6"),
        (Flags(external_address="x"), "--external-address", "not an IP address"),
        (Flags(relay_address="0.0.0.0"), "relay.external_address", "needed when"),
    ],
)
def test_every_flag_error_names_its_flag(flags: Flags, key: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(flags=flags)
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_a_bad_file_is_reported_even_when_a_flag_overrides_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, 'log_level = "loud"'), Flags(log_level="debug"))
    assert caught.value.key == "log_level"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:3478", "127.0.0.1", 3478),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("[::1]:3478", "::1", 3478),
        ("[2001:DB8:0::1]:65535", "2001:db8::1", 65535),
        ("[::]:5349", "::", 5349),
    ],
)
def test_parse_host_port(text: str, host: str, port: int) -> None:
    address = parse_host_port("k", text)
    assert (address.host, address.port) == (host, port)
    assert parse_host_port("k", str(address)) == address


def test_format_host_port_brackets_ipv6_only() -> None:
    assert format_host_port("::1", 3478) == "[::1]:3478"
    assert format_host_port("192.0.2.1", 3478) == "192.0.2.1:3478"


def test_log_levels_map_to_logging() -> None:
    assert LogLevel.DEBUG.logging_level == logging.DEBUG
    assert LogLevel.CRITICAL.logging_level == logging.CRITICAL


def test_a_dual_stack_relay_behind_a_nat(tmp_path: Path) -> None:
    toml = (
        '[relay]\naddress = "0.0.0.0"\nexternal_address = "203.0.113.7"\n'
        'address_v6 = "::"\nexternal_address_v6 = "2001:db8::7"\n'
    )
    config = turn_config(load_settings(write(tmp_path, toml)))
    assert (config.relay_host, config.external_host) == ("0.0.0.0", "203.0.113.7")
    assert (config.relay_host_v6, config.external_host_v6) == ("::", "2001:db8::7")
    flags = Flags(relay_address="10.1.2.3", external_address="198.51.100.9")
    config = turn_config(load_settings(flags=flags))
    assert (config.relay_host, config.external_host, config.relay_host_v6) == (
        "10.1.2.3", "198.51.100.9", None,
    )  # fmt: skip


def test_quota_bounds_reach_the_core(tmp_path: Path) -> None:
    """[quotas] bounds of issue 15: defaults, values, 0 for unlimited, into TurnConfig."""
    defaults = turn_config(load_settings(write(tmp_path, "")))
    assert (
        defaults.permissions_per_allocation, defaults.channels_per_allocation,
        defaults.peers_per_request, defaults.allocations_per_source,
        defaults.pending_per_source,
    ) == (128, 128, 32, 1000, 64)  # fmt: skip
    toml = (
        "[quotas]\npermissions_per_allocation = 10\nchannels_per_allocation = 0\n"
        "peers_per_request = 5\nallocations_per_source = 20\npending_per_source = 3\n"
    )
    config = turn_config(load_settings(write(tmp_path, toml)))
    assert (
        config.permissions_per_allocation, config.channels_per_allocation,
        config.peers_per_request, config.allocations_per_source, config.pending_per_source,
    ) == (10, 0, 5, 20, 3)  # fmt: skip


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[quotas]\npermissions_per_allocation = -1\n", "quotas.permissions_per_allocation"),
        ('[quotas]\nchannels_per_allocation = "many"\n', "quotas.channels_per_allocation"),
        ("[quotas]\npeers_per_request = 1.5\n", "quotas.peers_per_request"),
        ("[quotas]\nallocations_per_source = true\n", "quotas.allocations_per_source"),
        ("[quotas]\npending_per_source = -3\n", "quotas.pending_per_source"),
        ("[quotas]\npermissions_per_allocation = 8\npeers_per_request = 9\n",
         "quotas.peers_per_request"),
        ("[quotas]\npeers_per_source = 9\n", "quotas.peers_per_source"),
    ],
)  # fmt: skip
def test_quota_bounds_refused_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, toml))
    assert caught.value.key == key
