"""`[nat_discovery]` (RFC 5780): off by default, its addresses made from listen.udp[0] and
the alternate host and port, every bad value or combination named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.settings_file import write
from trelay.config.flags import Flags
from trelay.config.nat_discovery_settings import NatDiscoverySettings
from trelay.config.settings import Settings, load_settings
from trelay.config.values import ListenAddress, SettingsError
from trelay.node.turn_setup import turn_config
from trelay.turn.nat_discovery import NatDiscovery

LISTEN = '[listen]\nudp = ["192.0.2.1:3478"]\ntcp = ["192.0.2.1:3478"]\n'
ENABLED = '[nat_discovery]\nenabled = true\nalternate_host = "192.0.2.2"\nalternate_port = 3479\n'


def test_off_without_the_section(tmp_path: Path) -> None:
    assert Settings().nat_discovery == NatDiscoverySettings()
    settings = load_settings(write(tmp_path, LISTEN))
    assert settings.nat_discovery.core() is None
    assert settings.listen.nat == ()
    assert turn_config(settings).nat_discovery is None


def test_enabled_makes_four_udp_addresses_from_listen_udp_0(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, LISTEN + ENABLED))
    nat = NatDiscovery(("192.0.2.1", 3478), ("192.0.2.2", 3479))
    assert settings.nat_discovery.core() == nat
    assert turn_config(settings).nat_discovery == nat
    # The three the node binds besides listen.udp[0]; TCP is not doubled.
    assert settings.listen.nat == (
        ListenAddress("192.0.2.2", 3478),
        ListenAddress("192.0.2.1", 3479),
        ListenAddress("192.0.2.2", 3479),
    )
    assert settings.listen.udp == (ListenAddress("192.0.2.1", 3478),)
    assert settings.listen.tcp == (ListenAddress("192.0.2.1", 3478),)


def test_a_listen_flag_moves_the_primary(tmp_path: Path) -> None:

    flags = Flags(listen_udp=("192.0.2.1:4000",))
    settings = load_settings(write(tmp_path, LISTEN + ENABLED), flags)
    assert settings.nat_discovery.core() == NatDiscovery(("192.0.2.1", 4000), ("192.0.2.2", 3479))
    assert ListenAddress("192.0.2.2", 4000) in settings.listen.nat


def test_disabled_keys_are_kept_but_inert(tmp_path: Path) -> None:
    text = LISTEN + ENABLED.replace("enabled = true", "enabled = false")
    settings = load_settings(write(tmp_path, text))
    assert settings.nat_discovery.alternate_host == "192.0.2.2"
    assert settings.nat_discovery.core() is None and settings.listen.nat == ()


def test_ipv6_addresses_are_normalised(tmp_path: Path) -> None:
    text = (
        '[listen]\nudp = ["[2001:db8::1]:3478"]\n[nat_discovery]\nenabled = true\n'
        'alternate_host = "2001:DB8:0::2"\nalternate_port = 3479\n'
    )
    nat = load_settings(write(tmp_path, text)).nat_discovery.core()
    assert nat == NatDiscovery(("2001:db8::1", 3478), ("2001:db8::2", 3479))


@pytest.mark.parametrize(
    ("listen", "section", "key"),
    [
        (LISTEN, "enabled = true\nalternate_port = 3479", "nat_discovery.alternate_host"),
        (LISTEN, 'enabled = true\nalternate_host = "192.0.2.2"', "nat_discovery.alternate_port"),
        (LISTEN, 'alternate_host = "example.org"', "nat_discovery.alternate_host"),
        (LISTEN, 'alternate_host = "0.0.0.0"', "nat_discovery.alternate_host"),
        (LISTEN, "alternate_host = 7", "nat_discovery.alternate_host"),
        (LISTEN, "alternate_port = 0", "nat_discovery.alternate_port"),
        (LISTEN, "alternate_port = 70000", "nat_discovery.alternate_port"),
        (LISTEN, 'alternate_port = "3479"', "nat_discovery.alternate_port"),
        (LISTEN, 'enabled = "yes"', "nat_discovery.enabled"),
        (LISTEN, "port = 3479", "nat_discovery.port"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, listen: str, section: str, key: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(write(tmp_path, f"{listen}[nat_discovery]\n{section}\n"))
    assert error.value.key == key


@pytest.mark.parametrize(
    ("listen", "alternate", "key", "problem"),
    [
        ('udp = ["0.0.0.0:3478"]', ("192.0.2.2", 3479), "listen.udp[0]", "specific IP"),
        ('udp = ["192.0.2.1:0"]', ("192.0.2.2", 3479), "listen.udp[0]", "fixed port"),
        ('udp = []\ntcp = ["192.0.2.1:3478"]', ("192.0.2.2", 3479), "nat_discovery.enabled",
         "UDP listen address"),
        ('udp = ["192.0.2.1:3478"]', ("2001:db8::2", 3479), "nat_discovery.alternate_host",
         "family"),
        ('udp = ["192.0.2.1:3478"]', ("192.0.2.1", 3479), "nat_discovery.alternate_host",
         "must differ"),
        ('udp = ["192.0.2.1:3478"]', ("192.0.2.2", 3478), "nat_discovery.alternate_port",
         "must differ"),
        ('udp = ["192.0.2.1:3478", "192.0.2.2:3479"]', ("192.0.2.2", 3479),
         "nat_discovery.alternate_port", r"already listen\.udp\[1\]"),
        ('udp = ["192.0.2.1:3478"]\ndtls = ["192.0.2.1:3479"]', ("192.0.2.2", 3479),
         "nat_discovery.alternate_port", r"already listen\.dtls\[0\]"),
    ],
)  # fmt: skip
def test_combinations_it_cannot_serve_name_the_key_to_edit(
    tmp_path: Path, listen: str, alternate: tuple[str, int], key: str, problem: str
) -> None:
    text = (
        f"[listen]\n{listen}\n[nat_discovery]\nenabled = true\n"
        f'alternate_host = "{alternate[0]}"\nalternate_port = {alternate[1]}\n'
    )
    with pytest.raises(SettingsError, match=problem) as error:
        load_settings(write(tmp_path, text))
    assert error.value.key == key


def test_the_example_section_works_uncommented(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "deploy" / "trelay.example.toml"
    lines = example.read_text().splitlines()
    start = lines.index("# [nat_discovery]")
    section = [line.removeprefix("# ") for line in lines[start : start + 4]]
    text = '[listen]\nudp = ["203.0.113.7:3478"]\n' + "\n".join(section) + "\n"
    nat = load_settings(write(tmp_path, text)).nat_discovery.core()
    assert nat == NatDiscovery(("203.0.113.7", 3478), ("203.0.113.8", 3479))
