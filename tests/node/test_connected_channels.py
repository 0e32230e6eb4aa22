"""Channels get a socket connected to their peer on the relayed address
(`TurnNode.connect_channel`): data flows both ways through it, other peers still reach the
relay socket, the per-allocation cap holds, and an ended allocation frees its port at once
(the next Allocate may bind it in the same batch)."""

from __future__ import annotations

import os
import socket
from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing

from tests.helpers.turn_client import peer, port_is_free, start_node, udp_client
from trelay.node.data_path import RelaySenders
from trelay.node.relay_ports import bind_relay_socket
from trelay.node.turn_node import MAX_CONNECTED_CHANNELS
from trelay.turn.config import TurnConfig

REALM = "interop.test"


async def test_a_channel_relays_through_its_connected_socket_both_ways() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with udp_client(local.udp) as client, peer() as far, peer() as other:
            relayed = await client.allocate()
            await client.channel_bind(0x4000, far.address)
            await client.create_permission(other.address)
            await client.send_channel_data(0x4000, b"first")  # via the relay socket
            assert await far.receive() == (b"first", relayed)
            allocation = local.node.server.allocations[next(iter(local.node.server.allocations))]
            # The runtime's senders, which the core keeps for the data path.
            assert allocation.runtime is local.node._relays[relayed].senders
            assert isinstance(allocation.runtime, RelaySenders)
            route = allocation.runtime.per_channel[0x4000]
            assert route.peer == far.address
            assert route.address is None  # connected: runs are sent with no address
            assert getattr(route.send, "__self__", None) is not None  # a socket's bound send
            await client.send_channel_data(0x4000, b"second")  # via the connected one
            assert await far.receive() == (b"second", relayed)
            await far.send(relayed, b"back")  # arrives on the connected socket
            assert await client.receive_data() == (0x4000, b"back")
            await other.send(relayed, b"from another peer")  # still the relay socket
            assert await client.receive_data() == (other.address, b"from another peer")
        nursery.cancel_scope.cancel()


async def test_the_connected_sockets_per_allocation_are_capped() -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        local = await start_node(nursery)
        client = await stack.enter_async_context(udp_client(local.udp))
        relayed = await client.allocate()
        peers = [await stack.enter_async_context(peer()) for _ in range(MAX_CONNECTED_CHANNELS + 3)]
        for index, far in enumerate(peers):
            await client.channel_bind(0x4000 + index, far.address)
        for round_ in range(2):  # the first round connects, the second uses what it got
            for index, far in enumerate(peers):
                await client.send_channel_data(0x4000 + index, b"%d" % round_)
                assert await far.receive() == (b"%d" % round_, relayed)
        assert len(local.node._relays[relayed].connected) == MAX_CONNECTED_CHANNELS
        nursery.cancel_scope.cancel()


async def test_an_ended_allocation_frees_its_port_at_once() -> None:
    config = TurnConfig(realm=REALM, relay_host="127.0.0.1", port_range=(50000, 50000))
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery, config)
        async with udp_client(local.udp) as first, udp_client(local.udp) as second, peer() as far:
            relayed = await first.allocate()
            await first.channel_bind(0x4000, far.address)
            for data in (b"a", b"b"):  # the second goes through the connected socket
                await first.send_channel_data(0x4000, data)
                assert await far.receive() == (data, relayed)
            assert await first.refresh(0) == 0
            # The only port is free again at once: the next allocation binds it.
            assert await second.allocate() == relayed
            await second.channel_bind(0x4001, far.address)
            await far.send(relayed, b"to the new allocation")
            assert await second.receive_data() == (0x4001, b"to the new allocation")
        nursery.cancel_scope.cancel()


async def test_ending_an_allocation_closes_its_sockets_before_anything_else_runs() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with udp_client(local.udp) as client, peer() as far:
            relayed = await client.allocate()
            await client.channel_bind(0x4000, far.address)
            for data in (b"a", b"b"):  # the second goes through the connected socket
                await client.send_channel_data(0x4000, data)
                assert await far.receive() == (data, relayed)
            node = local.node
            [five_tuple] = node.server.allocations
            assert node._relays[relayed].connected
            # Synchronously, as within one batch: no task may run in between.
            node._execute(node.server.connection_closed(five_tuple))
            assert port_is_free(relayed)
        nursery.cancel_scope.cancel()


def test_relay_sockets_bound_to_port_0_never_share_a_port() -> None:
    # Regression: with SO_REUSEADDR set before the bind, Linux hands out ports already held
    # by other such sockets (65 duplicates in 2000 binds when measured).
    sockets = [bind_relay_socket("127.0.0.1", 0) for _ in range(600)]
    try:
        ports = [sock.getsockname()[1] for sock in sockets]
        assert len(set(ports)) == len(ports)
    finally:
        for sock in sockets:
            sock.close()


async def test_a_reader_woken_for_a_datagram_survives_its_allocation_ending_first() -> None:
    # Regression: the relay reader and another task wake for the same readable socket;
    # when the other one runs first and ends the allocation (closing the socket), the
    # reader must not read the closed socket (EBADF used to stop the node). trio runs a
    # batch of woken tasks in either order, so the race is tried many times. The race
    # needs the data plane's task: the first node of a run takes trio's idle wait
    # (trelay.node.idle_wait) and reads before any task wakes, the second waits in trio.
    async with trio.open_nursery() as nursery:
        first = await start_node(nursery)
        local = await start_node(nursery)
        assert first.node.data_plane.waits_idle and not local.node.data_plane.waits_idle
        node = local.node
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far:
            far.bind(("127.0.0.1", 0))
            for _ in range(40):
                async with udp_client(local.udp) as client:
                    relayed = await client.allocate()
                    await client.create_permission(far.getsockname())
                    [five_tuple] = node.server.allocations
                    watcher = socket.socket(fileno=os.dup(node._relays[relayed].sock.fileno()))
                    with watcher, trio.fail_after(5):
                        # Sent without a checkpoint, so the reader cannot run before both
                        # it and the watcher are woken by the same poll.
                        far.sendto(b"wake the reader", relayed)
                        await trio.lowlevel.wait_readable(watcher)
                        node._execute(node.server.connection_closed(five_tuple))
                    await trio.testing.wait_all_tasks_blocked()
            async with udp_client(local.udp) as client:  # the node still serves
                await client.allocate()
        nursery.cancel_scope.cancel()


async def test_allocations_ended_while_their_peers_send_leave_the_node_running() -> None:
    # Churn: allocations with connected channels end while their peer keeps sending.
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with peer() as far:
            for _ in range(30):
                async with udp_client(local.udp) as client:
                    relayed = await client.allocate()
                    await client.channel_bind(0x4000, far.address)
                    await client.send_channel_data(0x4000, b"connect")  # a connected socket
                    for _ in range(20):
                        await far.send(relayed, b"x" * 100)
                    assert await client.refresh(0) == 0
            async with udp_client(local.udp) as client:  # the node still serves
                relayed = await client.allocate()
                await client.channel_bind(0x4000, far.address)
                await far.send(relayed, b"alive")
                for _ in range(100):  # skip what the earlier allocations' peer sent late
                    if await client.receive_data() == (0x4000, b"alive"):
                        break
                else:
                    pytest.fail("the new allocation never relayed its peer's datagram")
        nursery.cancel_scope.cancel()
