"""RFC 8016 mobility across the worker processes of one node: which worker a moved client's
Refresh belongs to, and how it gets there.

Owns the node's side of design §4's mobility across workers. The kernel hands a UDP
datagram to a worker by its source address (`trelay.process.reuseport_steering`), so a
client that moved usually reaches another worker than the one holding its allocation.
Its Refresh carries the ticket, which names the worker that sealed it (every worker of
a node shares the ticket key, `trelay.node.mobility_tickets`):

1. the receiving worker (`TurnNode.handle_stun`) sees a Refresh with a ticket of another
   worker from a 5-tuple it holds no allocation for, and hands the datagram on
   (`forward`: through the supervisor, `trelay.process.worker.MovedClient`) instead of
   answering it 437;
2. the owner runs it through its core as if it had arrived there
   (`TurnNode.take_moved_client`); the core checks it as any Refresh (integrity, the
   user, the newest ticket) and moves the allocation;
3. on the move, when the kernel would send the client's datagrams elsewhere
   (`elsewhere`), the owner captures them: a socket in the listen address's
   SO_REUSEPORT group, connected to the client's new address, which the kernel prefers
   for that 5-tuple (`TurnNode.capture_client`). One per allocation, closed when it
   moves again or ends; the data path reads it like a listener.

A forged or foreign ticket opens to nothing (`SealedTickets.owner`: None): such a
Refresh goes to this worker's core and gets its answer (437). DTLS clients are not
steered: their association lives on the worker that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trelay.node.mobility_tickets import SealedTickets
from trelay.stun.attributes import MobilityTicket
from trelay.stun.codes import Method
from trelay.stun.errors import StunDecodeError
from trelay.stun.message import decode_message
from trelay.turn.addressing import Address, FiveTuple

# The first two bytes of a Refresh request (RFC 8656 §18: method 0x004, class request).
_REFRESH_REQUEST = Method.REFRESH.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class MobilitySteering:
    """One worker's part: its index, the node's tickets, the kernel's choice, the way out."""

    worker: int
    tickets: SealedTickets
    # True when the kernel hands datagrams from this client address to another worker.
    elsewhere: Callable[[Address], bool]
    # Hand a datagram (from `FiveTuple`) to the worker of that index; never blocks.
    forward: Callable[[int, FiveTuple, bytes], None]

    def owner(self, data: bytes) -> int | None:
        """The worker holding the allocation a Refresh's ticket names, when that is not
        this one; None for anything else (other messages, no ticket, a forged one)."""
        if data[:2] != _REFRESH_REQUEST:
            return None
        try:
            ticket = decode_message(data).get(MobilityTicket)
        except StunDecodeError:
            return None
        if ticket is None or not ticket.value:
            return None
        owner = self.tickets.owner(ticket.value)
        return None if owner == self.worker else owner
