"""Overflow and drain across the fleet: this node's new Allocates sent to a healthy node.

Owns the fleet half of 300 Try Alternate (RFC 8656 §6.2, RFC 8489 §10; design §9),
per TURN-serving process (the single process, or each worker, with its own store):
every `heartbeat_seconds`, `OverflowTask` reads the live nodes (`live_nodes`) and, when
this node (its entry under `node_id`, which workers share with their supervisor) is
draining or overloaded, picks alternates and tells the core
(`TurnServer.redirect_new_allocations`); when it no longer is, or no node fits, it
clears them. The core falls back to `[drain] alternate_server`, then 508, while
draining, and serves the Allocate itself while only overloaded.

The choice (`choose_alternates`):
- candidates are other nodes that are `available` (ready, not draining, not
  overloaded), of this node's region, least loaded first (allocations, then CPU share,
  then id, so every process of a node picks the same one);
- an overloaded node looks in its own region only: serving a client here beats sending
  it to a far relay. A draining node, whose alternative is 508, takes a node of any
  region as a last resort, least loaded first;
- from the candidates' `public_uris` (RFC 7064/7065: `turn:host[:port][?transport=udp|tcp]`,
  `turns:host[:port][?transport=tcp|udp]`, IPv6 literals in brackets; `stun:` is
  skipped), one alternate per client transport and address family, from the first
  candidate offering it. The client keeps its transport (RFC 8489 §10), so a UDP
  client is sent to the candidate's UDP URI, a TLS client to its `turns:` one, a DTLS
  client to its `turns:...?transport=udp` one (RFC 7350).
- a host name is resolved off the trio thread (`trio.socket.getaddrinfo`), bounded by
  `RESOLVE_TIMEOUT`, cached for `RESOLVE_CACHE_SECONDS` (at most `RESOLVE_CACHE_SIZE`
  names; a failure is cached too, so a bad name costs one lookup per period); its
  `turns:` alternates carry the name as ALTERNATE-DOMAIN, so a TLS or DTLS client checks the
  alternate's certificate against it (RFC 8489 §14.16).

Redis lost: the last choice stands for up to `ttl_seconds` after the last successful
read (no registry entry can be older news than that), then it is cleared and the node
serves (or, draining, uses its static alternate or 508). Each change of the choice is
logged once.

Clients that follow 300: Chromium does (it retries the Allocate at the alternate);
aioice, Firefox and coturn's turnutils_uclient do not, so placement (the token API)
stays the primary mechanism and this is an aid for those already sent here.
Chromium sends that retry signed with the nonce this node gave it and fails the
allocation on a 438 (or a second 401), so it lands only where the alternate accepts
that nonce: both nodes derive their nonce key from the same configured TURN REST
secrets, and the client reaches both from one transport address (not from behind a
symmetric NAT, which maps a port per destination). It never follows an alternate on
a loopback address (crbug 649118). tests/interop/test_overflow_chromium.py shows both.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

import trio

from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.registry import NodeEntry, live_nodes
from trelay.fleet.store import RedisStore, StoreUnavailable
from trelay.turn.addressing import ClientTransport, is_ipv6
from trelay.turn.redirection import Alternate
from trelay.turn.server import TurnServer

logger = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 1.0
RESOLVE_CACHE_SECONDS = 60.0
RESOLVE_CACHE_SIZE = 256
DEFAULT_PORTS = {"turn": 3478, "turns": 5349}


@dataclass(frozen=True, slots=True)
class RelayUri:
    """One TURN URI of a node: where a client of `transport` reaches it."""

    transport: ClientTransport
    host: str  # an IP literal or a host name, without brackets
    port: int

    @property
    def is_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_turn_uri(uri: str) -> RelayUri | None:
    """RFC 7065 §3.1 `turnURI` (RFC 7350 §4.3: `turns:` with transport=udp is DTLS), or
    None for STUN URIs and what does not parse."""
    scheme, _, rest = uri.partition(":")
    if scheme not in DEFAULT_PORTS or not rest:
        return None
    authority, _, query = rest.partition("?")
    transports = parse_qs(query).get("transport", [])
    transport_name = (
        transports[0].lower() if transports else ("tcp" if scheme == "turns" else "udp")
    )
    transport = {
        ("turn", "udp"): ClientTransport.UDP,
        ("turn", "tcp"): ClientTransport.TCP,
        ("turns", "tcp"): ClientTransport.TLS,
        ("turns", "udp"): ClientTransport.DTLS,
    }.get((scheme, transport_name))
    if transport is None:
        return None
    if authority.startswith("["):
        host, _, tail = authority[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    try:
        port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    if not host or not 0 < port < 65536:
        return None
    return RelayUri(transport, host, port)


def candidates(
    nodes: Iterable[NodeEntry], node_id: str, region: str, *, draining: bool
) -> list[NodeEntry]:
    """Where newcomers of node `node_id` in `region` may go, best first (module docstring)."""
    others = [n for n in nodes if n.available and n.node_id != node_id]

    def load(node: NodeEntry) -> tuple[int, float, str]:
        return (node.allocations, node.cpu_share, node.node_id)

    near = sorted((n for n in others if n.region == region), key=load)
    if not draining:
        return near
    return near + sorted((n for n in others if n.region != region), key=load)


class HostResolver:
    """Host name -> its addresses, looked up off the trio thread, bounded and cached."""

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self.clock = clock
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}

    async def addresses(self, host: str) -> tuple[str, ...]:
        cached = self._cache.get(host)
        now = self.clock()
        if cached is not None and now - cached[0] < RESOLVE_CACHE_SECONDS:
            return cached[1]
        found: tuple[str, ...] = ()
        with trio.move_on_after(RESOLVE_TIMEOUT):
            try:
                infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
            except OSError:
                infos = []
            found = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        if len(self._cache) >= RESOLVE_CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))  # the oldest name goes
        self._cache[host] = (now, found)
        return found


async def alternates_of(
    nodes: Sequence[NodeEntry], resolver: HostResolver
) -> tuple[Alternate, ...]:
    """One alternate per (client transport, address family), from the first node offering it."""
    chosen: dict[tuple[ClientTransport, bool], Alternate] = {}
    for node in nodes:
        for text in node.public_uris:
            uri = parse_turn_uri(text)
            if uri is None:
                continue
            hosts = (uri.host,) if uri.is_literal else await resolver.addresses(uri.host)
            domain = None if uri.is_literal else uri.host
            for host in hosts:
                slot = (uri.transport, is_ipv6(host))
                if slot not in chosen:
                    chosen[slot] = Alternate((host, uri.port), frozenset({uri.transport}), domain)
    return tuple(chosen.values())


class OverflowTask:
    """Keeps the core's fleet alternates current (`trelay.fleet.follow.run_steps`)."""

    def __init__(
        self,
        store: RedisStore,
        settings: FleetSettings,
        server: TurnServer,
        node_id: str,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.store, self.settings, self.server, self.node_id = store, settings, server, node_id
        self.clock = clock
        self.resolver = HostResolver(clock)
        self.chosen: tuple[Alternate, ...] = ()
        self.read_at = -math.inf  # when live_nodes last answered

    @property
    def interval(self) -> float:
        return self.settings.heartbeat_seconds

    async def step(self) -> None:
        """Read the fleet once and tell the core what follows from it."""
        try:
            nodes = await live_nodes(self.store, self.settings.ttl_seconds)
        except StoreUnavailable:
            if self.chosen and self.clock() - self.read_at > self.settings.ttl_seconds:
                logger.warning("overflow: Redis unanswered for a TTL; alternates cleared")
                self._use(())
            return
        self.read_at = self.clock()
        me = next((n for n in nodes if n.node_id == self.node_id), None)
        draining = self.server.draining or (me is not None and me.draining)
        wanted = draining or (me is not None and me.overloaded)
        chosen: tuple[Alternate, ...] = ()
        if wanted:
            places = candidates(nodes, self.node_id, self.settings.region, draining=draining)
            chosen = await alternates_of(places, self.resolver)
        self._use(chosen)

    def _use(self, chosen: tuple[Alternate, ...]) -> None:
        if chosen == self.chosen:
            return
        self.chosen = chosen
        self.server.redirect_new_allocations(chosen)
        if chosen:
            where = ", ".join(f"{a.address[0]}:{a.address[1]}" for a in chosen)
            logger.info("overflow: new allocations go to %s", where)
        else:
            logger.info("overflow: new allocations are served here again")
