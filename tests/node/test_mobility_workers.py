"""RFC 8016 mobility across the workers of `trelay serve --workers 2`.

The supervisor's reuseport program hands a datagram to worker `worker_for(source, 2)`,
so the test picks its client ports: it allocates from a port of worker 0, then moves to
a port of worker 1. Its Refresh with the ticket reaches worker 1, which passes it on
(through the supervisor) to worker 0; worker 0 moves the allocation and captures the
client's new 5-tuple, so everything the client sends from there (ChannelData, a
ChannelBind) reaches worker 0 too, and what the peer sends comes back to the new port.
Without the hand-over worker 1 would answer 437; without the capture the channel's data
would be dropped there. The allocation stays on worker 0 all along (per-worker metrics).
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers.scrape import Samples
from tests.helpers.supervised import running_workers
from tests.helpers.turn_client import LOOPBACK, TurnClient, _Udp, peer
from trelay.process.reuseport_steering import worker_for
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import Lifetime, MobilityTicket, RequestedTransport
from trelay.stun.codes import Method
from trelay.turn.addressing import Address

WORKERS = 2
PORT_TRIES = 1000


# `trelay serve` with WORKERS workers on one UDP port (alice/wonderland, loopback peers).
UDP_WORKERS = ("--workers", str(WORKERS), "--listen-udp", "127.0.0.1:0",
               "--user", "alice:wonderland", "--allow-loopback-peers")  # fmt: skip


def alice_on(worker: int, server: Address) -> TurnClient:
    """alice's TURN client from a port whose datagrams the kernel hands to `worker`."""
    return TurnClient(port_of_worker(worker, server), username="alice", password="wonderland")


def port_of_worker(worker: int, server: Address) -> _Udp:
    """A client socket on loopback whose datagrams the kernel hands to `worker`."""
    for _ in range(PORT_TRIES):
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.bind((LOOPBACK, 0))
        if worker_for(raw.getsockname(), WORKERS) == worker:
            raw.setblocking(False)
            return _Udp(raw, server)
        raw.close()
    raise AssertionError(f"no port of worker {worker} in {PORT_TRIES} tries")


def active(samples: Samples) -> dict[str, float]:
    name = "trelay_worker_allocations_active"
    return {dict(labels)["worker"]: v for (n, labels), v in samples.items() if n == name}


def handovers(samples: Samples) -> dict[str, float]:
    """trelay_worker_handovers_total by kind, summed over the workers."""
    name = "trelay_worker_handovers_total"
    return {dict(labels)["kind"]: v for (n, labels), v in samples.items() if n == name}


async def test_a_client_moving_to_another_workers_port_keeps_its_allocation(
    tmp_path: Path,
) -> None:
    async with running_workers(tmp_path, *UDP_WORKERS) as node, peer() as far:
        [server] = node.addresses("udp")
        home = port_of_worker(0, server)  # kept: the test checks it is left empty
        client = TurnClient(home, username="alice", password="wonderland")
        reply = await client.checked(Method.ALLOCATE, RequestedTransport(17), MobilityTicket(b""))
        relayed_attribute, ticket = reply.get(XorRelayedAddress), reply.get(MobilityTicket)
        assert relayed_attribute is not None and ticket is not None
        relayed = (relayed_attribute.host, relayed_attribute.port)
        await client.channel_bind(0x4001, far.address)
        await client.send_channel_data(0x4001, b"from worker 0's port")
        assert await far.receive() == (b"from worker 0's port", relayed)
        assert active(await node.metrics()) == {"0": 1.0, "1": 0.0}

        client.transport = port_of_worker(1, server)
        moved = await client.checked(Method.REFRESH, Lifetime(600), MobilityTicket(ticket.value))
        assert moved.get(MobilityTicket) not in (None, ticket)
        await client.send_channel_data(0x4001, b"from worker 1's port")
        assert await far.receive() == (b"from worker 1's port", relayed)
        await far.send(relayed, b"back to the new port")
        assert await client.receive_data() == (0x4001, b"back to the new port")
        await client.channel_bind(0x4001, far.address)  # a request reaches the owner too
        assert active(await node.metrics()) == {"0": 1.0, "1": 0.0}
        crossed = handovers(await node.metrics())
        # Worker 1 handed the Refresh on (again if it was answered stale and retried);
        # worker 0 captured the client once, so the ChannelBind was not handed on.
        assert crossed["request_handed_over"] >= 1 and crossed["client_captured"] == 1
        assert crossed["connection_proxied"] == crossed["connection_adopted"] == 0
        assert home.discard() == 0
        await home.aclose()
        assert await client.refresh(0) == 0
        assert active(await node.metrics()) == {"0": 0.0, "1": 0.0}  # fresh at scrape
        await client.aclose()
