"""What the TURN core asks the runtime to do: small frozen records, one per kind of I/O.

The core never performs I/O; each handler returns a list of these. The data path
(ChannelData and peer datagrams) returns plain values instead, so that relaying a
packet allocates nothing but the payload (design §3, §4).
"""

from __future__ import annotations

from dataclasses import dataclass

from trelay.turn.addressing import Address, FiveTuple
from trelay.turn.identity_enum import IdentityEnum


@dataclass(frozen=True, slots=True)
class SendToClient:
    """Send `data` (a complete STUN message or ChannelData frame) to the client.

    `five_tuple` is the one the data travels on: over UDP, its `server` is the node's
    address to send from and its `client` the destination. That is the request's own
    5-tuple except for RFC 5780 Binding answers (`trelay.turn.nat_discovery`), which may
    leave from another of the node's addresses or go to another port of the source IP.
    """

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

    `port` 0 means any free port (the server has no configured range). `tcp`: a TCP
    allocation (RFC 6062 §5.1): bind a listening TCP socket for peers instead.

    EVEN-PORT (RFC 8656 §7.2, §14.6): with `even` and port 0 the runtime picks an even
    port itself (the kernel's choice is as often odd). `reserve_next`: also bind
    port+1 and hold it, unread, as a reservation (the R bit); `relay_opened` is given
    its address, and it lives until a `CloseRelay` of that address; both bind or
    neither (`relay_failed`). `reserved`: `host`:`port` is such a held socket (an
    Allocate with its RESERVATION-TOKEN): it becomes this relay socket.

    `dual_host`: a dual allocation (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY): also bind
    a socket of the other family there (on `port` too when it is not 0); if that one
    fails the allocation has one family (`relay_opened` is given no second address).
    """

    five_tuple: FiveTuple
    host: str
    port: int
    tcp: bool = False
    even: bool = False
    reserve_next: bool = False
    reserved: bool = False
    dual_host: str | None = None


@dataclass(frozen=True, slots=True)
class CloseRelay:
    """Close the relay socket of an allocation that has ended (one CloseRelay per
    relayed address: a dual allocation has two), or the held socket of a port
    reservation that expired (RFC 8656 §7.2)."""

    relayed: Address


class EndReason(IdentityEnum):
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


@dataclass(frozen=True, slots=True)
class ConnectPeer:
    """RFC 6062 §5.2: open a TCP connection from `relayed` (a TCP allocation's address)
    to `peer`, then call `peer_connected` or `peer_connect_failed` with `connection_id`.
    The core times the attempt out itself (`ClosePeerConnection`)."""

    connection_id: int
    relayed: Address
    peer: Address


@dataclass(frozen=True, slots=True)
class AcceptPeer:
    """RFC 6062 §5.3: keep the connection `peer` just made to `relayed` as
    `connection_id`, unread until it is spliced. A connection the core does not name
    in an `AcceptPeer` is closed."""

    connection_id: int
    relayed: Address
    peer: Address


@dataclass(frozen=True, slots=True)
class SpliceConnections:
    """RFC 6062 §5.4: once the ConnectionBind success before it is sent, the client
    connection `data_connection` carries raw bytes to and from peer connection
    `connection_id`, no STUN; when either side closes, close both and call
    `peer_connection_closed`."""

    connection_id: int
    data_connection: FiveTuple


@dataclass(frozen=True, slots=True)
class ClosePeerConnection:
    """Close peer connection `connection_id` (connecting, waiting or spliced), and its
    client data connection if it has one."""

    connection_id: int


@dataclass(frozen=True, slots=True)
class AllocationMoved:
    """RFC 8016: the allocation at `relayed` belongs to `five_tuple` now, no longer to
    `previous` (its client's address changed): what the relay sends the client goes to
    the new 5-tuple from now on."""

    previous: FiveTuple
    five_tuple: FiveTuple
    relayed: Address


Action = (
    SendToClient | SendToPeer | OpenRelay | CloseRelay | AllocationCreated | AllocationEnded
    | ConnectPeer | AcceptPeer | SpliceConnections | ClosePeerConnection | AllocationMoved
)  # fmt: skip
