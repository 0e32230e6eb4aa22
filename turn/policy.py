"""Which peers a relay may talk to (RFC 8656 §21.3 on relaying to internal addresses).

Owns the peer address policy: by default every address that is not public unicast is
denied (loopback, RFC 1918 private, CGNAT, ULA, link-local including the cloud metadata
address 169.254.169.254, multicast, reserved, unspecified, documentation, and the
IPv4-mapped and NAT64 forms of these). The operator adds allow and deny CIDR lists;
deny wins over allow, allow wins over the defaults. `allow_loopback` is a test-only
switch that lets loopback peers through.

The server's own listening endpoints (ip, port) are denied whatever the lists say, so a
client cannot make the relay talk TURN to itself (loops, amplification; design §6).
Reachability decides, not the literal address (`OwnEndpoints`): a wildcard listener
(0.0.0.0, ::) answers at every address of the host, so its port is denied with any
local address: all of loopback (127.0.0.0/8 and ::1: 127.0.0.2 reaches a wildcard
listener as well as 127.0.0.1), the unspecified addresses (a datagram to 0.0.0.0 is
delivered locally), the relay and external addresses, and every address the runtime
found on the host's interfaces (`with_local_hosts`; enumerated at start and at each
reload by `trelay.node.local_addresses`). A listener bound to one address is denied at
that address and at the unspecified ones. The relay's own IP as such stays allowed: two
clients of one server reach each other through their relayed addresses, which share
that IP; and permissions are per IP (RFC 8656 §9), so the endpoint check applies where a
port is known: ChannelBind and Send indications.

A denied peer gets 403 on CreatePermission and ChannelBind; Send indications to it are
dropped.

A policy can change while allocations live (a reload, `TurnServer.use_policy`). The
safe choice is made: `withdraw_denied` removes, from every allocation, the permissions
(RFC 8656 §9) and channel bindings (§12) to peers the new policy denies, so relaying to
and from them stops at once, both ways (the data path finds no channel and no
permission and drops, counted as `no_channel`, `no_permission`, `denied_peer`). The
allocations themselves live on; permissions and channels to peers still allowed are
untouched. A peer allowed again later needs a new CreatePermission or ChannelBind,
which the client's ICE agent sends when its checks fail.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing only: an allocation is what the policy is applied to
    from trelay.turn.allocation import Allocation

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENIED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # CGNAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible (RFC 4291 §2.5.5.1)
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765 §2.1): an IPv4 address we cannot vet
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/32",  # Teredo: tunnels to an embedded IPv4 address we cannot vet
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: tunnels to an embedded IPv4 address we cannot vet
        "fc00::/7",  # unique local (ULA)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def embedded_ipv4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or NAT64 (64:ff9b::/96) one."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_WILDCARDS = frozenset(ipaddress.ip_address(a) for a in ("0.0.0.0", "::"))  # noqa: S104


def _candidates(ip: IP) -> tuple[IP, ...]:
    inner = embedded_ipv4(ip)
    return (ip,) if inner is None else (ip, inner)


@dataclass(frozen=True, slots=True)
class OwnEndpoints:
    """Where the relay's own listeners can be reached: never a peer (design §6).

    `listeners`: (ip, port) of listeners bound to one address; `wildcard_ports`: ports
    of listeners bound to 0.0.0.0 or :: (reachable at every local address, whatever
    the family: a :: socket also takes IPv4); `local_hosts`: the host's addresses beyond
    loopback and unspecified, which are always local.
    """

    listeners: frozenset[tuple[IP, int]] = frozenset()
    wildcard_ports: frozenset[int] = frozenset()
    local_hosts: frozenset[IP] = frozenset()

    def with_listeners(self, endpoints: Iterable[tuple[str, int]]) -> OwnEndpoints:
        """Also the listeners at `endpoints` ("0.0.0.0" and "::" are wildcards)."""
        listeners, wildcards = set(self.listeners), set(self.wildcard_ports)
        for host, port in endpoints:
            ip = ipaddress.ip_address(host)
            if ip in _WILDCARDS:
                wildcards.add(port)
            else:
                listeners.add((ip, port))
        return replace(self, listeners=frozenset(listeners), wildcard_ports=frozenset(wildcards))

    def reaches(self, ip: IP, port: int) -> bool:
        """True if a datagram to `ip`:`port` would arrive at one of our listeners."""
        for candidate in _candidates(ip):
            if (candidate, port) in self.listeners:
                return True
            if candidate.is_unspecified and any(p == port for _, p in self.listeners):
                return True  # the kernel delivers a datagram to 0.0.0.0 / :: locally
            if port in self.wildcard_ports and self._is_local(candidate):
                return True
        return False

    def _is_local(self, ip: IP) -> bool:
        return ip.is_loopback or ip.is_unspecified or ip in self.local_hosts


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Allow/deny decision per peer IP; see the module docstring for the order of rules."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    allow_loopback: bool = False
    own: OwnEndpoints = field(default_factory=OwnEndpoints)

    @classmethod
    def from_strings(
        cls,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        *,
        allow_loopback: bool = False,
    ) -> PeerPolicy:
        """Build from CIDR strings; raises ValueError naming the bad entry."""
        return cls(
            tuple(_network(n) for n in allow), tuple(_network(n) for n in deny), allow_loopback
        )

    def with_server_endpoints(self, endpoints: Iterable[tuple[str, int]]) -> PeerPolicy:
        """This policy, also denying the listeners at `endpoints` as peers (a wildcard
        host, 0.0.0.0 or ::, means the port at every local address)."""
        return replace(self, own=self.own.with_listeners(endpoints))

    def with_local_hosts(self, hosts: Iterable[str]) -> PeerPolicy:
        """This policy, with `hosts` (replacing those given before) as the host's own
        addresses: a wildcard listener's port is denied at each of them."""
        local = frozenset(ipaddress.ip_address(host.partition("%")[0]) for host in hosts)
        if local == self.own.local_hosts:
            return self  # unchanged: a reload that changes nothing keeps the very policy
        return replace(self, own=replace(self.own, local_hosts=local))

    def with_own_endpoints(self, other: PeerPolicy) -> PeerPolicy:
        """This policy, denying the relay's own endpoints as `other` does (a reload)."""
        return replace(self, own=other.own)

    def permits(self, host: str) -> bool:
        """True if relaying to or from `host` is allowed."""
        try:
            ip: IP = ipaddress.ip_address(host)
        except ValueError:
            return False
        return self._permits_ip(ip)

    def permits_endpoint(self, host: str, port: int) -> bool:
        """True if relaying to `host`:`port` is allowed (also not one of our listeners)."""
        try:
            ip: IP = ipaddress.ip_address(host)
        except ValueError:
            return False
        if self.own.reaches(ip, port):
            return False
        return self._permits_ip(ip)

    def _permits_ip(self, ip: IP) -> bool:
        candidates = _candidates(ip)
        if any(_within(c, self.deny) for c in candidates):
            return False
        if any(_within(c, self.allow) for c in candidates):
            return True
        if self.allow_loopback and any(_within(c, LOOPBACK) for c in candidates):
            return True
        return not any(_within(c, DEFAULT_DENIED) for c in candidates)


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """What `withdraw_denied` removed: permissions (per peer IP) and channel bindings."""

    permissions: int = 0
    channels: int = 0

    def __bool__(self) -> bool:
        return bool(self.permissions or self.channels)


def withdraw_denied(policy: PeerPolicy, allocations: Iterable[Allocation]) -> Withdrawn:
    """Remove the permissions and channels of `allocations` to peers `policy` denies.

    Channels first: a channel keeps its peer's permission alive (design §5), and a
    channel to a denied peer must not outlive the permission it implies. The
    channel <-> peer bijection holds throughout (`Allocation.unbind_channel`); the timers
    of what was removed find nothing when they come due.
    """
    permissions = channels = 0
    for allocation in allocations:
        for number, peer in list(allocation.channels.items()):
            if not policy.permits_endpoint(*peer):
                allocation.unbind_channel(number)
                channels += 1
        for peer_ip in list(allocation.permissions):
            if not policy.permits(peer_ip):
                del allocation.permissions[peer_ip]
                permissions += 1
    return Withdrawn(permissions, channels)


def _within(ip: IP, networks: tuple[Network, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in networks)


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"not a CIDR network: {text!r}") from exc
