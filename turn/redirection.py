"""Where a new Allocate is sent instead of being served: 300 Try Alternate (RFC 8656 §6.2).

Owns the choice of ALTERNATE-SERVER (RFC 8489 §10, §14.15) and ALTERNATE-DOMAIN
(§14.16) for one client, from two sources:

- `fleet`: alternates the runtime picked from the fleet (a healthy node of the region,
  `trelay.fleet.overflow`), each for the client transports and the address family it
  serves. They apply whether or not the server drains: an overloaded node sends
  newcomers on (overflow), a draining one too.
- `drain_alternate`: the operator's static `[drain] alternate_server`, for every
  transport; only while draining, and only when no fleet alternate fits (the fallback).

Rules (RFC 8489 §10): the alternate must be reachable over the transport and in the
address family the request came in (an IPv4-mapped IPv6 client is an IPv4 client);
the client keeps its transport, so an alternate is chosen per client transport. Over
TLS and DTLS the client checks the alternate's certificate against ALTERNATE-DOMAIN when
the 300 carries one, else against the domain it first asked for: a fleet alternate named
by a host name in its URI carries it as its `domain`, and it is sent over TLS and DTLS
only (ALTERNATE-DOMAIN means nothing to a UDP or TCP client). The static drain alternate
has none (the operator's fleet then shares one certificate, as before).

No alternate that fits: a draining server answers 508, an overloaded one serves the
Allocate itself (overflow is soft: better a busy relay than none).
"""

from __future__ import annotations

from dataclasses import dataclass

from trelay.stun.address_attributes import AlternateServer
from trelay.stun.attributes import AlternateDomain, Attribute
from trelay.turn.addressing import Address, ClientTransport, FiveTuple, is_ipv6, unmap_ipv4

ALL_TRANSPORTS = frozenset(ClientTransport)
# Where the client checks a certificate, so ALTERNATE-DOMAIN means something.
SECURE_TRANSPORTS = frozenset({ClientTransport.TLS, ClientTransport.DTLS})


@dataclass(frozen=True, slots=True)
class Alternate:
    """A server a client may be sent to: its address, the client transports it is
    reached over at that address, and the TLS domain to check its certificate against."""

    address: Address
    transports: frozenset[ClientTransport] = ALL_TRANSPORTS
    domain: str | None = None

    def __post_init__(self) -> None:
        if not self.transports:
            raise ValueError("an alternate needs at least one transport")
        if self.domain is not None and not 0 < len(self.domain.encode()) <= 255:
            raise ValueError("ALTERNATE-DOMAIN: 1 to 255 bytes (RFC 8489 §14.16)")

    def fits(self, five_tuple: FiveTuple) -> bool:
        """Reachable over the request's transport, in the client's address family."""
        client_v6 = is_ipv6(unmap_ipv4(five_tuple.client[0]))
        return five_tuple.transport in self.transports and is_ipv6(self.address[0]) == client_v6

    def attributes(self, transport: ClientTransport) -> tuple[Attribute, ...]:
        """ALTERNATE-SERVER, and ALTERNATE-DOMAIN over TLS or DTLS when there is one
        (RFC 8489 §14.16: the domain the client checks the certificate against)."""
        server = AlternateServer(*self.address)
        if transport in SECURE_TRANSPORTS and self.domain is not None:
            return (server, AlternateDomain(self.domain))
        return (server,)


@dataclass(frozen=True, slots=True)
class Redirection:
    """The server's redirection state, passed to each Allocate (`trelay.turn.allocate`)."""

    draining: bool = False
    drain_alternate: Address | None = None
    fleet: tuple[Alternate, ...] = ()

    def alternate_for(self, five_tuple: FiveTuple) -> Alternate | None:
        """The alternate this client is sent to, or None (then: 508 while draining,
        else served here). The first fitting fleet alternate wins over the static one."""
        for alternate in self.fleet:
            if alternate.fits(five_tuple):
                return alternate
        if self.draining and self.drain_alternate is not None:
            static = Alternate(self.drain_alternate)
            if static.fits(five_tuple):
                return static
        return None
