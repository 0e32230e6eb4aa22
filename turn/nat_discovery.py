"""RFC 5780 NAT behaviour discovery: the Binding answer of a server with two addresses.

Owns the server side of RFC 5780 §6 (opt-in: it needs a second IP address of the host):
`NatDiscovery`, the four transport addresses (primary / alternate IP x primary /
alternate port) a node listens on over UDP, and `answer_binding_request`, which decides
what a Binding request gets and on which 5-tuple the answer travels (`Routed`); the
runtime only holds the sockets and sends from the one `Routed.route.server` names.

On one of the four UDP addresses, a Binding success carries (RFC 5780 §6.1, §7):

- RESPONSE-ORIGIN (§7.3): the address the answer is sent from;
- OTHER-ADDRESS (§7.4): the address with both IP and port changed from the one the
  request arrived at (what "change IP" and "change port" together would answer from);
- CHANGE-REQUEST (§7.2): the answer leaves from the changed IP and/or port;
- RESPONSE-PORT (§7.5): the answer goes to the request's source IP at that port (never
  to another IP; port 0 is 400);
- PADDING (§7.6): the answer carries PADDING as long as the request's, at most
  `MAX_PADDING` bytes, so it stays about the size of the request.

Anywhere else (the feature off, a TCP/TLS connection, a listener not among the four) a
request carrying CHANGE-REQUEST, RESPONSE-PORT or PADDING gets 420 Unknown Attribute
listing them (`trelay.turn.binding.unsupported_rfc5780`): all three are
comprehension-required (< 0x8000), and RFC 5780 §7.2 says a server that cannot honour
CHANGE-REQUEST answers 420, which is how a client (coturn's `turnutils_natdiscovery`)
learns the server does not do NAT discovery. Over TCP and TLS an answer can only go back
on the connection, so none of the three can be honoured there (RFC 5780 §4 runs the
filtering tests over UDP only); the answer there carries neither RESPONSE-ORIGIN nor
OTHER-ADDRESS, since the node listens for streams on the primary address only.

Security (RFC 5780 §9): Binding is unauthenticated, so each of these answers passes the
core's limits like any other (`trelay.turn.rate_limit`): the source's token before the
answer is built, and the answer's bytes from the per-destination-IP reflection bound,
whichever address it leaves from and whichever port it goes to (RESPONSE-PORT keeps the
source IP, the bound's key). PADDING cannot amplify: the answer's padding is at most the
request's. An answer never goes to an IP the request did not come from.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from trelay.stun.address_attributes import OtherAddress, ResponseOrigin, XorMappedAddress
from trelay.stun.attributes import Attribute, ChangeRequest, Padding, ResponsePort, Software
from trelay.stun.codes import ErrorCode, Method
from trelay.stun.message import Message
from trelay.turn import responses
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.binding import answer_binding, reflexive_address
from trelay.turn.responses import Reply

# PADDING echoed at most (bytes): an Ethernet MTU, what RFC 5780 §7.6 suggests padding
# to (coturn's `turnutils_natdiscovery -P` sends 1500). A longer request's answer is
# padded this much only.
MAX_PADDING = 1500


def _canonical(address: Address, name: str) -> Address:
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{name}: not an IP address: {host!r}") from None
    if ip.is_unspecified:
        raise ValueError(f"{name}: a wildcard address cannot be told to clients: {host}")
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"{name}: port {port} out of range 1-65535")
    return str(ip), port


@dataclass(frozen=True, slots=True)
class NatDiscovery:
    """The primary and alternate transport addresses (RFC 5780 §6): two IPs of one
    family, two ports; the node listens over UDP on all four combinations."""

    primary: Address
    alternate: Address

    def __post_init__(self) -> None:
        primary = _canonical(self.primary, "primary")
        alternate = _canonical(self.alternate, "alternate")
        if (":" in primary[0]) != (":" in alternate[0]):
            raise ValueError("primary and alternate addresses must be of one family")
        if primary[0] == alternate[0]:
            raise ValueError("the alternate IP must differ from the primary IP")
        if primary[1] == alternate[1]:
            raise ValueError("the alternate port must differ from the primary port")
        object.__setattr__(self, "primary", primary)
        object.__setattr__(self, "alternate", alternate)

    @property
    def addresses(self) -> tuple[Address, Address, Address, Address]:
        """The four: primary, alternate IP with primary port, primary IP with alternate
        port, alternate (the order the node binds them in)."""
        (host, port), (other_host, other_port) = self.primary, self.alternate
        return (host, port), (other_host, port), (host, other_port), (other_host, other_port)

    def serves(self, server: Address) -> bool:
        """Whether `server` (a listener's bound address) is one of the four."""
        return server in self.addresses

    def changed(self, server: Address, change_ip: bool, change_port: bool) -> Address:
        """The address an answer to a request received at `server` (one of the four)
        leaves from, with the IP and/or the port changed (RFC 5780 §7.2)."""
        hosts = (self.primary[0], self.alternate[0])
        ports = (self.primary[1], self.alternate[1])
        host, port = server
        if change_ip:
            host = hosts[1] if host == hosts[0] else hosts[0]
        if change_port:
            port = ports[1] if port == ports[0] else ports[0]
        return host, port


@dataclass(frozen=True, slots=True)
class Routed:
    """An answer and the 5-tuple it travels on: `route.server` is the node's address it
    leaves from, `route.client` where it goes (the request's source, or its IP at the
    RESPONSE-PORT)."""

    reply: Reply
    route: FiveTuple


def answer_binding_request(
    request: Message, five_tuple: FiveTuple, software: Software, nat: NatDiscovery | None
) -> Routed:
    """The answer to a Binding request (or to another method sent where only Binding is
    served), with RFC 5780 where `five_tuple` arrived on one of `nat`'s four UDP
    addresses, and as `answer_binding` gives it everywhere else."""
    server = five_tuple.server
    if nat is None or five_tuple.transport is not ClientTransport.UDP or not nat.serves(server):
        return Routed(answer_binding(request, five_tuple.client, software), five_tuple)
    if request.unknown_comprehension_required() or request.method != Method.BINDING:
        reply = answer_binding(request, five_tuple.client, software, rfc5780=True)
        return Routed(reply, five_tuple)
    client = five_tuple.client
    response_port = request.get(ResponsePort)
    if response_port is not None and response_port.value == 0:
        # RFC 5780 §7.5: the answer goes to that port; nothing can be sent to port 0.
        reason = "RESPONSE-PORT 0"
        reply = responses.error(request, ErrorCode.BAD_REQUEST, software, reason=reason)
        return Routed(reply, five_tuple)
    change = request.get(ChangeRequest)
    origin = server if change is None else nat.changed(server, change.change_ip, change.change_port)
    destination = client if response_port is None else (client[0], response_port.value)
    # RFC 8489 §14.2: the reflexive address is the request's source, wherever the
    # answer goes. RFC 5780 §6.1: RESPONSE-ORIGIN and OTHER-ADDRESS in every success.
    attributes: list[Attribute] = [
        XorMappedAddress(*reflexive_address(client)),
        ResponseOrigin(*origin),
        OtherAddress(*nat.changed(server, change_ip=True, change_port=True)),
    ]
    padding = request.get(Padding)
    if padding is not None:  # RFC 5780 §7.6: as long as the request's, bounded
        attributes.append(Padding(bytes(min(len(padding.value), MAX_PADDING))))
    reply = responses.success(request, tuple(attributes), software, None)
    return Routed(reply, FiveTuple(ClientTransport.UDP, destination, origin))
