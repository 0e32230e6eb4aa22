"""What the TURN client core hands back: the requests it built and the events it read.

Owns the client core's vocabulary (design §3, after h11 and aioquic): an
`OutgoingRequest` is bytes for the caller to send (and to resend unchanged, RFC 8489
§6.2.1, until it gives up); every datagram or stream chunk the caller feeds in comes
back as `ClientEvent`s, frozen records that say what happened:

- a transaction ended: `Allocated`, `Refreshed`, `PermissionCreated`, `ChannelBound`,
  `BindingSucceeded` (RFC 8656 §7, §9, §11; RFC 8489 §3), `RequestFailed` (an error
  response, RFC 8489 §14.8), `InvalidResponse` (a success without what it must carry);
- a transaction goes on under a new transaction id: `Retrying` (the 401/438 challenge of
  RFC 8489 §9.2.5 answered; the caller sends `request` and waits on its id from then on);
- relayed data arrived: `DataReceived` (Data indication, RFC 8656 §10.4; ChannelData, §12.6);
- something was received and dropped: `Discarded`, with the reason.

Every event that ends a transaction carries the decoded `response`, for callers (tests)
that look at attributes the typed fields leave out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from trelay.stun.codes import ErrorCode, Method
from trelay.stun.message import Message
from trelay.turn.addressing import Address


class TurnClientError(Exception):
    """The client core refuses a call: no challenge yet, no allocation, a bad argument."""


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """A request ready for the wire; resend `data` as is to retransmit (RFC 8489 §6.2.1)."""

    transaction_id: bytes
    method: int
    data: bytes = field(repr=False)
    signed: bool = False


@dataclass(frozen=True, slots=True)
class Allocated:
    """Allocate success (RFC 8656 §7.3): the relayed address(es), mapped address, lifetime.

    `relayed` is the first XOR-RELAYED-ADDRESS; `relayed_addresses` has both of a dual
    allocation (RFC 8656 §7.1, ADDITIONAL-ADDRESS-FAMILY).
    """

    transaction_id: bytes
    relayed: Address
    mapped: Address | None
    lifetime: int
    relayed_addresses: tuple[Address, ...] = ()
    reservation_token: bytes | None = None
    response: Message | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """Refresh success (RFC 8656 §8): the granted lifetime; 0 means deleted."""

    transaction_id: bytes
    lifetime: int
    response: Message | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class PermissionCreated:
    """CreatePermission success (RFC 8656 §9.3) for these peers' IP addresses."""

    transaction_id: bytes
    peers: tuple[Address, ...]
    response: Message | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ChannelBound:
    """ChannelBind success (RFC 8656 §11.3): `channel` now stands for `peer`."""

    transaction_id: bytes
    channel: int
    peer: Address
    response: Message | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class BindingSucceeded:
    """Binding success (RFC 8489 §3): the server-reflexive address (XOR-MAPPED-ADDRESS)."""

    transaction_id: bytes
    mapped: Address | None
    response: Message | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SuccessReceived:
    """Success of a method this core does not interpret (a request built with `request`)."""

    transaction_id: bytes
    method: int
    response: Message | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """An error response (RFC 8489 §14.8). `code` is an `ErrorCode` when it is a known one.

    A 401/438 arrives here only when it could not be answered: no REALM or NONCE, a
    401 to a request that was already signed (wrong credentials), or too many challenges.
    """

    transaction_id: bytes
    method: int
    code: ErrorCode | int
    reason: str
    response: Message | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class InvalidResponse:
    """A response that ends the transaction but breaks the RFC (e.g. Allocate success
    without XOR-RELAYED-ADDRESS, an error response without ERROR-CODE)."""

    transaction_id: bytes
    method: int
    reason: str
    response: Message | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Retrying:
    """The server challenged (401 or 438) and the core signed the request again.

    The transaction `transaction_id` is over; send `request` and wait for its id.
    """

    transaction_id: bytes
    code: ErrorCode | int
    request: OutgoingRequest


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Relayed data from a peer: a Data indication (`peer` set, `channel` None) or
    ChannelData (`channel` set; `peer` is the bound peer, None if the core never saw the
    ChannelBind succeed)."""

    peer: Address | None
    channel: int | None
    data: bytes


class DiscardReason(Enum):
    UNKNOWN_TRANSACTION = "unknown transaction"  # a late duplicate, or not ours
    BAD_INTEGRITY = "bad integrity"  # RFC 8489 §9.2.5: as if never received
    NOT_FOR_CLIENT = "not for a client"  # a request, or an indication other than Data
    MALFORMED = "malformed"  # a Data indication without XOR-PEER-ADDRESS or DATA


@dataclass(frozen=True, slots=True)
class Discarded:
    """A well-formed message that ended nothing; `transaction_id` says which one it was."""

    transaction_id: bytes | None
    reason: DiscardReason


TransactionEnded = (
    Allocated
    | Refreshed
    | PermissionCreated
    | ChannelBound
    | BindingSucceeded
    | SuccessReceived
    | RequestFailed
    | InvalidResponse
)
ClientEvent = TransactionEnded | Retrying | DataReceived | Discarded


def error_code(code: int) -> ErrorCode | int:
    """`code` as an `ErrorCode` when the registry knows it, else the plain number."""
    try:
        return ErrorCode(code)
    except ValueError:
        return code


def method_name(method: int) -> str:
    try:
        return Method(method).name
    except ValueError:
        return f"0x{method:03x}"
