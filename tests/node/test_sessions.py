"""Session admin on a real node (loopback sockets): `TurnNode.sessions` lists the live
allocations with the traffic each relayed both ways, `TurnNode.end_sessions` ends one
identity's (or one relayed address's) at once, and the client learns at its next Refresh
(437 Allocation Mismatch)."""

from __future__ import annotations

import trio
import trio.testing

from tests.helpers.turn_client import (
    TurnError,
    peer,
    port_is_free,
    start_node,
    tcp_client,
    udp_client,
)
from tests.helpers.turn_relay import PASSWORD
from trelay.node.sessions import Traffic
from trelay.stun.codes import ErrorCode
from trelay.turn.actions import EndReason
from trelay.turn.addressing import ClientTransport
from trelay.turn.credential_sources import StaticUsers


def with_bob(node_realm: str) -> StaticUsers:
    return StaticUsers({"alice": PASSWORD, "bob": "builder"}, node_realm)


async def test_two_allocations_listed_then_one_identity_ended() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        node = local.node
        node.server.use_users(with_bob(node.server.config.realm))
        async with udp_client(local.udp) as alice, udp_client(local.udp) as bob, peer() as far:
            bob.username, bob.password = "bob", "builder"
            alice_relayed = await alice.allocate()
            bob_relayed = await bob.allocate()
            await alice.channel_bind(0x4000, far.address)
            await alice.send_channel_data(0x4000, b"hello peer")
            assert await far.receive() == (b"hello peer", alice_relayed)
            await far.send(alice_relayed, b"hello back!")
            assert await alice.receive_data() == (0x4000, b"hello back!")

            sessions = {s.view.identity: s for s in node.sessions()}
            assert set(sessions) == {"alice", "bob"}
            mine = sessions["alice"]
            assert mine.view.five_tuple.client == alice.local
            assert mine.view.five_tuple.transport is ClientTransport.UDP
            assert mine.view.relayed == alice_relayed
            assert (mine.view.permissions, mine.view.channels) == (1, 1)
            assert 0 < mine.view.lifetime_left <= 600
            assert mine.traffic == Traffic(1, len(b"hello peer"), 1, len(b"hello back!"))
            assert sessions["bob"].traffic == Traffic()
            assert [s.view.identity for s in node.sessions("bob")] == ["bob"]

            assert node.end_sessions(identity="alice") == 1
            assert port_is_free(alice_relayed)  # closed at once, not when the task unwinds
            assert [s.view.identity for s in node.sessions()] == ["bob"]
            ended = node.server.stats.allocations_ended
            assert ended[ClientTransport.UDP, EndReason.ADMIN] == 1
            try:
                await alice.refresh(600)
            except TurnError as error:
                assert error.code == ErrorCode.ALLOCATION_MISMATCH
            else:
                raise AssertionError("the ended allocation was refreshed")
            assert await bob.refresh(600) == 600

            assert node.end_sessions(relayed=bob_relayed) == 1
            assert node.sessions() == []
            assert node.end_sessions(identity="alice") == 0
        nursery.cancel_scope.cancel()


async def test_age_follows_the_clock(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with udp_client(local.udp) as alice:
            await alice.allocate(lifetime=600)
            await trio.sleep(100)
            [session] = local.node.sessions()
            assert 100 <= session.view.age < 101
            assert 499 < session.view.lifetime_left <= 500
        nursery.cancel_scope.cancel()


async def test_traffic_of_a_tcp_client_is_counted_per_allocation() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with tcp_client(local.tcp) as alice, peer() as far:
            relayed = await alice.allocate()
            await alice.channel_bind(0x4000, far.address)
            await alice.send_channel_data(0x4000, b"abc")
            assert await far.receive() == (b"abc", relayed)
            await far.send(relayed, b"defgh")
            assert await alice.receive_data() == (0x4000, b"defgh")
            [session] = local.node.sessions()
            assert session.view.five_tuple.transport is ClientTransport.TCP
            assert session.traffic == Traffic(1, 3, 1, 5)
            assert local.node.end_sessions(identity="alice") == 1
            assert port_is_free(relayed)
        nursery.cancel_scope.cancel()
