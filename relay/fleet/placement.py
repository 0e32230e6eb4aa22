"""Placement: which relay nodes a client is handed, nearest and least loaded first.

Owns the choice the token API makes with the fleet (design §9), as pure functions of the
live registry entries (no I/O, no clock), after Firezone's "the two nearest healthy
relays":

- `place(entries, region, neighbours, count)`: at most `count` nodes that are
  `available` (ready, not draining, not overloaded) and publish at least one URI; first
  the nodes of the client's `region`, then those of each of its `neighbours` in the
  configured order, then every other region's; within one rank the least loaded first
  (allocations, then CPU share), ties broken by node id so that the answer is stable.
- `placed_uris(nodes)`: the nodes' ICE URIs in that order, each URI once.
- `NetworkMap.region_of(address)`: the region of the client networks (CIDR) holding an
  address; overlapping networks are allowed and the longest prefix wins.
- `client_address(peer, forwarded_for, trusted)`: the client's address, believing
  `X-Forwarded-For` only when the connection comes from a trusted proxy, and then only
  as far back as the chain of trusted proxies goes (the rightmost untrusted hop is the
  client; anything left of it could be forged by the client).

Invariants: never a node that is not available; never more than `count` nodes; an
empty answer means no node can take the client (the caller says so: 503, not an empty
list a client would silently fail with).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trelay.config.placement_settings import ClientNetwork, IpNetwork
from trelay.fleet.registry import NodeEntry

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def region_rank(region: str, client_region: str, neighbours: Sequence[str]) -> int:
    """0 for the client's region, 1 + i for its i-th neighbour, after them every other."""
    if region == client_region:
        return 0
    try:
        return 1 + neighbours.index(region)
    except ValueError:
        return 1 + len(neighbours)


def place(
    entries: Iterable[NodeEntry], region: str, neighbours: Sequence[str], count: int
) -> tuple[NodeEntry, ...]:
    """At most `count` available nodes, nearest to `region` first, least loaded within."""
    candidates = [e for e in entries if e.available and e.public_uris]
    candidates.sort(
        key=lambda e: (
            region_rank(e.region, region, neighbours),
            e.allocations,
            e.cpu_share,
            e.node_id,
        )
    )
    return tuple(candidates[: max(0, count)])


def placed_uris(nodes: Iterable[NodeEntry]) -> tuple[str, ...]:
    """Every URI of `nodes`, in order, each once (two nodes may share an anycast name)."""
    return tuple(dict.fromkeys(uri for node in nodes for uri in node.public_uris))


@dataclass(frozen=True, slots=True)
class NetworkMap:
    """Client networks to regions (`[[fleet.placement.client_networks]]`)."""

    networks: tuple[ClientNetwork, ...] = ()

    def region_of(self, address: str | None) -> str | None:
        """The region of the longest network holding `address` (None: no network does)."""
        parsed = parse_ip(address)
        if parsed is None:
            return None
        best: ClientNetwork | None = None
        for entry in self.networks:
            if parsed in entry.network and (
                best is None or entry.network.prefixlen > best.network.prefixlen
            ):
                best = entry
        return None if best is None else best.region


def parse_ip(text: str | None) -> IpAddress | None:
    """An IP address, with an IPv4-mapped IPv6 address read as its IPv4 form; None if not one."""
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text.strip().partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IpAddress, trusted: Sequence[IpNetwork]) -> bool:
    return any(address in network for network in trusted)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IpNetwork]
) -> str | None:
    """The client's address: `peer`, unless `peer` is a trusted proxy; then the rightmost
    address of `X-Forwarded-For` that is not itself a trusted proxy (RFC 7239 §5.2's
    caution: only hops we trust can be believed)."""
    address = parse_ip(peer)
    if address is None or not forwarded_for or not _trusted(address, trusted):
        return None if address is None else str(address)
    for hop in reversed(forwarded_for.split(",")):
        parsed = parse_ip(hop)
        if parsed is None:
            # A hop we cannot read: what lies left of it cannot be trusted either.
            return str(address)
        address = parsed
        if not _trusted(parsed, trusted):
            return str(parsed)
    return str(address)
