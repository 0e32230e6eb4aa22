"""The TURN core's own counters: requests and their answers, auth failures, quotas, lifecycle.

Owns `ServerStats`, plain integers the core (`trelay.turn.server.TurnServer.stats`) bumps on
the control path, where it answers a request (RFC 8489 §6.3) or ends an allocation
(RFC 8656 §7), and `Drop`, the one vocabulary of why a datagram or indication was not
relayed, shared by the core and the runtime's data-path counters. Nothing here runs per
relayed packet. The runtime publishes these at scrape time (`trelay.ops.metrics`) and adds
the one thing the core cannot know, how long a request took (`observe_request`, seconds
measured by the caller).

Every count is told by the deciding code what it decided: a response by its `Reply`
(method and code), an auth failure by `Rejected.failure`, a drop by its `Drop`; nothing
here decodes a response or reads reason text.

A request without credentials (`AuthFailure.MISSING`, RFC 8489 §9.2.4 step 1) is counted
in `auth_failures` by the core like any rejection, but it is the normal first round trip
of every client (each Allocate starts with it), not a failure: `challenges` and
`failed_authentications` are the two views the runtime publishes, so a growth in calls
never reads as a growth in bad credentials.

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
from dataclasses import dataclass, field
from enum import StrEnum

from trelay.stun.codes import Method
from trelay.turn.actions import EndReason
from trelay.turn.addressing import ClientTransport
from trelay.turn.auth import AuthFailure
from trelay.turn.identity_enum import IdentityEnum
from trelay.turn.responses import SUCCESS_CODE, Reply

__all__ = [
    "LATENCY_BUCKETS",
    "OTHER_METHOD",
    "SUCCESS_CODE",
    "AuthFailure",
    "Drop",
    "LatencyHistogram",
    "Quota",
    "ServerStats",
    "drop_counts",
]

OTHER_METHOD = -1
_KNOWN_METHODS = frozenset(int(m) for m in Method)
# Request handling latency buckets, seconds (upper bounds; +Inf is implied).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Quota(IdentityEnum):
    """Which limit refused a request (RFC 8656 §7.2 step 8, §9.2, §11.2, design §6).

    The value is the metric's `quota` label (`trelay.ops.metrics` publishes every member).
    """

    USER = "user"  # Allocate: 486, allocations per identity
    TOTAL = "total"  # Allocate: 508, the server-wide allocation cap
    PORTS = "ports"  # Allocate: 508, no relay port free in the configured range
    SOURCE = "source"  # Allocate: 486, allocations per source address (or IPv6 /64)
    PENDING = "pending"  # Allocate: 508, Allocates per source still binding their port
    PERMISSIONS = "permissions"  # CreatePermission, ChannelBind: 508, per allocation
    CHANNELS = "channels"  # ChannelBind: 508, channels per allocation
    PEERS_PER_REQUEST = "peers_per_request"  # CreatePermission: 508, XOR-PEER-ADDRESSes
    PEER_CONNECTIONS = "peer_connections"  # Connect: 508, TCP peer connections (RFC 6062)


class Drop(StrEnum):
    """Why a datagram or indication was not relayed, by the core or the runtime's data path.

    A `StrEnum`: the value is the metric label, and hashing a member is `str`'s (C, cached),
    so a `dict[Drop, int]` costs the data path no Python call per counted drop.
    """

    NO_ALLOCATION = "no_allocation"  # from a client with no allocation
    NO_CHANNEL = "no_channel"  # ChannelData on a channel not bound (RFC 8656 §12.4)
    NO_PERMISSION = "no_permission"  # no permission for the peer (§9), or it cannot be sent
    MALFORMED = "malformed"  # not STUN after all, or ChannelData shorter than its length
    SEND_FAILED = "send_failed"  # the kernel refused the send
    QUEUE_FULL = "queue_full"  # a stream client's outbox was full (or already closed)
    # A request that did not authenticate (unsigned, Binding, a failed MAC...) over its
    # source's limit; the source is an IP and port (`trelay.turn.rate_limit`).
    RATE_LIMITED = "rate_limited"
    # An answer to such a request over the bytes a destination IP may get (reflection).
    REFLECTION_LIMITED = "reflection_limited"
    DENIED_PEER = "denied_peer"  # a Send indication to a peer the policy denies (design §6)
    # ChannelData on a TCP/TLS connection naming a channel not bound on it: the stream's
    # framing is lost, and the connection was closed (`trelay.node.stream_listener`).
    LOST_FRAMING = "lost_framing"
    # Over a bandwidth limit (`trelay.turn.bandwidth`), by the level that refused it: the
    # allocation's own, its identity's on this node, the node's total.
    BANDWIDTH_ALLOCATION = "bandwidth_allocation"
    BANDWIDTH_IDENTITY = "bandwidth_identity"
    BANDWIDTH_NODE = "bandwidth_node"


def drop_counts() -> dict[Drop, int]:
    """A zero count for every `Drop`: the shape of every drop counter, core and runtime."""
    return dict.fromkeys(Drop, 0)


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
    # RFC 8016: allocations moved to their client's new 5-tuple, by its transport.
    allocations_moved: dict[ClientTransport, int] = field(
        default_factory=lambda: dict.fromkeys(ClientTransport, 0)
    )
    # Drops the core decides (Send indications, undecodable datagrams, the rate limit).
    dropped: dict[Drop, int] = field(default_factory=drop_counts)
    latency: dict[int, LatencyHistogram] = field(default_factory=dict)

    @property
    def challenges(self) -> int:
        """401 challenges to requests that carried no credentials (RFC 8489 §9.2.4 step 1)."""
        return self.auth_failures[AuthFailure.MISSING]

    def failed_authentications(self) -> dict[AuthFailure, int]:
        """Requests that tried to authenticate and failed, by the check that failed."""
        return {f: n for f, n in self.auth_failures.items() if f is not AuthFailure.MISSING}

    def answered(self, reply: Reply) -> None:
        """Count one response sent, by the (method, code) the core decided."""
        method = reply.method if reply.method in _KNOWN_METHODS else OTHER_METHOD
        key = (method, reply.code)
        self.responses[key] = self.responses.get(key, 0) + 1

    def observe_request(self, method: int, seconds: float) -> None:
        """The runtime's measure of one request's handling time (control path only)."""
        method = method if method in _KNOWN_METHODS else OTHER_METHOD
        histogram = self.latency.get(method)
        if histogram is None:
            histogram = self.latency[method] = LatencyHistogram()
        histogram.observe(seconds)

    def allocation_ended(self, transport: ClientTransport, reason: EndReason) -> None:
        self.allocations_ended[transport, reason] += 1
