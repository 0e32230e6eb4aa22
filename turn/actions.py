"""What the TURN core asks the runtime to do: small frozen records, one per kind of I/O.

The core never performs I/O; each handler returns a list of these. The data path
(ChannelData and peer datagrams) returns plain values instead, so that relaying a
packet allocates nothing but the payload (design §3, §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from trelay.turn.addressing import Address, FiveTuple


@dataclass(frozen=True, slots=True)
class SendToClient:
    """Send `data` (a complete STUN message or ChannelData frame) to the client."""

    five_tuple: FiveTuple
    data: bytes


@dataclass(frozen=True, slots=True)
class SendToPeer:
    """Send `data` from the allocation's relayed address to `peer`.

    `dont_fragment`: with the IP DF bit set (a Send indication's DONT-FRAGMENT, §11.2).
    """

    relayed: Address
    peer: Address
    data: bytes
    dont_fragment: bool = False


@dataclass(frozen=True, slots=True)
class OpenRelay:
    """Bind a UDP socket at `host`:`port`, then call `relay_opened` or `relay_failed`.

    `port` 0 means any free port (the server has no configured range).
    """

    five_tuple: FiveTuple
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class CloseRelay:
    """Close the relay socket of an allocation that has ended."""

    relayed: Address


class EndReason(Enum):
    EXPIRED = "expired"
    DELETED = "deleted"
    SHUTDOWN = "shutdown"
    ADMIN = "admin"  # ended by the operator (`TurnServer.end_allocation`, `end_identity`)


@dataclass(frozen=True, slots=True)
class AllocationCreated:
    """Notification for logs and metrics; never carries a secret."""

    five_tuple: FiveTuple
    relayed: Address
    username: str
    lifetime: int


@dataclass(frozen=True, slots=True)
class AllocationEnded:
    five_tuple: FiveTuple
    relayed: Address
    username: str
    reason: EndReason


Action = SendToClient | SendToPeer | OpenRelay | CloseRelay | AllocationCreated | AllocationEnded
