"""The TURN core's knobs: lifetimes, quotas, bounds, relay addresses (RFC 8656 §3.2, §7, §9, §12).

A plain frozen value; the runtime's settings layer validates operator input and builds
it. Defaults are the RFC's: allocations 600 s (at most 3600 s), permissions 300 s,
channels 600 s.

Bounds on what one client can make the core keep (issue 15), each answered with the
RFC's error and counted (`trelay.turn.stats.Quota`); 0 is unlimited:

- `permissions_per_allocation` (128) and `channels_per_allocation` (128): 508
  Insufficient Capacity, RFC 8656 §9.2 and §11.2 ("unable to fulfill the request due to
  some capacity limit"). A browser call permits the handful of addresses of its remote
  ICE candidates (host, server-reflexive and relayed, per family: typically under 10,
  a few dozen with many interfaces) and binds a channel per candidate pair it uses, per
  allocation; 128 leaves an order of magnitude of room and caps an allocation's tables
  at a few tens of KiB.
- `peers_per_request` (32): XOR-PEER-ADDRESS attributes in one CreatePermission (§9.1
  allows several; browsers send one). More is 508 before any peer is looked at; and a
  request with more than `attribute_limit()` attributes in all is refused while it is
  decoded (400, unsigned: it is not authenticated yet), so no request does work
  proportional to a long peer list (decoding one costs ~10 µs).
- `allocations_per_source` (1000): allocations, pending ones included, from one source
  (an IPv4 address or an IPv6 /64): 486 Allocation Quota Reached, §7.2 step 8. The RFC
  asks that the quota be per username rather than per transport address (users behind
  one NAT share an address), so this is a high ceiling against one host holding the
  server's ports and memory, not the quota (`user_quota` is).
- `pending_per_source` (64): Allocates from one source whose relay socket is still being
  bound: 508 Insufficient Capacity (§7.2: the server cannot take more now).
- `peer_connections_per_allocation` (32): TCP connections to and from peers one TCP
  allocation holds (RFC 6062, `trelay.turn.tcp_relay`), connecting, waiting for their
  ConnectionBind or spliced: a Connect past it gets 508, a peer connecting in past it is
  closed. Each costs two descriptors (the peer's and the client's data connection); a
  client talks to a handful of peers per allocation.

`tcp_allocations` (True): TCP allocations are offered (an Allocate for one gets 442
without), also with several worker processes: a ConnectionBind's new connection that
the kernel hands to another worker than the allocation's is proxied to it
(`trelay.node.bind_proxy`). A runtime that cannot serve them turns them off.

`tcp_connection_timeout` (30 s): how long a Connect may take to reach its peer (447
after it) and how long a peer connection waits for its ConnectionBind (closed after
it); RFC 6062 §5.2 asks at least 30 s for the first and names 30 s for the second
(§5.2, §5.3), tests use less.

Limits on requests that do not authenticate (`trelay.turn.rate_limit` says why these):
`unauthenticated_rate` (20/s) and `unauthenticated_burst` (40) per client address and
port, and `reflection_rate` (128 KiB/s) and `reflection_burst` (256 KiB) of answers to
them over UDP per destination IP.

`nat_discovery`: the primary and alternate addresses of RFC 5780 (opt-in, None by default).

`bandwidth`: bytes per second per allocation, per identity and in all
(`trelay.turn.bandwidth`); unlimited by default. The core keeps it for the runtime, whose
data path enforces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trelay.turn.bandwidth import BandwidthLimits
from trelay.turn.nat_discovery import NatDiscovery

# Attributes a request may carry besides its XOR-PEER-ADDRESSes: every other attribute a
# TURN request has (USERNAME, USERHASH, REALM, NONCE, the integrity attributes, FINGERPRINT,
# SOFTWARE, LIFETIME, the Allocate ones, ACCESS-TOKEN...) is under 20, with room to spare.
OTHER_ATTRIBUTES = 32
# The least `reflection_burst` (bytes): IPv6's minimum MTU, more than any answer to a
# request that did not authenticate, so that each can be sent at all.
MIN_REFLECTION_BURST = 1280


@dataclass(frozen=True, slots=True)
class TurnConfig:
    realm: str = "trelay.local"
    software: str = "trelay"
    # Address the relay sockets bind to, per family; None: that family is not offered (440).
    relay_host: str | None = "127.0.0.1"
    relay_host_v6: str | None = None
    # Address reported in XOR-RELAYED-ADDRESS when the relay sits behind a 1:1 NAT.
    external_host: str | None = None
    external_host_v6: str | None = None
    # Inclusive relay port range; None lets the kernel choose (port 0).
    port_range: tuple[int, int] | None = None
    default_lifetime: int = 600
    max_lifetime: int = 3600
    permission_lifetime: int = 300
    channel_lifetime: int = 600
    user_quota: int = 0  # allocations per identity; 0 is unlimited
    total_quota: int = 0  # allocations in all; 0 is unlimited
    strict_expiry: bool = True  # check TURN REST expiry on Refresh too, not only Allocate
    # The runtime can send a datagram with the IP DF bit set (RFC 8656 §7.2 step 4, §11.2);
    # without it an Allocate with DONT-FRAGMENT gets 420.
    dont_fragment: bool = False
    # Bindable channel numbers: RFC 5766's 0x4000-0x7FFF (coturn accepts them, and its
    # own client picks them) or, False, RFC 8656's 0x4000-0x4FFF only.
    rfc5766_channels: bool = True
    response_cache_seconds: float = 40.0  # > RFC 8489 Ti (39.5 s): retransmits see one answer
    response_cache_size: int = 16384
    # Requests that do not authenticate, per client address and port (`trelay.turn.rate_limit`).
    unauthenticated_rate: float = 20.0  # per second
    unauthenticated_burst: float = 40.0
    # Bytes of answers to them over UDP, per destination IP: the bound on reflection.
    reflection_rate: float = 131072.0  # per second
    reflection_burst: float = 262144.0
    permissions_per_allocation: int = 128
    channels_per_allocation: int = 128
    peers_per_request: int = 32
    allocations_per_source: int = 1000
    pending_per_source: int = 64
    # RFC 5780 NAT behaviour discovery on four UDP addresses (`trelay.turn.nat_discovery`);
    # None: Binding requests with CHANGE-REQUEST, RESPONSE-PORT or PADDING get 420.
    nat_discovery: NatDiscovery | None = None
    peer_connections_per_allocation: int = 32
    tcp_connection_timeout: float = 30.0
    tcp_allocations: bool = True
    # Relayed bytes per second (`trelay.turn.bandwidth`); enforced by the runtime.
    bandwidth: BandwidthLimits = field(default_factory=BandwidthLimits)

    def __post_init__(self) -> None:
        if not 0 < self.default_lifetime <= self.max_lifetime:
            raise ValueError("lifetimes: need 0 < default_lifetime <= max_lifetime")
        if self.permission_lifetime <= 0 or self.channel_lifetime <= 0:
            raise ValueError("lifetimes: permission and channel lifetimes must be positive")
        if self.relay_host is None and self.relay_host_v6 is None:
            raise ValueError("relay: at least one of relay_host, relay_host_v6 is needed")
        bounds = (
            self.user_quota, self.total_quota, self.permissions_per_allocation,
            self.channels_per_allocation, self.peers_per_request,
            self.allocations_per_source, self.pending_per_source,
            self.peer_connections_per_allocation,
        )  # fmt: skip
        if min(bounds) < 0:
            raise ValueError("quotas: must be >= 0 (0 is unlimited)")
        if not self.tcp_connection_timeout > 0:
            raise ValueError("tcp_connection_timeout: must be > 0 seconds")
        if not (self.unauthenticated_rate > 0 and self.unauthenticated_burst >= 1):
            raise ValueError("unauthenticated: need rate > 0 and burst >= 1")
        if not (self.reflection_rate > 0 and self.reflection_burst >= MIN_REFLECTION_BURST):
            raise ValueError(f"reflection: need rate > 0 and burst >= {MIN_REFLECTION_BURST} bytes")

    def attribute_limit(self) -> int | None:
        """The most attributes a request may carry (`decode_message`'s `max_attributes`):
        `peers_per_request` XOR-PEER-ADDRESSes and `OTHER_ATTRIBUTES` more, so that one
        message's decoding is bounded too; None while peers are unlimited."""
        if not self.peers_per_request:
            return None
        return self.peers_per_request + OTHER_ATTRIBUTES

    def allocate_lifetime(self, requested: int | None) -> int:
        """RFC 8656 §7.2: min(requested, max), but never below the default."""
        if requested is None:
            return self.default_lifetime
        return max(self.default_lifetime, min(requested, self.max_lifetime))

    def refresh_lifetime(self, requested: int | None) -> int:
        """RFC 8656 §7.3: 0 deletes; otherwise min(requested, max); absent is the default."""
        if requested is None:
            return self.default_lifetime
        return min(requested, self.max_lifetime)
