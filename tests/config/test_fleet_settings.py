"""`[fleet]` and its flags: the embedded default without them, values read, errors named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.settings_file import write
from trelay.config.flags import Flags
from trelay.config.settings import Settings, load_settings
from trelay.config.values import SettingsError
from trelay.node.tls import generate_self_signed


def test_no_fleet_is_the_embedded_default(tmp_path: Path) -> None:
    assert Settings().fleet is None
    assert load_settings(write(tmp_path, "[fleet]\n")).fleet is None
    assert load_settings(write(tmp_path, 'software = "x"\n')).fleet is None


def test_a_full_fleet_section(tmp_path: Path) -> None:
    (tmp_path / "redis.password").write_text("s3cret\n")
    settings = load_settings(
        write(
            tmp_path,
            '[fleet]\nredis_url = "rediss://redis.example.org:6380/2"\n'
            'redis_password_file = "redis.password"\nnode_id = "fra-1"\nregion = "eu-central"\n'
            'public_uris = ["turn:fra-1.example.org:3478?transport=udp",'
            ' "turns:fra-1.example.org:5349?transport=tcp"]\n'
            "heartbeat_seconds = 2\nttl_seconds = 7.5\n",
        )
    )
    fleet = settings.fleet
    assert fleet is not None
    assert fleet.redis_url == "rediss://redis.example.org:6380/2"
    assert fleet.redis_password == "s3cret"
    assert (fleet.node_id, fleet.region) == ("fra-1", "eu-central")
    assert len(fleet.public_uris) == 2
    assert (fleet.heartbeat_seconds, fleet.ttl_seconds) == (2.0, 7.5)
    assert "s3cret" not in repr(settings) and "redis.example.org" not in repr(settings)


def test_defaults_and_no_node_id_until_the_registry_makes_one(tmp_path: Path) -> None:
    fleet = load_settings(write(tmp_path, '[fleet]\nredis_url = "redis://127.0.0.1"\n')).fleet
    assert fleet is not None
    assert (fleet.node_id, fleet.region, fleet.public_uris) == (None, "default", ())
    assert (fleet.heartbeat_seconds, fleet.ttl_seconds) == (5.0, 15.0)


def test_flags_turn_the_fleet_on_and_override(tmp_path: Path) -> None:
    fleet = load_settings(flags=Flags(redis_url="redis://10.0.0.5:6379/0", region="us")).fleet
    assert fleet is not None
    assert (fleet.redis_url, fleet.region) == ("redis://10.0.0.5:6379/0", "us")
    config = write(tmp_path, '[fleet]\nredis_url = "redis://a"\nregion = "eu"\n')
    fleet = load_settings(config, Flags(region="ap")).fleet
    assert fleet is not None
    assert (fleet.redis_url, fleet.region) == ("redis://a", "ap")


def test_flags_name_the_node_its_uris_and_the_redis_password(tmp_path: Path) -> None:
    password = tmp_path / "redis.password"
    password.write_text("s3cret\n")
    uris = ("turn:203.0.113.5:3478?transport=udp", "stun:203.0.113.5:3478")
    flags = Flags(
        redis_url="redis://10.0.0.5", node_id="fra-2", public_uris=uris,
        redis_password_file=str(password),
    )  # fmt: skip
    fleet = load_settings(flags=flags).fleet
    assert fleet is not None
    assert (fleet.node_id, fleet.public_uris) == ("fra-2", uris)
    assert (fleet.redis_password, fleet.redis_password_file) == ("s3cret", password)


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (Flags(region="eu"), "--region"),
        (Flags(node_id="n1"), "--node-id"),
        (Flags(public_uris=("turn:a:1",)), "--public-uri"),
        (Flags(redis_password_file="p"), "--redis-password-file"),
        (Flags(redis_url="redis://h", node_id="a b"), "--node-id"),
        (Flags(redis_url="redis://h", public_uris=("http://x",)), "--public-uri"),
        (Flags(redis_url="redis://:pw@h", redis_password_file="p"), "--redis-password-file"),
    ],
)
def test_bad_fleet_flags_are_named(flags: Flags, flag: str) -> None:
    with pytest.raises(SettingsError, match=flag):
        load_settings(flags=flags)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('region = "eu"', "fleet.redis_url"),
        ('redis_url = "http://redis"', "fleet.redis_url"),
        ('redis_url = "redis://"', "fleet.redis_url"),
        ('redis_url = "redis://h:99999"', "fleet.redis_url"),
        ('redis_url = "redis://h/db"', "fleet.redis_url"),
        ("redis_url = 6379", "fleet.redis_url"),
        ('redis_url = "redis://h"\nredis_password_file = "missing"', "fleet.redis_password_file"),
        ('redis_url = "redis://h"\nnode_id = "a b"', "fleet.node_id"),
        ('redis_url = "redis://h"\nregion = "eu:west"', "fleet.region"),
        ('redis_url = "redis://h"\npublic_uris = "turn:a"', "fleet.public_uris"),
        ('redis_url = "redis://h"\npublic_uris = ["http://a"]', "fleet.public_uris[0]"),
        ('redis_url = "redis://h"\nheartbeat_seconds = 0', "fleet.heartbeat_seconds"),
        ('redis_url = "redis://h"\nttl_seconds = true', "fleet.ttl_seconds"),
        ('redis_url = "redis://h"\nheartbeat_seconds = 5\nttl_seconds = 5', "fleet.ttl_seconds"),
        ('redis_url = "redis://h"\ncolour = "blue"', "fleet.colour"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, f"[fleet]\n{text}\n"))
    assert caught.value.key == key


def test_a_password_file_and_a_password_in_the_url_conflict(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    text = '[fleet]\nredis_url = "redis://:inline@h"\nredis_password_file = "pw"\n'
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.key == "fleet.redis_password_file"


@pytest.mark.parametrize(
    ("flags", "key"),
    [
        (Flags(redis_url="tcp://h"), "--redis-url"),
        (Flags(region="eu"), "--region"),
        (Flags(redis_url="redis://h", region="e u"), "--region"),
    ],
)
def test_bad_flags_name_the_flag(flags: Flags, key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(flags=flags)
    assert caught.value.key == key


def test_load_limits_mark_a_node_overloaded(tmp_path: Path) -> None:
    text = '[fleet]\nredis_url = "redis://127.0.0.1"\nmax_allocations = 10\nmax_cpu_share = 1.5\n'
    fleet = load_settings(write(tmp_path, text)).fleet
    assert fleet is not None
    assert (fleet.max_allocations, fleet.max_cpu_share) == (10, 1.5)
    assert not fleet.overloaded(9, 1.49)
    assert fleet.overloaded(10, 0.0)
    assert fleet.overloaded(0, 1.5)
    unlimited = load_settings(write(tmp_path, '[fleet]\nredis_url = "redis://127.0.0.1"\n')).fleet
    assert unlimited is not None and not unlimited.overloaded(10**9, 64.0)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("max_allocations = -1", "fleet.max_allocations"),
        ("max_allocations = 1.5", "fleet.max_allocations"),
        ("max_cpu_share = -0.5", "fleet.max_cpu_share"),
        ('max_cpu_share = "high"', "fleet.max_cpu_share"),
        ("max_cpu_share = nan", "fleet.max_cpu_share"),
    ],
)
def test_bad_load_limits_are_named(tmp_path: Path, line: str, problem: str) -> None:
    text = f'[fleet]\nredis_url = "redis://127.0.0.1"\n{line}\n'
    with pytest.raises(SettingsError, match=problem):
        load_settings(write(tmp_path, text))


SENTINELS = '["10.0.0.1:26379", "10.0.0.2", "[fd00::3]:26380"]'


def test_redis_through_sentinels(tmp_path: Path) -> None:
    (tmp_path / "redis.password").write_text("primary-pw\n")
    (tmp_path / "sentinel.password").write_text("sentinel-pw\n")
    text = (
        f'[fleet]\nredis_sentinels = {SENTINELS}\nredis_sentinel_service = "trelay"\n'
        'redis_tls = true\nredis_database = 3\nredis_password_file = "redis.password"\n'
        'redis_sentinel_password_file = "sentinel.password"\n'
    )
    settings = load_settings(write(tmp_path, text))
    fleet = settings.fleet
    assert fleet is not None
    assert fleet.redis_url is None
    assert [str(s) for s in fleet.redis_sentinels] == [
        "10.0.0.1:26379", "10.0.0.2:26379", "[fd00::3]:26380",
    ]  # fmt: skip
    assert (fleet.redis_sentinel_service, fleet.redis_tls, fleet.redis_database) == (
        "trelay", True, 3,
    )  # fmt: skip
    assert (fleet.redis_password, fleet.redis_sentinel_password) == ("primary-pw", "sentinel-pw")
    where = "service trelay via sentinels 10.0.0.1:26379,10.0.0.2:26379,[fd00::3]:26380"
    assert fleet.redis_where == where
    assert "primary-pw" not in repr(settings) and "sentinel-pw" not in repr(settings)


def test_sentinel_defaults_and_a_url_where(tmp_path: Path) -> None:
    text = '[fleet]\nredis_sentinels = ["s1"]\nredis_sentinel_service = "mymaster"\n'
    fleet = load_settings(write(tmp_path, text)).fleet
    assert fleet is not None
    assert (fleet.redis_tls, fleet.redis_database, fleet.redis_sentinel_password) == (
        False, 0, None,
    )  # fmt: skip
    assert fleet.redis_where == "service mymaster via sentinels s1:26379"
    url = load_settings(write(tmp_path, '[fleet]\nredis_url = "redis://:pw@h:7000/1"\n')).fleet
    assert url is not None and url.redis_where == "h:7000"


def test_redis_url_flag_replaces_the_sentinels(tmp_path: Path) -> None:
    text = f'[fleet]\nredis_sentinels = {SENTINELS}\nredis_sentinel_service = "trelay"\n'
    fleet = load_settings(write(tmp_path, text), Flags(redis_url="redis://10.0.0.9")).fleet
    assert fleet is not None
    assert (fleet.redis_url, fleet.redis_sentinels, fleet.redis_sentinel_service) == (
        "redis://10.0.0.9", (), None,
    )  # fmt: skip
    (tmp_path / "pw").write_text("x")
    # With sentinels there is no URL to hold a password: the flag's file is the password.
    flags = Flags(redis_password_file=str(tmp_path / "pw"))
    fleet = load_settings(write(tmp_path, text), flags).fleet
    assert fleet is not None and fleet.redis_password == "x"


@pytest.mark.parametrize(
    ("lines", "key"),
    [
        (['redis_sentinel_service = "trelay"'], "fleet.redis_url"),
        (["redis_sentinels = []", 'redis_sentinel_service = "t"'], "fleet.redis_sentinels"),
        (['redis_sentinels = "s1:26379"', 'redis_sentinel_service = "t"'],
         "fleet.redis_sentinels"),
        (['redis_sentinels = ["s1", "s1:26379"]', 'redis_sentinel_service = "t"'],
         "fleet.redis_sentinels[1]"),
        (['redis_sentinels = ["s1:port"]', 'redis_sentinel_service = "t"'],
         "fleet.redis_sentinels[0]"),
        (['redis_sentinels = ["s1:0"]', 'redis_sentinel_service = "t"'],
         "fleet.redis_sentinels[0]"),
        (['redis_sentinels = ["redis://s1"]', 'redis_sentinel_service = "t"'],
         "fleet.redis_sentinels[0]"),
        (['redis_sentinels = ["s1/x"]', 'redis_sentinel_service = "t"'],
         "fleet.redis_sentinels[0]"),
        (['redis_sentinels = [26379]', 'redis_sentinel_service = "t"'],
         "fleet.redis_sentinels[0]"),
        (['redis_sentinels = ["s1"]'], "fleet.redis_sentinel_service"),
        (['redis_sentinels = ["s1"]', 'redis_sentinel_service = "my master"'],
         "fleet.redis_sentinel_service"),
        (['redis_sentinels = ["s1"]', 'redis_sentinel_service = "t"', 'redis_tls = "yes"'],
         "fleet.redis_tls"),
        (['redis_sentinels = ["s1"]', 'redis_sentinel_service = "t"', "redis_database = -1"],
         "fleet.redis_database"),
        (['redis_sentinels = ["s1"]', 'redis_sentinel_service = "t"', 'redis_url = "redis://h"'],
         "fleet.redis_sentinels"),
        (['redis_url = "redis://h"', 'redis_sentinel_service = "t"'],
         "fleet.redis_sentinel_service"),
        (['redis_url = "redis://h"', "redis_tls = true"], "fleet.redis_tls"),
        (['redis_url = "redis://h"', "redis_database = 2"], "fleet.redis_database"),
        (['redis_url = "redis://h"', 'redis_sentinel_password_file = "pw"'],
         "fleet.redis_sentinel_password_file"),
        (['redis_sentinels = ["s1"]', 'redis_sentinel_service = "t"',
          'redis_sentinel_password_file = "missing"'], "fleet.redis_sentinel_password_file"),
    ],
)  # fmt: skip
def test_bad_sentinel_settings_name_their_key(tmp_path: Path, lines: list[str], key: str) -> None:
    (tmp_path / "pw").write_text("x")
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, "[fleet]\n" + "\n".join(lines) + "\n"))
    assert caught.value.key == key


@pytest.mark.parametrize(
    "lines",
    [
        ['redis_sentinels = ["s1"]', 'redis_sentinel_service = "t"', 'redis_tls_ca_file = "ca"'],
        ['redis_sentinels = ["s1"]', 'redis_sentinel_service = "t"', "redis_tls = true",
         'redis_tls_ca_file = "not-pem"'],
        ['redis_url = "rediss://h"', 'redis_tls_ca_file = "ca"'],
    ],
)  # fmt: skip
def test_a_tls_ca_file_needs_sentinels_tls_and_certificates(
    tmp_path: Path, lines: list[str]
) -> None:
    (tmp_path / "ca").write_bytes(generate_self_signed(["127.0.0.1"]).cert_pem)
    (tmp_path / "not-pem").write_text("not a certificate\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, "[fleet]\n" + "\n".join(lines) + "\n"))
    assert caught.value.key == "fleet.redis_tls_ca_file"
    good = '[fleet]\nredis_sentinels = ["s1"]\nredis_sentinel_service = "t"\nredis_tls = true\n'
    fleet = load_settings(write(tmp_path, good + 'redis_tls_ca_file = "ca"\n')).fleet
    assert fleet is not None and fleet.redis_tls_ca_file == tmp_path / "ca"
