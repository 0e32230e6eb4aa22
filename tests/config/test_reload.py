"""trelay.config.reload: a reload's decision, key by key, from files on disk.

Each test starts from settings loaded as `trelay serve` loads them, edits the file, and
checks what `reload_settings` says applies live, what waits for a restart (and keeps its
running value), and that a bad file changes nothing and names the key.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from trelay.config.flags import Flags
from trelay.config.reload import Change, Reload, ReloadFailed, reload_settings
from trelay.config.settings import LogLevel, Settings, load_settings
from trelay.config.values import ListenAddress

BASE = """
[listen]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
[auth]
realm = "example.org"
users = { alice = "wonderland", bob = "builder" }
[relay]
allow_peers = ["192.0.2.0/24"]
[quotas]
user = 5
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "trelay.toml"
    path.write_text(BASE)
    return path


def reloaded(current: Settings, config: Path, text: str, flags: Flags | None = None) -> Reload:
    config.write_text(text)
    result = reload_settings(current, config, flags or Flags())
    assert isinstance(result, Reload), result
    return result


def keys(changes: tuple[Change, ...]) -> list[str]:
    return [change.key for change in changes]


# --- nothing changed --------------------------------------------------------------------


def test_an_unchanged_file_changes_nothing(config: Path) -> None:
    current = load_settings(config)
    result = reloaded(current, config, BASE)
    assert result.live == () and result.restart == ()
    assert result.settings == current


def test_the_dev_defaults_keep_their_generated_secret() -> None:
    current = load_settings(None)
    result = reload_settings(current, None, Flags())
    assert isinstance(result, Reload)
    assert result.live == () and result.restart == ()
    assert result.settings.auth.dev_secret == current.auth.dev_secret
    assert result.live_paths == ()
    assert result.settings.auth.shared_secrets == current.auth.shared_secrets


# --- live changes -----------------------------------------------------------------------


def test_peer_lists_quotas_lifetimes_and_the_log_level_apply_live(config: Path) -> None:
    current = load_settings(config)
    result = reloaded(
        current,
        config,
        BASE.replace('allow_peers = ["192.0.2.0/24"]', 'deny_peers = ["198.51.100.7/32"]').replace(
            "user = 5", "user = 1\ntotal = 10"
        )
        + "[lifetimes]\ndefault = 300\nmax = 900\n",
    )
    relay = result.settings.relay
    assert relay.allow_peers == ()
    assert relay.deny_peers == ("198.51.100.7/32",)
    assert (relay.user_quota, relay.total_quota) == (1, 10)
    assert (relay.default_lifetime, relay.max_lifetime) == (300, 900)
    assert set(keys(result.live)) == {
        "relay.allow_peers",
        "relay.deny_peers",
        "quotas.user",
        "quotas.total",
        "lifetimes.default",
        "lifetimes.max",
    }
    details = {change.key: change.detail for change in result.live}
    assert details["quotas.user"] == "5 -> 1"
    assert details["relay.deny_peers"] == "+ 198.51.100.7/32"
    assert details["relay.allow_peers"] == "- 192.0.2.0/24"
    assert result.restart == ()
    assert result.applies("quotas.user", "workers")
    assert not result.applies("workers")


def test_the_log_level_and_strict_expiry_apply_live(config: Path) -> None:
    current = load_settings(config)
    text = 'log_level = "debug"\n' + BASE.replace(
        'realm = "example.org"', 'realm = "example.org"\nstrict_expiry = false'
    )
    result = reloaded(current, config, text)
    assert result.settings.log_level is LogLevel.DEBUG
    assert result.settings.auth.strict_expiry is False
    assert [str(c) for c in result.live] == [
        "auth.strict_expiry: true -> false",
        "log_level: info -> debug",
    ]


def test_users_apply_live_and_the_change_names_no_user_or_password(config: Path) -> None:
    current = load_settings(config)
    users = 'users = { alice = "looking-glass", carol = "c4r0l", dave = "d4ve" }'
    result = reloaded(current, config, BASE.replace(
        'users = { alice = "wonderland", bob = "builder" }', users
    ))  # fmt: skip
    assert dict(result.settings.auth.users) == {
        "alice": "looking-glass",
        "carol": "c4r0l",
        "dave": "d4ve",
    }
    (change,) = result.live
    assert change == Change("auth.users", "2 added, 1 removed, 1 with a new password (3 in all)")
    for secret in ("alice", "bob", "carol", "looking-glass", "wonderland", "builder"):
        assert secret not in str(change)


def test_flags_still_win_over_the_file(config: Path) -> None:
    flags = Flags(log_level="warning", users=("zed:zzz",))
    current = load_settings(config, flags)
    result = reloaded(current, config, 'log_level = "debug"\n' + BASE, flags)
    assert result.live == ()
    assert result.settings.log_level is LogLevel.WARNING
    assert result.settings.auth.users == (("zed", "zzz"),)


# --- changes that need a restart --------------------------------------------------------


def test_listen_addresses_workers_relay_address_and_realm_wait_for_a_restart(
    config: Path,
) -> None:
    current = load_settings(config)
    text = (
        "workers = 2\n"
        'software = "other"\n'
        'log_format = "json"\n'
        + BASE.replace('udp = ["127.0.0.1:0"]', 'udp = ["127.0.0.1:0", "127.0.0.2:0"]')
        .replace('realm = "example.org"', 'realm = "example.net"')
        .replace("[relay]", '[relay]\naddress = "127.0.0.2"\nports = [50000, 50100]')
        + '[http]\nlisten = ["127.0.0.1:9999"]\n'
        + "[stream]\nidle_timeout = 5\n"
    )
    result = reloaded(current, config, text)
    assert set(keys(result.restart)) == {
        "listen.udp",
        "workers",
        "software",
        "log_format",
        "auth.realm",
        "relay.address",
        "relay.ports",
        "http.listen",
        "stream.idle_timeout",
    }
    assert all("needs a restart" in change.detail for change in result.restart)
    assert result.live == ()
    assert result.settings == current  # every running value kept


def test_a_restart_change_does_not_hold_back_the_live_ones(config: Path) -> None:
    current = load_settings(config)
    result = reloaded(current, config, "workers = 3\n" + BASE.replace("user = 5", "user = 2"))
    assert keys(result.live) == ["quotas.user"]
    assert [str(c) for c in result.restart] == [
        "workers: changed; needs a restart (worker processes are started at start)"
    ]
    assert result.settings.workers == 1
    assert result.settings.relay.user_quota == 2
    # The next reload compares with what is in force: the restart change is listed again.
    again = reload_settings(result.settings, config, Flags())
    assert isinstance(again, Reload)
    assert keys(again.restart) == ["workers"] and again.live == ()


def test_the_listen_flag_of_a_running_process_is_not_a_change(config: Path) -> None:
    flags = Flags(listen_udp=("127.0.0.1:3478",))
    current = load_settings(config, flags)
    result = reloaded(current, config, BASE, flags)
    assert result.restart == () and result.live == ()
    assert current.listen.udp == (ListenAddress("127.0.0.1", 3478),)


# --- TLS --------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    # Only existence is checked here; the node loads and checks the certificates.
    paths = tuple(tmp_path / name for name in ("a.pem", "a.key", "b.pem", "b.key"))
    for path in paths:
        path.write_text("placeholder\n")
    return paths  # type: ignore[return-value]


def tls_config(cert: str, key: str) -> str:
    return (
        BASE.replace('tcp = ["127.0.0.1:0"]', 'tcp = ["127.0.0.1:0"]\ntls = ["127.0.0.1:0"]')
        + f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
    )


def test_tls_files_are_re_read_at_every_reload(
    config: Path, tls_files: tuple[Path, Path, Path, Path]
) -> None:
    config.write_text(tls_config("a.pem", "a.key"))
    current = load_settings(config)
    same = reloaded(current, config, tls_config("a.pem", "a.key"))
    (change,) = same.live
    assert change.key == "tls.cert" and change.detail.startswith("re-read ")
    moved = reloaded(current, config, tls_config("b.pem", "b.key"))
    (change,) = moved.live
    assert change.key == "tls.cert" and change.detail.startswith("now ")
    assert moved.settings.tls.cert_file == tls_files[2]
    assert moved.settings.tls.key_file == tls_files[3]


def test_dropping_the_tls_files_needs_a_restart(
    config: Path, tls_files: tuple[Path, Path, Path, Path]
) -> None:
    config.write_text(tls_config("a.pem", "a.key"))
    current = load_settings(config)
    text = BASE.replace('tcp = ["127.0.0.1:0"]', 'tcp = ["127.0.0.1:0"]\ntls = ["127.0.0.1:0"]')
    result = reloaded(current, config, text)
    assert keys(result.restart) == ["tls.cert"] and result.live == ()
    assert result.settings.tls == current.tls


def test_tls_files_without_a_tls_listener_are_nothing_to_load(
    config: Path, tls_files: tuple[Path, Path, Path, Path]
) -> None:
    current = load_settings(config)
    result = reloaded(current, config, BASE + '[tls]\ncert = "a.pem"\nkey = "a.key"\n')
    assert result.live == () and result.restart == ()


def test_a_throw_away_certificate_stays_as_it_is(config: Path) -> None:
    text = BASE.replace('tcp = ["127.0.0.1:0"]', 'tcp = ["127.0.0.1:0"]\ntls = ["127.0.0.1:0"]')
    config.write_text(text)
    current = load_settings(config)
    assert reloaded(current, config, text).live == ()


# --- TURN REST secrets ------------------------------------------------------------------


def with_secrets(inline: str = "", secrets_file: str = "") -> str:
    extra = (f"secrets = [{inline}]\n" if inline else "") + (
        f'secrets_file = "{secrets_file}"\n' if secrets_file else ""
    )
    return BASE.replace('realm = "example.org"', f'realm = "example.org"\n{extra}')


def test_inline_secrets_apply_live_without_a_secrets_file(config: Path) -> None:
    config.write_text(with_secrets('"old-secret"'))
    current = load_settings(config)
    result = reloaded(current, config, with_secrets('"new-secret", "old-secret"'))
    assert [str(c) for c in result.live] == ["auth.secrets: 2 secrets (was 1)"]
    assert result.settings.auth.shared_secrets == ("new-secret", "old-secret")


def test_the_secrets_files_content_applies_live(config: Path, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.txt"
    secrets.write_text("first-secret\n")
    config.write_text(with_secrets('"inline-secret"', "secrets.txt"))
    current = load_settings(config)
    secrets.write_text("second-secret\nfirst-secret\n")
    result = reloaded(current, config, with_secrets('"inline-secret"', "secrets.txt"))
    assert [str(c) for c in result.live] == ["auth.secrets_file: re-read, 2 secrets (was 1)"]
    assert result.settings.auth.shared_secrets == (
        "inline-secret",
        "second-secret",
        "first-secret",
    )


def test_inline_secrets_beside_a_secrets_file_need_a_restart(config: Path, tmp_path: Path) -> None:
    (tmp_path / "secrets.txt").write_text("file-secret\n")
    config.write_text(with_secrets('"inline-secret"', "secrets.txt"))
    current = load_settings(config)
    result = reloaded(current, config, with_secrets('"other-secret"', "secrets.txt"))
    assert keys(result.restart) == ["auth.secrets"] and result.live == ()
    assert result.settings.auth.shared_secrets == current.auth.shared_secrets


def test_a_new_secrets_file_path_needs_a_restart(config: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a-secret\n")
    (tmp_path / "b.txt").write_text("b-secret\n")
    config.write_text(with_secrets(secrets_file="a.txt"))
    current = load_settings(config)
    result = reloaded(current, config, with_secrets(secrets_file="b.txt"))
    assert keys(result.restart) == ["auth.secrets_file"] and result.live == ()
    assert result.settings.auth.shared_secrets == ("a-secret",)


def test_no_change_shows_a_secrets_value(config: Path, tmp_path: Path) -> None:
    config.write_text(with_secrets('"s3cret-one"'))
    current = load_settings(config)
    result = reloaded(current, config, with_secrets('"s3cret-two"'))
    text = " ".join(str(c) for c in (*result.live, *result.restart))
    assert "auth.secrets" in text
    assert "s3cret" not in text


def test_removing_the_last_secret_while_selftest_runs_is_refused(config: Path) -> None:
    config.write_text(with_secrets('"only-secret"') + "[http]\nselftest = true\n")
    current = load_settings(config)
    config.write_text(BASE)
    result = reload_settings(current, config, Flags())
    assert result == ReloadFailed(
        "auth.secrets", "http.selftest (until a restart) needs a TURN REST secret"
    )


# --- bad files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (BASE.replace("user = 5", "user = -1"), "quotas.user"),
        (BASE.replace('allow_peers = ["192.0.2.0/24"]', 'deny_peers = ["nope"]'),
         "relay.deny_peers[0]"),
        ('log_level = "loud"\n' + BASE, "log_level"),
        (BASE + "[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n", "tls.cert"),
        (BASE + "surprise = 1\n", "quotas.surprise"),
    ],
)  # fmt: skip
def test_a_bad_file_names_the_key_and_keeps_the_settings(config: Path, text: str, key: str) -> None:
    current = load_settings(config)
    config.write_text(text)
    result = reload_settings(current, config, Flags())
    assert isinstance(result, ReloadFailed)
    assert result.key == key
    assert str(result).startswith(f"{key}: ")


def test_a_file_that_is_gone_or_not_toml_is_refused(config: Path) -> None:
    current = load_settings(config)
    config.write_text("[listen\n")
    broken = reload_settings(current, config, Flags())
    assert isinstance(broken, ReloadFailed) and "invalid TOML" in broken.problem
    config.unlink()
    gone = reload_settings(current, config, Flags())
    assert isinstance(gone, ReloadFailed) and gone.key == "--config"


# --- other views of the node, and keys nobody classified ---------------------------------


def test_onto_gives_a_workers_settings_the_live_values_and_keeps_its_own(config: Path) -> None:
    current = load_settings(config)
    worker = replace(
        current,
        listen=replace(current.listen, udp=(ListenAddress("127.0.0.1", 40000),)),
        relay=replace(current.relay, ports=(50000, 50099)),
    )
    text = "workers = 4\n" + BASE.replace("user = 5", "user = 1").replace(
        'allow_peers = ["192.0.2.0/24"]', 'deny_peers = ["198.51.100.7/32"]'
    )
    result = reloaded(current, config, text)
    assert set(result.live_paths) == {"relay.allow_peers", "relay.deny_peers", "relay.user_quota"}
    updated = result.onto(worker)
    assert updated.relay.user_quota == 1
    assert updated.relay.deny_peers == ("198.51.100.7/32",)
    assert updated.relay.allow_peers == ()
    assert updated.relay.ports == (50000, 50099)
    assert updated.listen == worker.listen
    assert updated.workers == current.workers == 1


def test_a_key_without_a_rule_waits_for_a_restart(config: Path) -> None:
    current = load_settings(config)
    result = reloaded(current, config, BASE + "[drain]\ntimeout = 60\n")
    assert [str(c) for c in result.restart] == [
        "drain.timeout: changed; needs a restart (the drain is set up at start)"
    ]
    assert result.settings.drain == current.drain


def test_the_bounds_per_client_apply_live(config: Path) -> None:
    bounds = (
        "permissions_per_allocation = 16\nchannels_per_allocation = 8\npeers_per_request = 4\n"
        "allocations_per_source = 50\npending_per_source = 2\n"
    )
    result = reloaded(load_settings(config), config, BASE + bounds)
    assert set(keys(result.live)) == {
        "quotas.permissions_per_allocation",
        "quotas.channels_per_allocation",
        "quotas.peers_per_request",
        "quotas.allocations_per_source",
        "quotas.pending_per_source",
    }
    assert result.restart == ()
    relay = result.settings.relay
    assert (relay.permissions_per_allocation, relay.pending_per_source) == (16, 2)
