"""TURN mobility (RFC 8016), the core's half: which allocations are mobile, their tickets.

Owns the MOBILITY-TICKET rules of RFC 8016 §3 and the registry of mobile allocations:

- an Allocate with an empty MOBILITY-TICKET asks for mobility (§3.1.1); a ticket with a
  value in an Allocate is 400, and mobility forbidden by the server's policy is 405
  Mobility Forbidden (§3.1.2, `refusal`): when the server has no ticket codec, and over
  TCP and TLS, whose allocations end with their connection (RFC 8656 §3.1), so there
  is nothing a new connection could take over;
- the success response carries a ticket (`MobileAllocations.enrol`), and so does every
  successful Refresh of a mobile allocation (`renew`): each issues a new one, and only
  the newest opens (its serial is the allocation's current one), so a ticket used once
  is superseded and a replayed one is refused;
- a Refresh carrying a ticket (§3.2) finds its allocation by the ticket, not by the
  5-tuple (`find`); the server checks that the request authenticates as the allocation's
  user (441 otherwise), then moves the allocation to the request's 5-tuple when it came
  from a new one (`trelay.turn.server.TurnServer`); an unknown, superseded, expired or
  forged ticket is 437 Allocation Mismatch.

What a ticket says (`Ticket`): the relayed port, a random per-allocation id (the nonce
that binds the ticket to one allocation: a new allocation on the same port never
matches an old ticket), the serial and the expiry (the allocation's, in whole seconds of
the core's clock; a Refresh renews both). Sealing is the codec's job (`TicketCodec`):
the core holds no key and imports no cipher (the node's codec is
`trelay.node.mobility_tickets`, authenticated and encrypted, and names the worker
process that holds the allocation). The username is not in the ticket: the allocation
found has it, and the request must authenticate as that user.

Invariant: `MobileAllocations` holds exactly the live mobile allocations (the server
forgets each in the one place every allocation ends), one id each, so it is bounded by
the allocations.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from trelay.stun.attributes import MobilityTicket
from trelay.stun.codes import ErrorCode, Method
from trelay.stun.message import Message
from trelay.turn.addressing import Address, ClientTransport
from trelay.turn.allocation import Allocation

# Ids and serials are 32-bit in a ticket; expiries are whole seconds, 32-bit too.
ID_LIMIT = 1 << 32
# Tries at a free random id before an allocation goes without a ticket (with 2**32 ids
# and far fewer allocations, one try almost always does).
_ID_TRIES = 16


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a MOBILITY-TICKET says once opened: which allocation, which of its tickets,
    until when (whole seconds of the core's clock, `now`)."""

    relayed_port: int
    allocation_id: int
    serial: int
    expires_at: int


class TicketCodec(Protocol):
    """Seals tickets for clients and opens them again (the node's keyed codec)."""

    def seal(self, ticket: Ticket) -> bytes:
        """The opaque bytes a client gets in MOBILITY-TICKET."""
        ...

    def open(self, sealed: bytes) -> Ticket | None:
        """The ticket `sealed` holds, or None if it was not sealed by this codec's key
        (forged, altered, truncated): a client's bytes never raise."""
        ...


def wants_mobility(request: Message) -> bool:
    """The request carries MOBILITY-TICKET (empty in an Allocate, RFC 8016 §3.1.1)."""
    return request.get(MobilityTicket) is not None


def refusal(
    request: Message, transport: ClientTransport, enabled: bool
) -> tuple[ErrorCode, str] | None:
    """Why an Allocate asking for mobility is refused (RFC 8016 §3.1.2), or None."""
    ticket = request.get(MobilityTicket)
    if ticket is None:
        return None
    if ticket.value:
        return ErrorCode.BAD_REQUEST, "MOBILITY-TICKET must be empty in an Allocate"
    if not enabled:
        return ErrorCode.MOBILITY_FORBIDDEN, "Mobility is not offered"
    if not mobile_transport(transport):
        return ErrorCode.MOBILITY_FORBIDDEN, "Mobility over UDP or DTLS only"
    return None


def mobile_transport(transport: ClientTransport) -> bool:
    """UDP and DTLS: an allocation over TCP or TLS ends with its connection."""
    return not transport.is_stream


def presented_ticket(request: Message) -> bytes | None:
    """The ticket a Refresh presents (RFC 8016 §3.2.1); None for other methods and when
    it has none (an empty one is none)."""
    if request.method != Method.REFRESH:
        return None
    ticket = request.get(MobilityTicket)
    return ticket.value if ticket is not None and ticket.value else None


@dataclass(slots=True)
class _Mobile:
    allocation: Allocation
    allocation_id: int
    serial: int = 0


class MobileAllocations:
    """The live mobile allocations, by their ticket id, and the tickets they hold."""

    __slots__ = ("_by_id", "_by_relayed", "_codec", "_rng")

    def __init__(self, codec: TicketCodec, rng: random.Random | None = None) -> None:
        self._codec = codec
        # The id is sealed inside the ticket, so it need not be secret; unpredictable
        # anyway unless a test injects its own generator.
        self._rng = rng or random.SystemRandom()
        self._by_id: dict[int, _Mobile] = {}
        self._by_relayed: dict[Address, _Mobile] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, allocation: Allocation) -> bool:
        mobile = self._by_relayed.get(allocation.relayed)
        return mobile is not None and mobile.allocation is allocation

    def enrol(self, allocation: Allocation) -> MobilityTicket | None:
        """Make `allocation` mobile; its first ticket, or None if no id was free."""
        for _ in range(_ID_TRIES):
            allocation_id = self._rng.randrange(ID_LIMIT)
            if allocation_id not in self._by_id:
                break
        else:
            return None
        mobile = _Mobile(allocation, allocation_id)
        self._by_id[allocation_id] = mobile
        self._by_relayed[allocation.relayed] = mobile
        return self._issue(mobile)

    def renew(self, allocation: Allocation) -> MobilityTicket | None:
        """A new ticket for a mobile allocation (after a Refresh: its expiry moved);
        every earlier one is superseded. None for an allocation that is not mobile."""
        mobile = self._by_relayed.get(allocation.relayed)
        if mobile is None or mobile.allocation is not allocation:
            return None
        mobile.serial = (mobile.serial + 1) % ID_LIMIT
        return self._issue(mobile)

    def find(self, sealed: bytes, now: float) -> Allocation | None:
        """The live allocation whose newest ticket `sealed` is, unless it has expired."""
        ticket = self._codec.open(sealed)
        if ticket is None:
            return None
        mobile = self._by_id.get(ticket.allocation_id)
        if (
            mobile is None
            or mobile.serial != ticket.serial
            or mobile.allocation.relayed[1] != ticket.relayed_port
            or ticket.expires_at < now
        ):
            return None
        return mobile.allocation

    def forget(self, allocation: Allocation) -> None:
        """The allocation ended: its tickets open nothing from now on."""
        mobile = self._by_relayed.get(allocation.relayed)
        if mobile is not None and mobile.allocation is allocation:
            del self._by_relayed[allocation.relayed]
            del self._by_id[mobile.allocation_id]

    def _issue(self, mobile: _Mobile) -> MobilityTicket:
        allocation = mobile.allocation
        expires_at = min(math.ceil(allocation.expires_at), ID_LIMIT - 1)
        ticket = Ticket(allocation.relayed[1], mobile.allocation_id, mobile.serial, expires_at)
        return MobilityTicket(self._codec.seal(ticket))
