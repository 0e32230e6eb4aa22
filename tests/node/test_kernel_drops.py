"""Datagrams the kernel drops for a full receive buffer are counted (issue 15):
`trelay_dropped_datagrams_total{reason="socket_buffer"}`, from each UDP listener's and
relay socket's own count (`trelay.node.datagram_batch.kernel_drops`).

Each test shrinks one of the node's sockets' SO_RCVBUF and sends a burst while the node
cannot read: the node runs in this trio thread, and nothing awaits during the burst.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from tests.helpers.turn_client import TIMEOUT, start_node, udp_client
from trelay.node.datagram_batch import KERNEL_DROPS_SUPPORTED
from trelay.node.turn_node import TurnNode
from trelay.ops.metrics import SOCKET_BUFFER, snapshot

pytestmark = pytest.mark.skipif(not KERNEL_DROPS_SUPPORTED, reason="Linux's sk_drops")

BURST = 100
SMALL_BUFFER = 4096  # the kernel doubles it; a few 1000-byte datagrams fit
PAYLOAD = bytes(1000)  # starts with 0: STUN to the node (malformed), never ChannelData


def socket_buffer_drops(node: TurnNode) -> float:
    return snapshot(node).dropped[(SOCKET_BUFFER,)]


def burst(to: tuple[str, int]) -> None:
    """BURST datagrams at once, from this thread, without a checkpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(BURST):
            sender.sendto(PAYLOAD, to)


async def test_a_full_listener_buffer_is_counted_and_the_rest_is_read() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        assert socket_buffer_drops(local.node) == 0
        local.node.udp_sockets[local.udp].setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER
        )
        burst(local.udp)
        dropped = socket_buffer_drops(local.node)
        assert 0 < dropped < BURST
        # What the kernel kept, the node reads: every datagram is read or counted.
        with trio.fail_after(TIMEOUT):
            await trio.testing.wait_all_tasks_blocked()  # the node has read what was kept
        assert local.udp_stats.datagrams_received + dropped == BURST
        nursery.cancel_scope.cancel()


async def test_a_full_relay_buffer_is_counted_and_kept_after_the_allocation_ends() -> None:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        async with udp_client(local.udp) as client:
            relayed = await client.allocate()
            relay = local.node._relays[relayed]
            relay.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
            burst(relayed)  # a peer flooding the relayed address (no permission needed)
            during = socket_buffer_drops(local.node)
            assert 0 < during < BURST
            await client.refresh(0)  # the allocation ends, its socket closes
        assert relayed not in local.node._relays
        # A counter: what the closed socket dropped stays counted.
        assert socket_buffer_drops(local.node) == during
        nursery.cancel_scope.cancel()
