"""Transport addresses and the 5-tuple that names an allocation (RFC 8656 §2, §3).

Addresses are `(host, port)` tuples exactly as socket APIs hand them out, so the runtime
can use a received address as a dictionary key without converting it.
"""

from __future__ import annotations

from dataclasses import dataclass

from trelay.turn.identity_enum import IdentityEnum

Address = tuple[str, int]


class ClientTransport(IdentityEnum):
    """How a client reaches the server. The relayed transport is UDP in every case."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    # DTLS over UDP (RFC 7350): one STUN message or ChannelData per DTLS record.
    DTLS = "dtls"

    @property
    def is_stream(self) -> bool:
        """Stream transports (TCP, TLS) pad ChannelData to 4 bytes; over UDP and DTLS the
        padding is not required (RFC 8656 §12.5), a record or datagram delimits it."""
        return self is ClientTransport.TCP or self is ClientTransport.TLS

    @property
    def source_proven(self) -> bool:
        """A handshake proved the client receives at its address (TCP's, TLS's, DTLS's
        cookie exchange, RFC 6347 §4.2.1): an answer to it is no reflection."""
        return self is not ClientTransport.UDP


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """Client address, server address and transport: one allocation at most per value."""

    transport: ClientTransport
    client: Address
    server: Address


def unmap_ipv4(host: str) -> str:
    """'::ffff:192.0.2.1' -> '192.0.2.1'; other addresses unchanged."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def is_ipv6(host: str) -> bool:
    return ":" in host
