"""RFC 5780 NAT behaviour discovery in the pure core (`trelay.turn.nat_discovery`).

Every combination of the address a request arrives at (the four) and its CHANGE-REQUEST
(none, IP, port, both), with and without RESPONSE-PORT and PADDING; what a node without
the feature (or a TCP/TLS connection, or another listener) answers; and the limits the
answers stay within.
"""

from __future__ import annotations

import itertools

import pytest

from trelay.stun.address_attributes import OtherAddress, ResponseOrigin, XorMappedAddress
from trelay.stun.attributes import (
    Attribute,
    ChangeRequest,
    Padding,
    ResponsePort,
    UnknownAttribute,
)
from trelay.stun.codes import AttributeType, ErrorCode, MessageClass, Method
from trelay.stun.error_attributes import ErrorCodeAttribute, UnknownAttributes
from trelay.stun.integrity import verify_fingerprint
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn.actions import SendToClient
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.auth import LongTermAuthenticator
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import CredentialSources, StaticUsers
from trelay.turn.nat_discovery import MAX_PADDING, NatDiscovery
from trelay.turn.nonces import NonceStamper
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer
from trelay.turn.stats import Drop

TID = bytes(range(12))
PRIMARY = ("192.0.2.1", 3478)
ALTERNATE = ("192.0.2.2", 3479)
NAT = NatDiscovery(PRIMARY, ALTERNATE)
# The four addresses: primary, alternate IP, alternate port, both alternate.
FOUR = [("192.0.2.1", 3478), ("192.0.2.2", 3478), ("192.0.2.1", 3479), ("192.0.2.2", 3479)]
CLIENT = ("198.51.100.7", 40000)
CHANGES = list(itertools.product([False, True], repeat=2))  # (change IP, change port)


def _server(nat: NatDiscovery | None = NAT, **config: float) -> TurnServer:
    realm = "nat.test"
    auth = LongTermAuthenticator(
        realm, CredentialSources(StaticUsers({"alice": "secret"}, realm)), NonceStamper(b"n" * 32)
    )
    turn = TurnConfig(realm=realm, nat_discovery=nat, **config)  # type: ignore[arg-type]
    return TurnServer(turn, auth, PeerPolicy(), wall_clock=lambda: 1_700_000_000.0)


def _binding(*attributes: Attribute, tid: bytes = TID) -> bytes:
    return encode_message(Message(Method.BINDING, MessageClass.REQUEST, tid, attributes))


def _send(
    server: TurnServer,
    data: bytes,
    at: Address = PRIMARY,
    client: Address = CLIENT,
    transport: ClientTransport = ClientTransport.UDP,
    now: float = 0.0,
) -> list[SendToClient]:
    actions = server.handle_message(data, FiveTuple(transport, client, at), now)
    sent = [a for a in actions if isinstance(a, SendToClient)]
    assert len(sent) == len(actions)
    return sent


def _one(server: TurnServer, data: bytes, **where: object) -> tuple[FiveTuple, Message]:
    sent = _send(server, data, **where)  # type: ignore[arg-type]
    assert len(sent) == 1
    assert verify_fingerprint(sent[0].data)
    return sent[0].five_tuple, decode_message(sent[0].data)


def _changed(at: Address, change_ip: bool, change_port: bool) -> Address:
    hosts, ports = (PRIMARY[0], ALTERNATE[0]), (PRIMARY[1], ALTERNATE[1])
    host = (hosts[1] if at[0] == hosts[0] else hosts[0]) if change_ip else at[0]
    port = (ports[1] if at[1] == ports[0] else ports[0]) if change_port else at[1]
    return host, port


@pytest.mark.parametrize("at", FOUR)
@pytest.mark.parametrize(("change_ip", "change_port"), CHANGES)
def test_every_address_and_change_is_answered_from_the_changed_address(
    at: Address, change_ip: bool, change_port: bool
) -> None:
    attributes = (ChangeRequest(change_ip, change_port),) if change_ip or change_port else ()
    route, reply = _one(_server(), _binding(*attributes), at=at)
    origin = _changed(at, change_ip, change_port)
    # RFC 5780 §7.2: from the changed IP and/or port, to the request's source.
    assert route == FiveTuple(ClientTransport.UDP, CLIENT, origin)
    assert reply.message_class is MessageClass.SUCCESS
    assert reply.get(XorMappedAddress) == XorMappedAddress(*CLIENT)
    # §7.3: where it was sent from; §7.4: both changed from where the request arrived.
    assert reply.get(ResponseOrigin) == ResponseOrigin(*origin)
    assert reply.get(OtherAddress) == OtherAddress(*_changed(at, True, True))


def test_the_four_addresses_are_distinct_and_other_address_pairs_them() -> None:
    assert list(NAT.addresses) == FOUR
    assert {NAT.changed(a, True, True) for a in FOUR} == set(FOUR)
    assert all(NAT.changed(NAT.changed(a, True, True), True, True) == a for a in FOUR)


@pytest.mark.parametrize(("change_ip", "change_port"), CHANGES)
def test_response_port_sends_to_the_source_ip_at_that_port(
    change_ip: bool, change_port: bool
) -> None:
    request = _binding(ChangeRequest(change_ip, change_port), ResponsePort(5555))
    route, reply = _one(_server(), request)
    # RFC 5780 §7.5: the source IP, that port; never another IP.
    assert route.client == (CLIENT[0], 5555)
    assert route.server == _changed(PRIMARY, change_ip, change_port)
    # The reflexive address is still where the request came from.
    assert reply.get(XorMappedAddress) == XorMappedAddress(*CLIENT)
    assert reply.get(ResponseOrigin) == ResponseOrigin(*route.server)


def test_response_port_zero_is_a_bad_request_answered_to_the_source() -> None:
    route, reply = _one(_server(), _binding(ResponsePort(0)))
    assert route == FiveTuple(ClientTransport.UDP, CLIENT, PRIMARY)
    error = reply.get(ErrorCodeAttribute)
    assert reply.message_class is MessageClass.ERROR
    assert error is not None and error.code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("length", [0, 1, 100, 1500])
def test_padding_is_echoed_as_long_as_the_request_s(length: int) -> None:
    request = _binding(ChangeRequest(True, True), Padding(b"p" * length))
    route, reply = _one(_server(), request)
    padding = reply.get(Padding)
    assert padding is not None and padding.value == bytes(length)
    assert route.server == ALTERNATE
    # RFC 5780 §9: the padded answer is barely larger than the padded request.
    assert len(_send(_server(), request)[0].data) <= len(request) + 64


def test_padding_beyond_the_bound_is_cut_to_it() -> None:
    sent = _send(_server(), _binding(Padding(b"p" * (MAX_PADDING * 4))))
    padding = decode_message(sent[0].data).get(Padding)
    assert padding is not None and len(padding.value) == MAX_PADDING


def test_a_plain_binding_on_the_four_carries_origin_and_other_address() -> None:
    route, reply = _one(_server(), _binding(), at=FOUR[2])
    assert route == FiveTuple(ClientTransport.UDP, CLIENT, FOUR[2])
    assert reply.get(ResponseOrigin) == ResponseOrigin(*FOUR[2])
    assert reply.get(OtherAddress) == OtherAddress(*FOUR[1])
    assert reply.get(Padding) is None


RFC5780_REQUESTS = {
    "CHANGE-REQUEST": (ChangeRequest(True, False), AttributeType.CHANGE_REQUEST),
    "RESPONSE-PORT": (ResponsePort(5555), AttributeType.RESPONSE_PORT),
    "PADDING": (Padding(b"p" * 8), AttributeType.PADDING),
}


def _assert_unknown(route: FiveTuple, reply: Message, where: Address, *types: int) -> None:
    assert route.server == where and route.client == CLIENT  # back the way it came
    error = reply.get(ErrorCodeAttribute)
    assert reply.message_class is MessageClass.ERROR
    assert error is not None and error.code == ErrorCode.UNKNOWN_ATTRIBUTE
    assert reply.get(UnknownAttributes) == UnknownAttributes(types)


@pytest.mark.parametrize("name", RFC5780_REQUESTS)
def test_without_the_feature_each_rfc5780_attribute_gets_420(name: str) -> None:
    # RFC 5780 §7.2: a server that cannot honour CHANGE-REQUEST answers 420; the three
    # are comprehension-required (RFC 8489 §6.3.1).
    attribute, kind = RFC5780_REQUESTS[name]
    route, reply = _one(_server(nat=None), _binding(attribute))
    _assert_unknown(route, reply, PRIMARY, kind)


def test_without_the_feature_a_plain_binding_has_no_rfc5780_attributes() -> None:
    route, reply = _one(_server(nat=None), _binding())
    assert route == FiveTuple(ClientTransport.UDP, CLIENT, PRIMARY)
    assert reply.message_class is MessageClass.SUCCESS
    assert reply.get(ResponseOrigin) is None and reply.get(OtherAddress) is None


@pytest.mark.parametrize("transport", [ClientTransport.TCP, ClientTransport.TLS])
def test_over_a_stream_the_rfc5780_attributes_get_420(transport: ClientTransport) -> None:
    # The answer can only go back on the connection: nothing to change, no port to pick.
    request = _binding(ChangeRequest(True, True), ResponsePort(5555), Padding(b"p" * 4))
    route, reply = _one(_server(), request, transport=transport)
    _assert_unknown(route, reply, PRIMARY, *(kind for _, kind in RFC5780_REQUESTS.values()))
    route, reply = _one(_server(), _binding(), transport=transport)
    assert reply.get(ResponseOrigin) is None and reply.get(OtherAddress) is None


def test_a_listener_not_among_the_four_does_no_discovery() -> None:
    elsewhere = ("192.0.2.9", 3478)
    route, reply = _one(_server(), _binding(ChangeRequest(True, True)), at=elsewhere)
    _assert_unknown(route, reply, elsewhere, AttributeType.CHANGE_REQUEST)
    route, reply = _one(_server(), _binding(), at=elsewhere)
    assert reply.get(OtherAddress) is None


def test_an_unknown_attribute_is_420_without_listing_the_rfc5780_ones() -> None:
    request = _binding(ChangeRequest(True, True), UnknownAttribute(0x0031, b"x"))
    route, reply = _one(_server(), request)
    _assert_unknown(route, reply, PRIMARY, 0x0031)


def test_other_methods_on_the_four_are_not_answered_from_elsewhere() -> None:
    # A non-Binding request is the TURN core's (401 here), on its own 5-tuple.
    request = encode_message(
        Message(Method.REFRESH, MessageClass.REQUEST, TID, (ChangeRequest(True, True),))
    )
    sent = _send(_server(), request)
    assert [s.five_tuple for s in sent] == [FiveTuple(ClientTransport.UDP, CLIENT, PRIMARY)]


def test_every_answer_stays_within_the_amplification_bound() -> None:
    # design §6: no answer to an unauthenticated request is more than 5x the request.
    requests = [
        _binding(),
        _binding(ChangeRequest(True, True)),
        _binding(ResponsePort(5555)),
        _binding(ChangeRequest(True, False), ResponsePort(5555), Padding(b"")),
        _binding(Padding(b"p" * 2000)),
    ]
    for request in requests:
        for at in FOUR:
            answer = _send(_server(), request, at=at)[0].data
            assert len(answer) <= 5.0 * len(request), (len(request), len(answer))


def test_answers_from_any_address_to_any_port_share_the_reflection_bound() -> None:
    # A forger varies its source port (and so escapes the per-source limit) and the
    # RESPONSE-PORT: the bytes sent to the victim's IP are still bounded (design §6).
    burst = 4096
    server = _server(reflection_rate=1.0, reflection_burst=burst)
    sent_bytes = 0
    for index in range(200):
        change = ChangeRequest(bool(index & 1), bool(index & 2))
        request = _binding(change, ResponsePort(1024 + index), Padding(b"p" * 200))
        source = (CLIENT[0], 20000 + index)
        sent = _send(server, request, at=FOUR[index % 4], client=source)
        for action in sent:
            assert action.five_tuple.client[0] == CLIENT[0]
            sent_bytes += len(action.data)
    assert 0 < sent_bytes <= burst
    assert server.stats.dropped[Drop.REFLECTION_LIMITED] > 0


def test_the_per_source_limit_applies_to_rfc5780_requests() -> None:
    server = _server(unauthenticated_rate=1.0, unauthenticated_burst=3.0)
    answered = sum(
        len(_send(server, _binding(ChangeRequest(True, True), tid=bytes([i]) * 12)))
        for i in range(10)
    )
    assert answered == 3
    assert server.stats.dropped[Drop.RATE_LIMITED] == 7


@pytest.mark.parametrize(
    ("primary", "alternate", "problem"),
    [
        (("192.0.2.1", 3478), ("2001:db8::2", 3479), "one family"),
        (("192.0.2.1", 3478), ("192.0.2.1", 3479), "IP must differ"),
        (("192.0.2.1", 3478), ("192.0.2.2", 3478), "port must differ"),
        (("0.0.0.0", 3478), ("192.0.2.2", 3479), "wildcard"),
        (("192.0.2.1", 0), ("192.0.2.2", 3479), "out of range"),
        (("192.0.2.1", 3478), ("example.org", 3479), "not an IP address"),
    ],
)
def test_nat_discovery_refuses_addresses_it_cannot_serve(
    primary: Address, alternate: Address, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        NatDiscovery(primary, alternate)


def test_ipv6_addresses_are_served_in_canonical_form() -> None:
    nat = NatDiscovery(("2001:DB8::1", 3478), ("2001:db8:0::2", 3479))
    assert nat.primary == ("2001:db8::1", 3478) and nat.alternate == ("2001:db8::2", 3479)
    server = _server(nat=nat)
    client = ("2001:db8::77", 5000)
    route, reply = _one(server, _binding(ChangeRequest(True, False)), at=nat.primary, client=client)
    assert route.server == ("2001:db8::2", 3478)
    assert reply.get(OtherAddress) == OtherAddress("2001:db8::2", 3479)
