"""Per-identity quotas across the fleet (`trelay.fleet.quotas`), on a real redis-server:
with `[quotas] user = 2`, an identity holding one allocation on each of two nodes is
refused a third on either once the counts synced (bounded wait); a node whose Redis is
gone for a TTL falls back to the local quota; the Redis layout and what one step sends.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from tests.helpers.fleet_store import eventually
from tests.helpers.overflow_nodes import (
    HEARTBEAT,
    TTL,
    allocate_reply,
    rest_login,
    start_node_in_fleet,
)
from tests.helpers.redis_server import RedisServer
from tests.helpers.turn_client import udp_client
from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.quotas import CHUNK, QuotaSync, quota_key, remote_total
from trelay.fleet.store import RedisStore
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.message import Message


def code_of(reply: Message) -> int | None:
    error = reply.get(ErrorCodeAttribute)
    return None if error is None else error.code


class FakeCore:
    """The two calls the sync makes of a core, with counts the test sets."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.remote: dict[str, int] = {}

    def identity_counts(self) -> Mapping[str, int]:
        return self.counts

    def use_remote_counts(self, counts: Mapping[str, int]) -> None:
        self.remote = dict(counts)


def test_remote_total_skips_its_own_expired_and_malformed_fields() -> None:
    fields = {"me:1": "5 200", "b:2": "2 200", "c:3": "1 50", "d:4": "x 200", "e:5": "3"}
    assert remote_total(fields, "me:1", now=100.0) == 2


async def test_a_third_allocation_is_refused_on_either_node_once_synced(
    redis_server: RedisServer,
) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node_in_fleet(nursery, redis_server.url, "a", user_quota=2)
        b = await start_node_in_fleet(nursery, redis_server.url, "b", user_quota=2)
        async with udp_client(a.udp) as on_a, udp_client(b.udp) as on_b:
            on_a.username, on_a.password = rest_login("alice")
            on_b.username, on_b.password = rest_login("alice")
            await on_a.allocate()
            await on_b.allocate()
            a_server, b_server = a.running.node.server, b.running.node.server
            # Bounded: a step publishes, the next full refresh reads (heartbeat + sync).
            await eventually(
                lambda: b.quotas.remote.get("alice") == 1 and a.quotas.remote.get("alice") == 1
            )
            assert code_of(await allocate_reply(b.udp, "alice")) == 486
            assert code_of(await allocate_reply(a.udp, "alice")) == 486
            assert a_server.allocation_count == b_server.allocation_count == 1
            # Another identity is not affected.
            assert code_of(await allocate_reply(a.udp, "bob")) is None
            # One ends on A: B admits again once it has re-read.
            assert await on_a.refresh(0) == 0
            await eventually(lambda: b.quotas.remote.get("alice", 0) == 0)
            assert code_of(await allocate_reply(b.udp, "alice")) is None
        nursery.cancel_scope.cancel()


async def test_redis_lost_the_quota_falls_back_to_local(redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node_in_fleet(nursery, redis_server.url, "a", user_quota=2)
        b = await start_node_in_fleet(nursery, redis_server.url, "b", user_quota=2)
        await allocate_reply(a.udp, "alice")  # each lives on for its lifetime
        await allocate_reply(b.udp, "alice")
        await eventually(lambda: b.quotas.remote.get("alice") == 1)
        assert code_of(await allocate_reply(b.udp, "alice")) == 486
        redis_server.stop()
        await eventually(lambda: b.quotas.local_only)
        assert trio.current_time() - b.quotas.synced_at > TTL
        # B's own count (1) is under the quota (2): admitted by the local quota.
        assert code_of(await allocate_reply(b.udp, "alice")) is None
        assert code_of(await allocate_reply(b.udp, "alice")) == 486  # the local quota holds
        nursery.cancel_scope.cancel()


async def test_the_redis_layout_and_the_commands_per_identity(redis_server: RedisServer) -> None:
    settings = FleetSettings(
        redis_url=redis_server.url, heartbeat_seconds=HEARTBEAT, ttl_seconds=TTL
    )
    identities = 2 * CHUNK + 7  # more than one pipelined chunk
    core = FakeCore({f"user{i}": 1 + i % 3 for i in range(identities)})
    other = FakeCore({"user0": 4})
    store, reader = RedisStore(settings), RedisStore(settings)
    async with store.opened(), reader.opened():
        with trio.fail_after(10):
            await store.wait_connected()
            await reader.wait_connected()
        # A clock that stands still: after the first (full) step, no heartbeat is due.
        mine = QuotaSync(store, settings, core, "a:1", clock=lambda: 0.0)
        theirs = QuotaSync(store, settings, other, "b:2", clock=lambda: 0.0)
        await theirs.step()
        await mine.step()
        # Every held identity: HSET, PEXPIRE, HGETALL (the capacity figure's 3 per identity).
        assert mine.commands == 3 * identities
        assert core.remote["user0"] == 4 and core.remote["user1"] == 0
        fields = await reader.call(lambda c: c.hgetall(quota_key("user0")))
        assert set(fields) == {"a:1", "b:2"}
        assert fields["a:1"].split(" ")[0] == "1"
        ttl_ms = await reader.call(lambda c: c.pttl(quota_key("user5")))
        assert 0 < ttl_ms <= TTL * 1000
        # Within a heartbeat, only changes are sent: one identity down to 0 is one HDEL.
        del core.counts["user5"]
        before = mine.commands
        await mine.step()
        assert mine.commands - before == 1
        assert await reader.call(lambda c: c.exists([quota_key("user5")])) == 0
        assert "user5" not in core.remote


async def test_without_a_user_quota_nothing_is_sent(redis_server: RedisServer) -> None:
    settings = FleetSettings(
        redis_url=redis_server.url, heartbeat_seconds=HEARTBEAT, ttl_seconds=TTL
    )
    store = RedisStore(settings)
    async with store.opened():
        with trio.fail_after(10):
            await store.wait_connected()
        sync = QuotaSync(store, settings, FakeCore({"alice": 1}), "a:1", enabled=lambda: False)
        await sync.step()
        assert sync.commands == 0
        assert await store.call(lambda c: c.exists([quota_key("alice")])) == 0
