"""Requests that belong to another worker process of the node: RFC 8016 mobility's
Refresh and a RESERVATION-TOKEN's Allocate (RFC 8656 §7.2), and how they get there.

Owns the node's side of design §4's steering across workers. The kernel hands a UDP
datagram to a worker by its source address (`trelay.process.reuseport_steering`), so a
client that comes from a new source address or port usually reaches another worker than
the one holding what it asks for:

- a client that moved (RFC 8016) refreshes with its ticket, which names the worker that
  sealed it (every worker of a node shares the ticket key,
  `trelay.node.mobility_tickets`);
- a client that reserved a port pair (EVEN-PORT R=1) allocates the second port from
  another client port (its RTCP one) with the RESERVATION-TOKEN, whose first byte names
  the worker that issued it (`trelay.turn.reservations.new_token`); "the reservation is
  a server-wide reservation" (§7.2), so every worker must redeem it.

Both take the same path:

1. the receiving worker (`TurnNode.handle_stun`) sees such a request naming another
   worker from a 5-tuple it holds no allocation for, and hands the datagram on
   (`forward`: through the supervisor, `trelay.process.worker.MovedClient`) instead of
   answering it itself (437 or 508);
2. the owner runs it through its core as if it had arrived there
   (`TurnNode.take_moved_client`); the core checks it as any request (integrity, the
   user, the newest ticket, a live reservation) and moves or creates the allocation;
3. when the allocation's client is at a 5-tuple the kernel hands to another worker
   (`elsewhere`), the owner captures its datagrams: a socket in the listen address's
   SO_REUSEPORT group, connected to the client's address, which the kernel prefers for
   that 5-tuple (`TurnNode.capture_client`), made before the answer leaves so that the
   client's next request already lands there. One per allocation, closed when it moves
   again or ends; the data path reads it like a listener.

Each worker counts the requests it handed on and the clients it captured
(`SteeringCounts`, exported as `trelay_worker_handovers_total{kind}`).

A forged or foreign ticket opens to nothing (`SealedTickets.owner`: None): such a
Refresh goes to this worker's core and gets its answer (437). A forged token naming
another worker is handed on and answered 508 there (its 7 random bytes match nothing).
Only UDP clients are steered here: DTLS associations live on the worker that accepted
them (a moved DTLS client makes a new association there), and a TCP/TLS connection
whose Allocate carries another worker's token (or whose ConnectionBind names another
worker's peer connection) is proxied to it whole (`trelay.node.bind_proxy`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from trelay.node.mobility_tickets import SealedTickets
from trelay.node.worker_requests import (
    ALLOCATE_REQUEST,
    REFRESH_REQUEST,
    decode_request,
    reservation_worker,
)
from trelay.stun.attributes import MobilityTicket
from trelay.stun.codes import HEADER_LENGTH, AttributeType, Method
from trelay.turn.addressing import Address, FiveTuple

# The first two bytes of a Refresh and an Allocate request (RFC 8656 §18: class request).
_STEERED = (REFRESH_REQUEST, ALLOCATE_REQUEST)


@dataclass(slots=True)
class SteeringCounts:
    """What one worker's steering did since it started (`trelay_worker_handovers_total`,
    `trelay.ops.metrics`): requests it handed to another worker, clients it captured."""

    handed_over: int = 0
    captured: int = 0


@dataclass(frozen=True, slots=True)
class ClientSteering:
    """One worker's part: its index, the node's tickets (None when mobility is off), the
    kernel's choice, the way out."""

    worker: int
    workers: int  # the node's worker count (the indices a request may name)
    tickets: SealedTickets | None
    # True when the kernel hands datagrams from this client address to another worker.
    elsewhere: Callable[[Address], bool]
    # Hand a datagram (from `FiveTuple`) to the worker of that index; never blocks.
    forward: Callable[[int, FiveTuple, bytes], None]
    counts: SteeringCounts = field(default_factory=SteeringCounts)

    def hand_over(self, owner: int, five_tuple: FiveTuple, data: bytes) -> None:
        """Hand `data` (a request `owner` returned a worker for) to that worker."""
        self.counts.handed_over += 1
        self.forward(owner, five_tuple, data)

    def owner(self, data: bytes) -> int | None:
        """The worker a Refresh's ticket or an Allocate's RESERVATION-TOKEN names, when
        that is not this one; None for anything else (other messages, neither attribute,
        a forged ticket, a token naming no other worker of the node)."""
        if not names_a_worker(data):
            return None  # the common case, decoded once only: by the core
        message = decode_request(data, _STEERED)
        if message is None:
            return None
        owner: int | None = None
        if message.method == Method.ALLOCATE:
            owner = reservation_worker(message)
        elif self.tickets is not None:
            ticket = message.get(MobilityTicket)
            if ticket is not None and ticket.value:
                owner = self.tickets.owner(ticket.value)
        if owner is None or owner == self.worker or not 0 <= owner < self.workers:
            return None  # a token naming no worker of ours is unknown here: 508
        return owner


_TLV = struct.Struct("!HH")
# What can name another worker: an Allocate's token, a Refresh's ticket.
_WORKER_NAMING = {
    ALLOCATE_REQUEST: int(AttributeType.RESERVATION_TOKEN),
    REFRESH_REQUEST: int(AttributeType.MOBILITY_TICKET),
}


def names_a_worker(data: bytes) -> bool:
    """Whether `data` is an Allocate with a RESERVATION-TOKEN or a Refresh with a
    MOBILITY-TICKET, read from the attribute headers alone (no attribute is decoded):
    with workers, every Allocate and Refresh from a 5-tuple without an allocation was
    decoded here and again by the core (issue 13 part 4). False for broken framing
    too; whatever `owner` would decode is a subset of what this lets through."""
    wanted = _WORKER_NAMING.get(data[:2])
    if wanted is None:
        return False
    offset, end = HEADER_LENGTH, len(data)
    while offset + 4 <= end:
        kind, length = _TLV.unpack_from(data, offset)
        if kind == wanted:
            return True
        offset += 4 + length + (-length % 4)
    return False
