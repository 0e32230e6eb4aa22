"""What an Allocate request asks for, and whether this server can give it (RFC 8656 §7.2).

Owns the checks of §7.2 that depend only on the request and the configuration, in the
RFC's order: step 3 (REQUESTED-TRANSPORT present, and UDP: the only relayed transport
here), step 5 (RESERVATION-TOKEN: never issued, so never valid; not with EVEN-PORT or a
family), step 6 (EVEN-PORT with R set: port reservations are not offered), step 7 (a
relay address of the requested family). The checks that depend on the server's state
(an existing allocation, expired credentials, draining, quotas) stay with the server.
"""

from __future__ import annotations

from stun.attributes import EvenPort, RequestedAddressFamily, RequestedTransport, ReservationToken
from stun.codes import AddressFamily, ErrorCode, TransportProtocol
from stun.message import Message
from turn.config import TurnConfig


def requested_family(request: Message) -> AddressFamily:
    """REQUESTED-ADDRESS-FAMILY, IPv4 when absent (RFC 8656 §7.2 step 7)."""
    family = request.get(RequestedAddressFamily)
    return AddressFamily.IPV4 if family is None else family.family


def relay_host(config: TurnConfig, family: AddressFamily) -> str | None:
    """Where relay sockets of `family` bind; None when that family is not offered."""
    return config.relay_host_v6 if family is AddressFamily.IPV6 else config.relay_host


def unsatisfiable(request: Message, config: TurnConfig) -> tuple[ErrorCode, str] | None:
    """The first of steps 3 and 5-7 the request fails, as (code, reason); None if none."""
    transport = request.get(RequestedTransport)
    if transport is None:
        return ErrorCode.BAD_REQUEST, "REQUESTED-TRANSPORT missing"  # step 3
    if transport.value != TransportProtocol.UDP:
        return ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL, "Only UDP relaying"
    even_port = request.get(EvenPort)
    family = request.get(RequestedAddressFamily)
    if request.get(ReservationToken) is not None:  # step 5
        if even_port is not None or family is not None:
            return ErrorCode.BAD_REQUEST, "RESERVATION-TOKEN with EVEN-PORT or family"
        return ErrorCode.INSUFFICIENT_CAPACITY, "No such reservation"
    if even_port is not None and even_port.reserve_next:  # step 6
        return ErrorCode.INSUFFICIENT_CAPACITY, "Port reservations not supported"
    if relay_host(config, requested_family(request)) is None:  # step 7
        return ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED, "Address Family not Supported"
    return None
