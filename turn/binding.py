"""The STUN Binding responder: one request in, one encoded response (or nothing) out.

Owns the server side of RFC 8489 §6.3.1 (receiving a request) and §6.3.3/§6.3.4
(forming success and error responses) for the Binding method, and the `Responder` type
that the runtime's listeners call for every STUN message they receive.

Invariants:
- It never raises for any input bytes: undecodable input, responses, indications and
  requests with a wrong FINGERPRINT are silently dropped (None).
- Every response carries SOFTWARE and ends with FINGERPRINT (RFC 8489 §14.7 and
  §6.3.4: SOFTWARE SHOULD be included, FINGERPRINT lets a multiplexing client tell STUN
  apart).
- The reflexive address is the IPv4 form for IPv4-mapped IPv6 sources
  ("::ffff:192.0.2.1" from a dual-stack socket answers as "192.0.2.1"), since that is the
  address the client actually sent from.

Only Binding is served here; other methods answer 400 until the TURN core takes them.

RFC 5780's comprehension-required attributes (CHANGE-REQUEST, RESPONSE-PORT, PADDING) are
answered 420 here (`unsupported_rfc5780`): a server that cannot honour them says so (RFC
5780 §7.2, RFC 8489 §6.3.1). Where a node does NAT behaviour discovery,
`trelay.turn.nat_discovery` answers them instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TypeAlias

from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.attributes import ChangeRequest, Fingerprint, Padding, ResponsePort, Software
from trelay.stun.codes import ErrorCode, MessageClass, Method
from trelay.stun.error_attributes import UnknownAttributes
from trelay.stun.errors import StunDecodeError
from trelay.stun.integrity import verify_fingerprint
from trelay.stun.message import Message, decode_message
from trelay.turn import responses
from trelay.turn.responses import Reply

Responder: TypeAlias = Callable[[bytes, tuple[str, int]], bytes | None]
"""Called with one STUN message (a datagram or a deframed stream frame) and the source
(host, port) it came from; returns the reply to send back to that source, or None."""


def reflexive_address(source: tuple[str, int]) -> tuple[str, int]:
    """The (host, port) to report in XOR-MAPPED-ADDRESS for a socket source address.

    Drops an IPv6 zone ("fe80::1%eth0") since the attribute has no room for it, and
    unwraps IPv4-mapped IPv6 addresses, which a dual-stack socket reports for IPv4 clients.
    """
    host, port = source[0], source[1]
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped), port
    return str(address), port


class BindingResponder:
    """Answers STUN Binding requests with the requester's reflexive transport address."""

    __slots__ = ("_software",)

    def __init__(self, software: str) -> None:
        self._software = Software(software)

    def __call__(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        # RFC 8489 §6.3: a message that fails the header checks, or whose attributes do not
        # decode, is discarded (we never answer what we cannot parse).
        try:
            request = decode_message(data)
        except StunDecodeError:
            return None
        # RFC 8489 §6.3: only requests are answered; a response or indication that is not
        # for an outstanding transaction of ours is discarded.
        if request.message_class is not MessageClass.REQUEST:
            return None
        # RFC 8489 §7.3, §8: a FINGERPRINT that does not match means the bytes are not a
        # STUN message (another protocol on the same port); discard them silently.
        if request.get(Fingerprint) is not None and not verify_fingerprint(data):
            return None
        return answer_binding(request, source, self._software).data


def unsupported_rfc5780(request: Message) -> tuple[int, ...]:
    """The RFC 5780 attributes `request` carries (types, in order): comprehension-required,
    so a server that does not honour them answers 420 (RFC 5780 §7.2, §7.5, §7.6)."""
    return tuple(
        a.TYPE for a in request.attributes if isinstance(a, ChangeRequest | ResponsePort | Padding)
    )


def answer_binding(
    request: Message, source: tuple[str, int], software: Software, *, rfc5780: bool = False
) -> Reply:
    """The response to a decoded request on a STUN-only path (the TURN core shares it).

    RFC 8489 §6.3.1: "If the request contains one or more unknown comprehension-required
    attributes, the server replies with an error response with an error code of 420
    (Unknown Attribute) and includes an UNKNOWN-ATTRIBUTES attribute in the response
    that lists the unknown comprehension-required attributes." Unless `rfc5780` (the
    caller honours them, `trelay.turn.nat_discovery`), RFC 5780's count as unknown.
    """
    unknown = request.unknown_comprehension_required()
    if not rfc5780:
        unknown += unsupported_rfc5780(request)
    if unknown:
        return responses.error(
            request, ErrorCode.UNKNOWN_ATTRIBUTE, software, extra=(UnknownAttributes(unknown),)
        )
    if request.method != Method.BINDING:
        return responses.error(request, ErrorCode.BAD_REQUEST, software)
    # RFC 8489 §6.3.3, §14.2: the success response carries the source transport address
    # of the request in XOR-MAPPED-ADDRESS.
    host, port = reflexive_address(source)
    return responses.success(request, (XorMappedAddress(host, port),), software, None)
