"""The fleet's Redis through Redis Sentinel, on real processes: a primary, a replica
(`--replicaof`) and sentinels (`tests.helpers.redis_sentinel`).

A registry, a revocation follower and a writer work through the sentinels (settings read
from a file: `redis_sentinels`, `redis_sentinel_service`, both password files). The
primary is killed (SIGKILL): Sentinel promotes the replica, each store goes lost and
comes back on the new primary by itself, the registry entry is written there, and a
revocation written after the failover reaches the follower. No log line says a password.
A planned failover (SENTINEL FAILOVER, the old primary alive and demoted) moves the
store's writes to the new primary. With TLS (every port TLS only), a store given the CA
(`redis_tls_ca_file`) connects and follows a failover; one without says why it cannot.
A store whose sentinels are all away for longer than coredis's pool has connections
(64 failed probes) still comes back when they do.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from tests.helpers.redis_sentinel import SERVICE, SentinelGroup, running_sentinel_group
from tests.helpers.redis_server import free_tcp_port
from trelay.config.fleet_settings import FleetSettings
from trelay.config.revocations import Revocations
from trelay.config.settings import load_settings
from trelay.fleet.follow import follow
from trelay.fleet.registry import LoadSample, NodeRegistry, NodeView, live_nodes
from trelay.fleet.revocations import RedisRevocationWriter, RevocationFollower
from trelay.fleet.store import RedisStore, StoreState, StoreUnavailable

DATA_PASSWORD = "data-secret-4f1c"
SENTINEL_PASSWORD = "sentinel-secret-9b2e"
TTL = 3.0
# Generous: Sentinel needs down-after (1 s) + an election + a promotion; a loaded machine.
FAILOVER_WAIT = 60.0
WAIT = 20.0
POLL = 0.02


async def wait_until(condition: Callable[[], bool], wait: float = WAIT) -> float:
    """Poll `condition` until it holds (at most `wait` s); how long it took."""
    started = trio.current_time()
    with trio.fail_after(wait):
        for _ in range(int(wait / POLL) + 1):
            if condition():
                return trio.current_time() - started
            await trio.sleep(POLL)
    raise AssertionError("condition never met")


def sentinel_settings(tmp_path: Path, group: SentinelGroup, *, dead_first: bool) -> FleetSettings:
    """[fleet] through the group's sentinels, read from a settings file; `dead_first`
    lists a sentinel nobody runs first, which the client must skip."""
    (tmp_path / "redis.password").write_text(DATA_PASSWORD + "\n")
    (tmp_path / "sentinel.password").write_text(SENTINEL_PASSWORD + "\n")
    addresses = ([f"127.0.0.1:{free_tcp_port()}"] if dead_first else []) + [
        *group.sentinel_addresses
    ]
    sentinels = ", ".join(f'"{a}"' for a in addresses)
    (tmp_path / "trelay.toml").write_text(
        "[fleet]\n"
        f"redis_sentinels = [{sentinels}]\n"
        f'redis_sentinel_service = "{SERVICE}"\n'
        'redis_password_file = "redis.password"\n'
        'redis_sentinel_password_file = "sentinel.password"\n'
        'node_id = "fra-1"\n'
        "heartbeat_seconds = 0.2\n"
        f"ttl_seconds = {TTL}\n"
    )
    fleet = load_settings(tmp_path / "trelay.toml").fleet
    assert fleet is not None
    return fleet


def idle_node() -> NodeView:
    return NodeView(load=lambda: LoadSample(0, 0, 0.0), ready=lambda: True, draining=lambda: False)


async def entry_updated_after(store: RedisStore, since: float) -> bool:
    nodes = await live_nodes(store, TTL)
    return any(n.node_id == "fra-1" and n.updated_at > since for n in nodes)


async def poll(check: Callable[[], Awaitable[bool]], wait: float = WAIT) -> None:
    with trio.fail_after(wait):
        for _ in range(int(wait / POLL) + 1):
            if await check():
                return
            await trio.sleep(POLL)
    raise AssertionError("condition never met")


async def test_the_fleet_follows_a_failover(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trelay")
    with running_sentinel_group(
        tmp_path, sentinels=3, password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD
    ) as group:
        settings = sentinel_settings(tmp_path, group, dead_first=True)
        registry = NodeRegistry(RedisStore(settings), settings, idle_node())
        writer_store, follower_store = RedisStore(settings), RedisStore(settings)
        revocations = Revocations()
        follower = RevocationFollower(follower_store, revocations)
        writer = RedisRevocationWriter(writer_store)
        assert SERVICE in registry.store.where and str(group.sentinels[0].port) in (
            registry.store.where
        )
        async with writer_store.opened(), follower_store.opened(), trio.open_nursery() as n:
            await n.start(registry.run)
            await n.start(functools.partial(follow, follower_store, follower, reload_seconds=600))
            await wait_until(lambda: writer_store.connected and registry.store.connected)
            await poll(functools.partial(entry_updated_after, writer_store, 0.0))
            now = time.time()
            await writer.revoke("mallory", now + 600, now)
            await wait_until(lambda: revocations.is_revoked("mallory", time.time()))

            killed_at, killed_wall = trio.current_time(), time.time()
            group.primary.kill()
            # Each store notices (its calls fail), then finds the promoted replica.
            await wait_until(lambda: registry.store.state is StoreState.LOST, FAILOVER_WAIT)
            await wait_until(lambda: registry.store.connected, FAILOVER_WAIT)
            failover = trio.current_time() - killed_at
            assert group.replica.role() == "master", group.logs()
            print(f"failover: primary killed -> registry store connected in {failover:.1f} s")

            await poll(functools.partial(entry_updated_after, writer_store, killed_wall),
                       FAILOVER_WAIT)  # fmt: skip
            now = time.time()
            await writer.revoke("eve", now + 600, now)
            await wait_until(lambda: revocations.is_revoked("eve", time.time()), FAILOVER_WAIT)
            n.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records]
    assert any("lost Redis at service trelay via sentinels" in line for line in lines), lines
    assert any("is back after" in line for line in lines), lines
    assert not [line for line in lines if DATA_PASSWORD in line or SENTINEL_PASSWORD in line]


async def test_the_store_comes_back_after_its_sentinels_were_away_long(tmp_path: Path) -> None:
    with running_sentinel_group(tmp_path, sentinels=1) as group:
        (tmp_path / "trelay.toml").write_text(
            "[fleet]\n"
            f'redis_sentinels = ["{group.sentinel_addresses[0]}"]\n'
            f'redis_sentinel_service = "{SERVICE}"\n'
        )
        settings = load_settings(tmp_path / "trelay.toml").fleet
        assert settings is not None
        store = RedisStore(settings, call_timeout=1.0, backoff_max=0.01)
        group.sentinels[0].kill()
        async with store.opened():
            # More failed probes than coredis's pool holds connections (64): a pool that
            # lost a slot per failed discovery would have none left.
            await wait_until(lambda: store.failed_probes > 100)
            assert not store.connected
            group.sentinels[0].start()
            await wait_until(lambda: store.connected)
            assert await store.call(lambda c: c.ping()) == "PONG"


def plain_sentinel_settings(tmp_path: Path, group: SentinelGroup) -> FleetSettings:
    sentinels = ", ".join(f'"{a}"' for a in group.sentinel_addresses)
    (tmp_path / "trelay.toml").write_text(
        f'[fleet]\nredis_sentinels = [{sentinels}]\nredis_sentinel_service = "{SERVICE}"\n'
    )
    fleet = load_settings(tmp_path / "trelay.toml").fleet
    assert fleet is not None
    return fleet


async def written(store: RedisStore) -> bool:
    """Whether a write went through (the store notices a loss only when a call fails)."""
    try:
        await store.call(lambda c: c.set("trelay:fleet:test", "after"))
    except StoreUnavailable:
        return False  # no primary yet, or the old one's connection: closed or READONLY
    return True


async def test_a_planned_failover_moves_the_writes_to_the_new_primary(tmp_path: Path) -> None:
    with running_sentinel_group(tmp_path, sentinels=1) as group:
        store = RedisStore(plain_sentinel_settings(tmp_path, group))
        async with store.opened():
            await wait_until(lambda: store.connected)
            await store.call(lambda c: c.set("trelay:fleet:test", "before"))
            assert group.sentinels[0].send(f"SENTINEL FAILOVER {SERVICE}".encode()) == b"+OK\r\n"
            await wait_until(
                lambda: (group.replica.role(), group.primary.role()) == ("master", "slave"),
                FAILOVER_WAIT,
            )
            await poll(functools.partial(written, store), FAILOVER_WAIT)
            assert b"after" in group.replica.send(b"GET trelay:fleet:test")


async def test_tls_to_the_sentinels_and_the_primary(tmp_path: Path) -> None:
    with running_sentinel_group(tmp_path, sentinels=1, tls=True) as group:
        assert group.tls is not None
        sentinels = ", ".join(f'"{a}"' for a in group.sentinel_addresses)
        text = (
            f'[fleet]\nredis_sentinels = [{sentinels}]\nredis_sentinel_service = "{SERVICE}"\n'
            "redis_tls = true\n"
        )
        (tmp_path / "untrusting.toml").write_text(text)
        (tmp_path / "trusting.toml").write_text(f'{text}redis_tls_ca_file = "{group.tls.cert}"\n')
        trusting = load_settings(tmp_path / "trusting.toml").fleet
        untrusting = load_settings(tmp_path / "untrusting.toml").fleet
        assert trusting is not None and untrusting is not None
        store, refused = RedisStore(trusting), RedisStore(untrusting)
        async with store.opened(), refused.opened():
            await wait_until(lambda: store.connected)
            await store.call(lambda c: c.set("trelay:fleet:test", "over tls"))
            # Without the CA the certificate is not trusted: the store keeps trying.
            await wait_until(lambda: refused.failed_probes >= 2)
            assert not refused.connected
            assert "certificate" in (refused.last_failure or ""), refused.last_failure

            group.primary.kill()
            await poll(functools.partial(written, store), FAILOVER_WAIT)
            assert group.replica.role() == "master", group.logs()
            assert b"after" in group.replica.send(b"GET trelay:fleet:test")
