"""Fleet-wide revocations on a real redis-server, with three nodes started in-process:
a revocation written once is refused by every node (Allocate 401) and ends the
identity's allocations there; a node started later refuses it too; after Redis is
stopped and started again the nodes catch up; a later `until` wins."""

from __future__ import annotations

import functools
import time

import trio

from tests.helpers.fleet_nodes import (
    CONFIGURED_SECRET,
    FleetNode,
    allocate_code,
    credential,
    start_fleet_node,
)
from tests.helpers.fleet_store import connected_store, eventually
from tests.helpers.redis_server import RedisServer
from tests.helpers.turn_client import udp_client
from trelay.config.revocations import FILE, FLEET, Revocation
from trelay.fleet.revocations import (
    REVOCATIONS_KEY,
    RedisRevocationWriter,
    current_revocations,
)

# A generous bound on "within a second": a loaded test machine, not the design's figure.
PROPAGATION_BOUND = 10.0


async def refused_everywhere(nodes: list[FleetNode], identity: str) -> bool:
    username, password = credential(CONFIGURED_SECRET, identity)
    codes = [await allocate_code(n.udp, username, password) for n in nodes]
    return codes == [401] * len(nodes)


async def test_a_revocation_reaches_every_node_and_ends_its_allocations(
    redis_server: RedisServer,
) -> None:
    async with connected_store(redis_server) as writer_store, trio.open_nursery() as nursery:
        nodes = [await start_fleet_node(nursery, redis_server.url, f"n{i}") for i in range(3)]
        username, password = credential(CONFIGURED_SECRET, "mallory")
        for node in nodes:
            assert await allocate_code(node.udp, username, password) == 0
        async with udp_client(nodes[0].udp) as holder:
            holder.username, holder.password = username, password
            await holder.allocate()
            assert len(nodes[0].running.node.server.allocations) == 1

            now = time.time()
            entry = await RedisRevocationWriter(writer_store).revoke("mallory", now + 600, now)
            assert entry == Revocation("mallory", float(int(now + 600)))
            took = await eventually(lambda: refused_everywhere(nodes, "mallory"), PROPAGATION_BOUND)
            print(f"revocation refused by 3 nodes after {took:.3f} s")
            # The identity's live allocation on node 0 was ended as the revocation came.
            assert len(nodes[0].running.node.server.allocations) == 0
        for node in nodes:
            assert node.link.revocations.count(FLEET) == 1
            # Someone else is untouched.
            other_user, other_password = credential(CONFIGURED_SECRET, "alice")
            assert await allocate_code(node.udp, other_user, other_password) == 0

        # A node that joins afterwards loads the revocation at start.
        late = await start_fleet_node(nursery, redis_server.url, "late")
        await eventually(lambda: refused_everywhere([late], "mallory"), PROPAGATION_BOUND)
        nursery.cancel_scope.cancel()


async def test_nodes_catch_up_after_redis_comes_back(redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        nodes = [await start_fleet_node(nursery, redis_server.url, f"n{i}") for i in range(2)]
        redis_server.stop()
        for node in nodes:
            await eventually(functools.partial(_lost, node))
        redis_server.start()
        async with connected_store(redis_server) as writer_store:
            now = time.time()
            await RedisRevocationWriter(writer_store).revoke("bob", now + 600, now)
        await eventually(lambda: refused_everywhere(nodes, "bob"), PROPAGATION_BOUND)
        nursery.cancel_scope.cancel()


async def _lost(node: FleetNode) -> bool:
    return not node.link.store.connected


async def test_a_later_until_wins_and_past_entries_are_pruned(redis_server: RedisServer) -> None:
    async with connected_store(redis_server) as store:
        writer = RedisRevocationWriter(store)
        now = 1_900_000_000.0
        await writer.revoke("carol", now + 100, now)
        assert await writer.revoke("carol", now + 50, now) == Revocation("carol", now + 100)
        assert await writer.revoke("carol", now + 300, now) == Revocation("carol", now + 300)
        await writer.revoke("dave", now + 10, now)
        entries, more = await current_revocations(store, now + 20)
        assert entries == [Revocation("carol", now + 300)] and more is False
        # The next write prunes what is over.
        await writer.revoke("erin", now + 500, now + 20)
        members = await store.call(lambda c: c.zrange(REVOCATIONS_KEY, 0, -1))
        assert sorted(members) == ["carol", "erin"]
        # A reader capped below the count says so.
        entries, more = await current_revocations(store, now + 20, limit=1)
        assert entries == [Revocation("carol", now + 300)] and more is True


def test_file_and_fleet_sources_never_wipe_each_other() -> None:
    from trelay.config.revocations import Revocations

    revocations = Revocations([Revocation("from-file", 200.0)])
    revocations.replace([Revocation("from-redis", 300.0)], FLEET)
    revocations.replace([], FILE)  # the file emptied: Redis's stay
    assert revocations.is_revoked("from-redis", 100.0)
    assert not revocations.is_revoked("from-file", 100.0)
    revocations.replace([Revocation("from-file", 200.0)], FILE)
    revocations.replace([], FLEET)  # a Redis reload: the file's stay
    assert revocations.is_revoked("from-file", 100.0)
    assert not revocations.is_revoked("from-redis", 100.0)
    # Both at once: the later `until` counts; the cap refuses a new identity, not a known one.
    revocations.add(Revocation("x", 150.0), FLEET)
    revocations.add(Revocation("x", 250.0), FILE)
    assert revocations.is_revoked("x", 200.0) and list(revocations) == [
        Revocation("from-file", 200.0),
        Revocation("x", 250.0),
    ]
    assert revocations.add(Revocation("y", 400.0), FLEET, limit=1) is False
    assert revocations.add(Revocation("x", 400.0), FLEET, limit=1) is True
    assert revocations.count(FLEET) == 1 and revocations.is_revoked("x", 300.0)
