"""Overflow and drain across the fleet (`trelay.fleet.overflow`), on a real redis-server
with nodes in-process: an overloaded or draining node answers new Allocates 300 naming
a healthy node of its region, a client allocating there is served, and the choice is
cleared when the node is no longer overloaded or Redis has been gone for a TTL. Also the
URI parsing and the choice itself, without Redis.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from tests.helpers.fleet_store import eventually
from tests.helpers.overflow_nodes import (
    TTL,
    allocate_reply,
    rest_login,
    start_node_in_fleet,
)
from tests.helpers.redis_server import RedisServer
from tests.helpers.turn_client import udp_client
from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.overflow import (
    HostResolver,
    RelayUri,
    alternates_of,
    candidates,
    parse_turn_uri,
)
from trelay.fleet.registry import (
    LoadSample,
    NodeEntry,
    NodeRegistry,
    NodeView,
    live_nodes,
    node_id_of,
    process_node_id,
)
from trelay.fleet.store import RedisStore
from trelay.stun.address_attributes import AlternateServer
from trelay.stun.codes import MessageClass
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.message import Message
from trelay.turn.addressing import ClientTransport
from trelay.turn.redirection import Alternate

WAIT_EARLY = 20.0  # bounded waits, far below the 600 s beat of the early-publish test
UDP, TCP, TLS = ClientTransport.UDP, ClientTransport.TCP, ClientTransport.TLS
DTLS = ClientTransport.DTLS


def code_of(reply: Message) -> int | None:
    error = reply.get(ErrorCodeAttribute)
    return None if error is None else error.code


# --- without Redis ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("turn:192.0.2.1:3478?transport=udp", RelayUri(UDP, "192.0.2.1", 3478)),
        ("turn:192.0.2.1?transport=tcp", RelayUri(TCP, "192.0.2.1", 3478)),
        ("turn:192.0.2.1", RelayUri(UDP, "192.0.2.1", 3478)),
        ("turns:relay.example.org", RelayUri(TLS, "relay.example.org", 5349)),
        ("turns:relay.example.org:443?transport=tcp", RelayUri(TLS, "relay.example.org", 443)),
        ("turn:[2001:db8::1]:3479?transport=UDP", RelayUri(UDP, "2001:db8::1", 3479)),
        ("turn:[2001:db8::1]", RelayUri(UDP, "2001:db8::1", 3478)),
        ("stun:192.0.2.1:3478", None),
        ("turns:192.0.2.1:5349?transport=udp", RelayUri(DTLS, "192.0.2.1", 5349)),  # RFC 7350
        ("turn:192.0.2.1:99999", None),
        ("turn:192.0.2.1:x", None),
        ("turn:", None),
        ("turn::3478", None),
        ("http://example.org", None),
    ],
)
def test_turn_uris_parse(uri: str, parsed: RelayUri | None) -> None:
    assert parse_turn_uri(uri) == parsed


def entry(node_id: str, region: str = "eu", allocations: int = 0, **flags: bool) -> NodeEntry:
    return NodeEntry(
        node_id=node_id, region=region, public_uris=(f"turn:192.0.2.{len(node_id)}:3478",),
        ready=flags.get("ready", True), draining=flags.get("draining", False),
        allocations=allocations, relayed_bps=0.0, cpu_share=0.0, updated_at=0.0,
        overloaded=flags.get("overloaded", False),
    )  # fmt: skip


def test_candidates_are_available_nodes_of_the_region_least_loaded_first() -> None:
    nodes = [
        entry("me"), entry("busy", allocations=9), entry("idle", allocations=1),
        entry("sick", ready=False), entry("leaving", draining=True), entry("full", overloaded=True),
        entry("far", region="us"),
    ]  # fmt: skip
    assert [n.node_id for n in candidates(nodes, "me", "eu", draining=False)] == ["idle", "busy"]
    # Draining: any region as a last resort.
    ids = [n.node_id for n in candidates(nodes, "me", "eu", draining=True)]
    assert ids == ["idle", "busy", "far"]
    assert candidates([entry("me"), entry("far", region="us")], "me", "eu", draining=False) == []


async def test_alternates_one_per_transport_and_family_from_the_best_node_offering_it() -> None:
    first = NodeEntry(
        "b", "eu", ("stun:192.0.2.2", "turn:192.0.2.2:3478?transport=udp",
                    "turns:localhost:5349?transport=tcp"),
        True, False, 0, 0.0, 0.0, 0.0,
    )  # fmt: skip
    second = NodeEntry(
        "c", "eu", ("turn:192.0.2.3:3478?transport=udp", "turn:192.0.2.3:3478?transport=tcp",
                    "turn:[2001:db8::3]:3478"),
        True, False, 0, 0.0, 0.0, 0.0,
    )  # fmt: skip
    alternates = await alternates_of([first, second], HostResolver())
    by_slot = {(next(iter(a.transports)), ":" in a.address[0]): a for a in alternates}
    assert by_slot[UDP, False] == Alternate(("192.0.2.2", 3478), frozenset({UDP}))
    assert by_slot[TCP, False] == Alternate(("192.0.2.3", 3478), frozenset({TCP}))
    assert by_slot[UDP, True] == Alternate(("2001:db8::3", 3478), frozenset({UDP}))
    tls = by_slot[TLS, False]
    assert tls.address == ("127.0.0.1", 5349) and tls.domain == "localhost"


async def test_an_unresolvable_name_gives_no_alternate_and_is_cached() -> None:
    resolver = HostResolver()
    name = "no-such-host.invalid"
    assert await resolver.addresses(name) == ()
    node = NodeEntry("b", "eu", (f"turn:{name}:3478",), True, False, 0, 0.0, 0.0, 0.0)
    assert await alternates_of([node], resolver) == ()


# --- on Redis ------------------------------------------------------------------------------


async def test_an_overloaded_node_sends_newcomers_to_a_node_of_its_region(
    redis_server: RedisServer,
) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node_in_fleet(nursery, redis_server.url, "a", max_allocations=1)
        b = await start_node_in_fleet(nursery, redis_server.url, "b")
        await start_node_in_fleet(nursery, redis_server.url, "far", region="us")
        async with udp_client(a.udp) as alice:
            alice.username, alice.password = rest_login("alice")
            # One allocation puts A at its limit; its entry says overloaded at the next beat.
            await alice.allocate()
            await eventually(lambda: bool(a.overflow.chosen))
            reply = await allocate_reply(a.udp, "bob")
            assert reply.message_class is MessageClass.ERROR and code_of(reply) == 300
            assert reply.get(AlternateServer) == AlternateServer(*b.udp)
            assert a.running.node.server.allocation_count == 1  # the 300 allocated nothing
            # The client goes where it was sent, and is served there.
            async with udp_client(b.udp) as bob:
                bob.username, bob.password = rest_login("bob")
                relayed = await bob.allocate()
                assert relayed[0] == "127.0.0.1"
                assert await bob.refresh(600) == 600
            assert b.running.node.server.allocation_count == 1
            # A's own allocation is untouched meanwhile.
            assert await alice.refresh(600) == 600
            # No longer overloaded (it ended): A serves newcomers again.
            assert await alice.refresh(0) == 0
        await eventually(lambda: not a.overflow.chosen)
        assert code_of(await allocate_reply(a.udp, "carol")) is None
        nursery.cancel_scope.cancel()


async def test_a_draining_node_redirects_to_a_fleet_node(redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node_in_fleet(nursery, redis_server.url, "a")
        b = await start_node_in_fleet(nursery, redis_server.url, "b")
        # A drain with the static alternate as the operator sets it: the fleet's beats it.
        a.running.node.server.start_draining(alternate=("127.0.0.1", 9))
        await eventually(lambda: bool(a.overflow.chosen))
        reply = await allocate_reply(a.udp, "dave")
        assert code_of(reply) == 300
        assert reply.get(AlternateServer) == AlternateServer(*b.udp)
        nursery.cancel_scope.cancel()


async def test_a_draining_node_with_no_healthy_node_falls_back_to_508(
    redis_server: RedisServer,
) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node_in_fleet(nursery, redis_server.url, "a")
        a.running.node.server.start_draining()
        await trio.sleep(TTL / 4)  # a few steps of the overflow task: nothing to pick
        assert a.overflow.chosen == ()
        assert code_of(await allocate_reply(a.udp, "erin")) == 508
        nursery.cancel_scope.cancel()


async def test_redis_lost_the_choice_stands_for_a_ttl_then_is_cleared(
    redis_server: RedisServer,
) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node_in_fleet(nursery, redis_server.url, "a", max_allocations=1)
        await start_node_in_fleet(nursery, redis_server.url, "b")
        assert code_of(await allocate_reply(a.udp, "alice")) is None
        await eventually(lambda: bool(a.overflow.chosen))
        redis_server.stop()
        assert a.overflow.chosen  # not dropped at once
        await eventually(lambda: not a.overflow.chosen)
        # Dropped only once the last answer from Redis is a TTL old.
        assert trio.current_time() - a.overflow.read_at > TTL
        assert code_of(await allocate_reply(a.udp, "frank")) is None  # served here again
        nursery.cancel_scope.cancel()


def test_every_part_of_a_process_uses_one_node_id() -> None:
    unnamed = FleetSettings(redis_url="redis://127.0.0.1:1/0")
    assert node_id_of(unnamed) == node_id_of(unnamed) == process_node_id()
    assert node_id_of(replace(unnamed, node_id="fra-1")) == "fra-1"


async def test_a_node_that_starts_draining_says_so_before_its_next_beat(
    redis_server: RedisServer,
) -> None:
    # A beat far longer than the wait: only the early publication can pass.
    settings = FleetSettings(
        redis_url=redis_server.url, node_id="slow", heartbeat_seconds=600.0, ttl_seconds=1200.0
    )
    draining = False
    view = NodeView(
        load=lambda: LoadSample(0, 0, 0.0), ready=lambda: True, draining=lambda: draining
    )
    registry = NodeRegistry(RedisStore(settings), settings, view)
    reader = RedisStore(settings)
    async with reader.opened(), trio.open_nursery() as nursery:
        await nursery.start(registry.run)

        async def entry_says(value: bool) -> bool:
            if not reader.connected:
                return False
            nodes = {n.node_id: n for n in await live_nodes(reader, 1200.0)}
            return "slow" in nodes and nodes["slow"].draining is value

        await eventually(lambda: entry_says(False), wait=WAIT_EARLY)
        draining = True
        await eventually(lambda: entry_says(True), wait=WAIT_EARLY)
        nursery.cancel_scope.cancel()
