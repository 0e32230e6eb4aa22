"""Transport addresses and the 5-tuple that names an allocation (RFC 8656 §2, §3).

Addresses are `(host, port)` tuples exactly as socket APIs hand them out, so the runtime
can use a received address as a dictionary key without converting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

Address = tuple[str, int]


class ClientTransport(Enum):
    """How a client reaches the server. The relayed transport is UDP in every case."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def is_stream(self) -> bool:
        """Stream transports pad ChannelData to 4 bytes (RFC 8656 §12.5)."""
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
