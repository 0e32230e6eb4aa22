"""The TURN core's own counters: requests and their answers, auth failures, quotas, lifecycle.

Owns `ServerStats`, plain integers the core (`trelay.turn.server.TurnServer.stats`) bumps on
the control path, where it answers a request (RFC 8489 §6.3) or ends an allocation
(RFC 8656 §7). Nothing here runs per relayed packet. The runtime publishes these at
scrape time (`trelay.ops.metrics`) and adds the one thing the core cannot know, how long a
request took (`observe_request`, seconds measured by the caller).

Invariants:
- every key space is bounded whatever the traffic: methods outside `trelay.stun.codes.Method`
  count as `OTHER_METHOD`, error codes are the ones the core answers with, the other
  keys are enums; no username, address or allocation is ever a key;
- `allocations_created[t] - allocations_ended[t, *]` is the number of live allocations
  of client transport `t`;
- a request counts once per response sent (a retransmission answered from the response
  cache counts again: a response went out again).
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from enum import Enum

from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import Data
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message_type
from trelay.turn.actions import Action, EndReason, SendToClient
from trelay.turn.addressing import ClientTransport
from trelay.turn.allocation import Allocation
from trelay.turn.auth import Rejected
from trelay.turn.policy import PeerPolicy

SUCCESS_CODE = 200
OTHER_METHOD = -1
_KNOWN_METHODS = frozenset(int(m) for m in Method)
_ERROR_CODE_TYPE = 0x0009  # RFC 8489 §14.8
_TLV = struct.Struct("!HH")
# Request handling latency buckets, seconds (upper bounds; +Inf is implied).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class AuthFailure(Enum):
    """Why a request failed the long-term credential checks (RFC 8489 §9.2.4)."""

    MISSING = "missing"  # no MESSAGE-INTEGRITY: the usual first 401 challenge
    BAD_REQUEST = "bad_request"  # integrity without USERNAME, REALM or NONCE (400)
    STALE_NONCE = "stale_nonce"  # 438
    WRONG_CREDENTIALS = "wrong_credentials"  # unknown user, wrong key or realm (401)
    EXPIRED = "expired"  # a TURN REST credential past its expiry (Allocate, Refresh)
    REVOKED = "revoked"  # a credential the source withdrew


class Quota(Enum):
    """Which limit refused an Allocate (RFC 8656 §7.2 step 8, design §6)."""

    USER = "user"  # 486
    TOTAL = "total"  # 508, the server-wide allocation cap
    PORTS = "ports"  # 508, no relay port free in the configured range


class Drop(Enum):
    """Why a datagram or indication was not relayed (shared with the runtime's counters)."""

    NO_ALLOCATION = "no_allocation"
    NO_CHANNEL = "no_channel"
    NO_PERMISSION = "no_permission"
    MALFORMED = "malformed"
    SEND_FAILED = "send_failed"
    QUEUE_FULL = "queue_full"
    RATE_LIMITED = "rate_limited"
    DENIED_PEER = "denied_peer"


@dataclass(slots=True)
class LatencyHistogram:
    """Per-bucket counts (not cumulative), their sum and count, for one method."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total_seconds: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total_seconds += seconds
        self.count += 1


@dataclass(slots=True)
class ServerStats:
    # (method, code) -> responses sent; code 200 for success.
    responses: dict[tuple[int, int], int] = field(default_factory=dict)
    auth_failures: dict[AuthFailure, int] = field(
        default_factory=lambda: dict.fromkeys(AuthFailure, 0)
    )
    quota_rejections: dict[Quota, int] = field(default_factory=lambda: dict.fromkeys(Quota, 0))
    allocations_created: dict[ClientTransport, int] = field(
        default_factory=lambda: dict.fromkeys(ClientTransport, 0)
    )
    allocations_ended: dict[tuple[ClientTransport, EndReason], int] = field(
        default_factory=lambda: {(t, r): 0 for t in ClientTransport for r in EndReason}
    )
    # Drops the core decides (Send indications, undecodable datagrams, the rate limit).
    dropped: dict[Drop, int] = field(default_factory=lambda: dict.fromkeys(Drop, 0))
    latency: dict[int, LatencyHistogram] = field(default_factory=dict)

    def count_replies(self, actions: list[Action]) -> None:
        """Count every STUN response among `actions` by (method, code)."""
        for action in actions:
            if isinstance(action, SendToClient):
                outcome = response_outcome(action.data)
                if outcome is not None:
                    self.responses[outcome] = self.responses.get(outcome, 0) + 1

    def auth_rejected(self, rejected: Rejected) -> None:
        self.auth_failures[auth_failure(rejected)] += 1

    def observe_request(self, method: int, seconds: float) -> None:
        """The runtime's measure of one request's handling time (control path only)."""
        method = method if method in _KNOWN_METHODS else OTHER_METHOD
        histogram = self.latency.get(method)
        if histogram is None:
            histogram = self.latency[method] = LatencyHistogram()
        histogram.observe(seconds)

    def allocation_ended(self, transport: ClientTransport, reason: EndReason) -> None:
        self.allocations_ended[transport, reason] += 1


def auth_failure(rejected: Rejected) -> AuthFailure:
    """Map a `trelay.turn.auth.Rejected` to its bounded reason."""
    if rejected.anonymous:
        return AuthFailure.MISSING
    if rejected.code == 400:
        return AuthFailure.BAD_REQUEST
    if rejected.code == 438:
        return AuthFailure.STALE_NONCE
    reason = rejected.reason.lower()
    if "revoked" in reason:
        return AuthFailure.REVOKED
    if "expired" in reason:
        return AuthFailure.EXPIRED
    return AuthFailure.WRONG_CREDENTIALS


def send_drop_reason(allocation: Allocation | None, message: Message, policy: PeerPolicy) -> Drop:
    """Why a Send indication (RFC 8656 §10.2) that `trelay.turn.data_path` refused was dropped."""
    if allocation is None:
        return Drop.NO_ALLOCATION
    peer = message.get(XorPeerAddress)
    if peer is None or message.get(Data) is None:
        return Drop.MALFORMED
    if not policy.permits_endpoint(*peer.address):
        return Drop.DENIED_PEER
    return Drop.NO_PERMISSION  # no permission, the other family, or DF not supported


def response_outcome(data: bytes) -> tuple[int, int] | None:
    """(method, code) of an encoded STUN response; None for anything else."""
    if len(data) < 20 or data[0] & 0xC0:
        return None
    method, message_class = decode_message_type(int.from_bytes(data[:2]))
    method = method if method in _KNOWN_METHODS else OTHER_METHOD
    if message_class is MessageClass.SUCCESS:
        return method, SUCCESS_CODE
    if message_class is not MessageClass.ERROR:
        return None
    offset = 20
    while offset + 4 <= len(data):
        kind, length = _TLV.unpack_from(data, offset)
        if kind == _ERROR_CODE_TYPE and length >= 4 and offset + 8 <= len(data):
            # RFC 8489 §14.8: 21 reserved bits, then class (hundreds), then number.
            return method, (data[offset + 6] & 0x07) * 100 + data[offset + 7]
        offset += 4 + length + (-length % 4)
    return method, 0  # an error response without ERROR-CODE (never ours)
