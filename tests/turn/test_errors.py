"""Every error response the TURN core produces (RFC 8656 §7-§11, RFC 8489 §9.2.4).

Each test asserts the code, that 401/438 carry REALM and NONCE, and whether the response
is signed: responses to authenticated requests are, error responses included (design §5);
responses to requests that did not authenticate are not. Also the retransmission rules
(RFC 8489 §6.3.1) and the TURN REST credential forms.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.turn_harness import (
    REALM,
    Client,
    Clock,
    assert_error,
    assert_success,
    error_code,
    make_server,
    rest_credentials,
    run_timers,
)
from trelay.stun.address_attributes import XorPeerAddress, XorRelayedAddress
from trelay.stun.attributes import (
    Attribute,
    ChannelNumber,
    DontFragment,
    EvenPort,
    Lifetime,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    UnknownAttribute,
    Username,
)
from trelay.stun.codes import AddressFamily, AttributeType, MessageClass, Method
from trelay.stun.error_attributes import UnknownAttributes
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, encode_header, encode_message, encode_message_type
from trelay.turn.actions import CloseRelay, OpenRelay, SendToClient, SendToPeer
from trelay.turn.config import TurnConfig
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer

PEER = ("127.0.0.1", 40000)
OTHER_PEER = ("127.0.0.2", 40001)
V6_PEER = ("2001:db8::7", 40000)
DUAL = TurnConfig(realm=REALM, relay_host="198.51.100.1", relay_host_v6="2001:db8::1")


def settings(**changes: Any) -> TurnConfig:
    return TurnConfig(realm=REALM, relay_host="198.51.100.1", **changes)


def allocated(server: TurnServer | None = None, **client: object) -> Client:
    c = Client(server or make_server(), **client)  # type: ignore[arg-type]
    assert_success(c, c.allocate())
    return c


def start_allocate(client: Client) -> Message:
    """Send an Allocate that stays pending: the test answers `client.opens` itself."""
    client.auto_open = False
    if client.nonce is None:
        client.authenticate()
    request = client.request(Method.ALLOCATE, RequestedTransport(17))
    assert client.send(request) is None
    assert len(client.opens) == 1
    return request


# --- 400 --------------------------------------------------------------------------------


def test_400_allocate_without_requested_transport() -> None:
    c = Client(make_server())
    assert_error(c, c.call(Method.ALLOCATE), 400, signed=True)
    assert not c.server.allocations


@pytest.mark.parametrize("number", [0x3FFF, 0x8000, 0x0000, 0xFFFF])
def test_400_channel_number_out_of_range(number: int) -> None:
    c = allocated()
    assert_error(c, c.bind(number, PEER), 400, signed=True)
    assert not c.server.allocations[c.five_tuple].channels


def test_rfc5766_channel_numbers_are_accepted_unless_switched_off() -> None:
    c = allocated()  # coturn's turnutils_uclient binds anything in 0x4000-0x7FFF
    assert_success(c, c.bind(0x7FFF, PEER))
    strict = TurnConfig(realm=REALM, relay_host="198.51.100.1", rfc5766_channels=False)
    c = allocated(make_server(strict))
    assert_error(c, c.bind(0x5000, PEER), 400, signed=True)
    assert_success(c, c.bind(0x4FFF, PEER))


def test_400_channel_bound_to_another_peer() -> None:
    c = allocated()
    assert_success(c, c.bind(0x4000, PEER))
    assert_error(c, c.bind(0x4000, OTHER_PEER), 400, signed=True)
    allocation = c.server.allocations[c.five_tuple]
    assert allocation.channels == {0x4000: PEER}
    assert OTHER_PEER[0] not in allocation.permissions


def test_400_peer_bound_to_another_channel() -> None:
    c = allocated()
    assert_success(c, c.bind(0x4000, PEER))
    assert_error(c, c.bind(0x4001, PEER), 400, signed=True)
    assert c.server.allocations[c.five_tuple].peers == {PEER: 0x4000}


def test_400_same_channel_same_peer_is_a_refresh() -> None:
    c = allocated()
    assert_success(c, c.bind(0x4000, PEER))
    assert_success(c, c.bind(0x4000, PEER))


@pytest.mark.parametrize(
    "method, attributes",
    [
        (Method.CREATE_PERMISSION, ()),
        (Method.CHANNEL_BIND, (ChannelNumber(0x4000),)),
        (Method.CHANNEL_BIND, (XorPeerAddress(*PEER),)),
    ],
)
def test_400_missing_peer_or_channel(method: Method, attributes: tuple[Attribute, ...]) -> None:
    c = allocated()
    assert_error(c, c.call(method, *attributes), 400, signed=True)


@pytest.mark.parametrize("missing", [Nonce, Realm, Username])
def test_400_integrity_without_nonce_realm_or_username(missing: type[Attribute]) -> None:
    c = Client(make_server())
    c.authenticate()
    assert c.nonce is not None
    present = (Username(c.username), Realm(REALM), Nonce(c.nonce))
    attributes = tuple(a for a in present if type(a) is not missing)
    request = Message(
        Method.ALLOCATE, MessageClass.REQUEST, c.rng.randbytes(12),
        (RequestedTransport(17), *attributes),
    )  # fmt: skip
    reply = c.send(request)
    assert_error(c, reply, 400, signed=False)
    assert reply is not None and reply.get(Nonce) is None


def test_400_undecodable_attribute_in_a_request() -> None:
    c = Client(make_server())
    transaction_id = bytes(range(12))
    body = encode_message(
        Message(Method.ALLOCATE, MessageClass.REQUEST, transaction_id, (RequestedTransport(17),))
    )[20:]
    body += b"\x00\x0d\x00\x03\x00\x00\x00\x00"  # LIFETIME of 3 bytes: must be 4
    message_type = encode_message_type(Method.ALLOCATE, MessageClass.REQUEST)
    data = encode_header(message_type, len(body), transaction_id) + body
    reply = c.response(c.send_raw(data), Message(Method.ALLOCATE, MessageClass.REQUEST, data[8:20]))
    assert_error(c, reply, 400, signed=False)
    assert reply is not None and reply.method == Method.ALLOCATE


def test_400_unknown_method_request() -> None:
    c = Client(make_server())
    request = Message(0x0FF, MessageClass.REQUEST, bytes(12))
    assert error_code(c.send(request, sign=False)) == 400


# --- 401 --------------------------------------------------------------------------------


def test_401_without_message_integrity() -> None:
    c = Client(make_server())
    reply = c.send(c.request(Method.ALLOCATE, RequestedTransport(17), sign=False), False)
    assert_error(c, reply, 401, signed=False)


@pytest.mark.parametrize(
    "username, password",
    [("alice", "wrong"), ("mallory", "secret"), ("²:alice", "x"), ("alice:٣٣٣", "x")],
)
def test_401_wrong_password_or_unknown_user(username: str, password: str) -> None:
    c = Client(make_server())
    c.authenticate()
    c.username, c.password = username, password
    assert_error(c, c.allocate(), 401, signed=False)
    assert not c.server.allocations


def test_401_wrong_realm() -> None:
    c = Client(make_server())
    c.authenticate()
    assert c.nonce is not None
    request = Message(
        Method.ALLOCATE, MessageClass.REQUEST, c.rng.randbytes(12),
        (RequestedTransport(17), Username("alice"), Realm("other.org"), Nonce(c.nonce)),
    )  # fmt: skip
    assert_error(c, c.send(request), 401, signed=False)


@pytest.mark.parametrize("user_first", [False, True])
def test_401_expired_rest_credential_at_allocate(user_first: bool) -> None:
    clock = Clock()
    c = Client(make_server(clock=clock))
    c.use_rest("carol", clock.unix - 1, user_first=user_first)
    assert_error(c, c.allocate(), 401, signed=True)
    assert not c.server.allocations and c.server.allocation_count == 0


def test_401_expired_rest_credential_at_refresh_with_strict_expiry() -> None:
    clock = Clock()
    c = Client(make_server(clock=clock))
    c.use_rest("carol", clock.unix + 100)
    assert_success(c, c.allocate())
    clock.unix += 100
    c.now = 100
    assert_error(c, c.refresh(), 401, signed=True)
    assert c.server.allocations[c.five_tuple].expires_at == 100  # capped at the expiry


def test_expired_rest_credential_refreshes_without_strict_expiry() -> None:
    clock = Clock()
    config = settings(strict_expiry=False)
    c = Client(make_server(config, clock=clock))
    c.use_rest("carol", clock.unix + 100)
    assert_success(c, c.allocate())
    clock.unix += 200
    c.now = 200
    assert_success(c, c.refresh())
    assert c.server.allocations[c.five_tuple].expires_at == 800
    # ... but a new allocation with the expired credential is still refused.
    other = Client(c.server, address=("203.0.113.9", 1000), nonce=c.nonce)
    other.username, other.password = c.username, c.password
    other.authenticate()
    assert_error(other, other.allocate(), 401, signed=True)


# --- 403 --------------------------------------------------------------------------------

DENIED_V4 = ["127.0.0.1", "0.0.0.0", "10.0.0.1", "169.254.169.254", "100.64.0.1", "224.0.0.1"]
DENIED_V6 = ["::1", "::ffff:127.0.0.1", "fc00::1"]


def _peer_client(host: str, policy: PeerPolicy) -> Client:
    c = Client(make_server(DUAL, policy=policy))
    family = AddressFamily.IPV6 if ":" in host else AddressFamily.IPV4
    assert_success(c, c.allocate(RequestedAddressFamily(family)))
    return c


@pytest.mark.parametrize("host", DENIED_V4 + DENIED_V6)
def test_403_default_policy(host: str) -> None:
    c = _peer_client(host, PeerPolicy())
    assert_error(c, c.permit((host, 5000)), 403, signed=True)
    assert_error(c, c.bind(0x4000, (host, 5000)), 403, signed=True)
    allocation = c.server.allocations[c.five_tuple]
    assert not allocation.permissions and not allocation.channels


@pytest.mark.parametrize("host", DENIED_V4 + DENIED_V6)
def test_allow_list_lets_the_peer_through(host: str) -> None:
    c = _peer_client(host, PeerPolicy.from_strings(allow=[host]))
    assert_success(c, c.permit((host, 5000)))
    assert_success(c, c.bind(0x4000, (host, 5000)))


def test_403_deny_list_beats_allow_list() -> None:
    policy = PeerPolicy.from_strings(
        allow=["10.0.0.0/8", "0.0.0.0/0"], deny=["10.0.0.1", "8.8.8.8"]
    )
    c = _peer_client("10.0.0.1", policy)
    assert_error(c, c.permit(("10.0.0.1", 1)), 403, signed=True)
    assert_error(c, c.bind(0x4000, ("8.8.8.8", 1)), 403, signed=True)
    assert_success(c, c.permit(("10.0.0.2", 1)))


def test_403_create_permission_is_all_or_nothing() -> None:
    c = _peer_client("8.8.8.8", PeerPolicy())
    assert_error(c, c.permit(("8.8.8.8", 1), ("10.0.0.1", 1)), 403, signed=True)
    assert not c.server.allocations[c.five_tuple].permissions


# --- 420 --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION])
def test_420_unknown_comprehension_required_attribute(method: Method) -> None:
    c = allocated() if method != Method.ALLOCATE else Client(make_server())
    unknown = UnknownAttribute(0x7F01, b"abcd")
    extra = (RequestedTransport(17),) if method == Method.ALLOCATE else (XorPeerAddress(*PEER),)
    reply = c.call(method, *extra, unknown)
    assert_error(c, reply, 420, signed=True)
    assert reply.get(UnknownAttributes) == UnknownAttributes((0x7F01,))


def test_unknown_comprehension_optional_attribute_is_ignored() -> None:
    c = Client(make_server())
    assert_success(c, c.allocate(UnknownAttribute(0xC001, b"abcd")))


def test_420_dont_fragment_on_allocate() -> None:
    c = Client(make_server())
    reply = c.allocate(DontFragment())
    assert_error(c, reply, 420, signed=True)
    assert reply.get(UnknownAttributes) == UnknownAttributes((AttributeType.DONT_FRAGMENT,))
    assert not c.server.allocations


def test_dont_fragment_when_the_runtime_can_set_df() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1", dont_fragment=True)
    c = Client(make_server(config, policy=PeerPolicy.from_strings(allow_loopback=True)))
    assert_success(c, c.allocate(DontFragment()))
    assert_success(c, c.permit(PEER))
    [with_df] = c.send_indication(PEER, b"df", DontFragment())
    [without] = c.send_indication(PEER, b"plain")
    assert isinstance(with_df, SendToPeer) and isinstance(without, SendToPeer)
    assert with_df.dont_fragment and not without.dont_fragment


def test_send_indication_with_dont_fragment_is_discarded_without_support() -> None:
    c = allocated()
    assert_success(c, c.permit(PEER))
    assert c.send_indication(PEER, b"df", DontFragment()) == []
    assert c.send_indication(PEER, b"plain") != []


# --- 437 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, attributes",
    [
        (Method.REFRESH, ()),
        (Method.CREATE_PERMISSION, (XorPeerAddress(*PEER),)),
        (Method.CHANNEL_BIND, (ChannelNumber(0x4000), XorPeerAddress(*PEER))),
    ],
)
def test_437_without_allocation(method: Method, attributes: tuple[Attribute, ...]) -> None:
    c = Client(make_server())
    assert_error(c, c.call(method, *attributes), 437, signed=True)


def test_437_second_allocate_with_a_new_transaction_id() -> None:
    c = allocated()
    assert_error(c, c.allocate(), 437, signed=True)
    assert len(c.server.allocations) == 1


def test_437_second_allocate_while_the_first_is_pending() -> None:
    c = Client(make_server())
    start_allocate(c)
    assert_error(c, c.allocate(), 437, signed=True)


# --- 438 --------------------------------------------------------------------------------


def test_438_nonce_from_another_client_address() -> None:
    server = make_server()
    first = Client(server)
    first.authenticate()
    second = Client(server, address=("203.0.113.6", 50000), nonce=first.nonce)
    reply = second.allocate()
    assert_error(second, reply, 438, signed=False)
    fresh = reply.get(Nonce)
    assert fresh is not None and fresh.value != first.nonce
    second.nonce = fresh.value
    assert_success(second, second.allocate())


@pytest.mark.parametrize("nonce", ["ffffffff" + "A" * 22, "x", "", "ffffffffé", "0x" * 20])
def test_438_forged_nonce(nonce: str) -> None:
    c = Client(make_server(), nonce=nonce)
    assert_error(c, c.allocate(), 438, signed=False)


def test_438_nonce_expired_by_wall_clock() -> None:
    clock = Clock()
    c = Client(make_server(clock=clock, nonce_lifetime=600))
    c.authenticate()
    clock.unix += 601
    assert_error(c, c.allocate(), 438, signed=False)


# --- 440, 441, 442, 443 ------------------------------------------------------------------


def test_440_ipv6_requested_without_a_v6_relay() -> None:
    c = Client(make_server())
    reply = c.allocate(RequestedAddressFamily(AddressFamily.IPV6))
    assert_error(c, reply, 440, signed=True)


def test_440_ipv4_on_a_v6_only_relay() -> None:
    config = TurnConfig(realm=REALM, relay_host=None, relay_host_v6="2001:db8::1")
    c = Client(make_server(config))
    assert_error(c, c.allocate(), 440, signed=True)
    assert_success(c, c.allocate(RequestedAddressFamily(AddressFamily.IPV6)))


@pytest.mark.parametrize("method", [Method.REFRESH, Method.CREATE_PERMISSION])
def test_441_another_users_credentials(method: Method) -> None:
    c = allocated()
    c.username, c.password = "bob", "hunter2"
    extra = (XorPeerAddress(*PEER),) if method == Method.CREATE_PERMISSION else ()
    assert_error(c, c.call(method, *extra), 441, signed=True)  # signed with bob's key
    assert not c.server.allocations[c.five_tuple].permissions


def test_442_requested_transport_neither_udp_nor_tcp() -> None:
    c = Client(make_server())
    reply = c.call(Method.ALLOCATE, RequestedTransport(132))  # SCTP
    assert_error(c, reply, 442, signed=True)


def test_400_requested_transport_tcp_over_udp() -> None:
    # RFC 6062 §5.1 check 2: a TCP allocation needs a TCP or TLS control connection.
    c = Client(make_server())
    reply = c.call(Method.ALLOCATE, RequestedTransport(6))
    assert_error(c, reply, 400, signed=True)


@pytest.mark.parametrize(
    "family, peer",
    [(AddressFamily.IPV4, V6_PEER), (AddressFamily.IPV6, PEER)],
)
def test_443_peer_of_the_other_family(family: AddressFamily, peer: tuple[str, int]) -> None:
    c = Client(make_server(DUAL))
    assert_success(c, c.allocate(RequestedAddressFamily(family)))
    assert_error(c, c.permit(peer), 443, signed=True)
    assert_error(c, c.bind(0x4000, peer), 443, signed=True)


def test_443_refresh_with_the_other_family() -> None:
    c = Client(make_server(DUAL))
    assert_success(c, c.allocate())
    reply = c.call(Method.REFRESH, RequestedAddressFamily(AddressFamily.IPV6))
    assert_error(c, reply, 443, signed=True)


# --- 486 --------------------------------------------------------------------------------


def _quota_server(**config: int) -> TurnServer:
    return make_server(settings(**config))


def test_486_user_quota_counts_allocations_and_pending() -> None:
    server = _quota_server(user_quota=2)
    allocated(server)
    start_allocate(Client(server, address=("203.0.113.5", 2)))
    third = Client(server, address=("203.0.113.5", 3))
    assert_error(third, third.allocate(), 486, signed=True)
    bob = Client(server, address=("203.0.113.5", 4), username="bob", password="hunter2")
    assert_success(bob, bob.allocate())


def test_486_rest_identity_across_expiry_timestamps() -> None:
    clock = Clock()
    server = make_server(settings(user_quota=2), clock=clock)
    clients = [Client(server, address=("203.0.113.5", port)) for port in (1, 2, 3)]
    for offset, client in zip((100, 200, 300), clients, strict=True):
        client.use_rest("carol", clock.unix + offset, user_first=offset == 200)
    assert_success(clients[0], clients[0].allocate())
    assert_success(clients[1], clients[1].allocate())
    assert_error(clients[2], clients[2].allocate(), 486, signed=True)
    # Deleting one allocation frees its slot.
    assert_success(clients[0], clients[0].refresh(0))
    assert_success(clients[2], clients[2].allocate())


def test_quota_slot_freed_when_the_allocation_expires() -> None:
    server = _quota_server(user_quota=1)
    first = allocated(server)
    run_timers(server, 600)
    assert first.five_tuple not in server.allocations
    second = Client(server, address=("203.0.113.5", 2), now=600)
    assert_success(second, second.allocate())


# --- 508 --------------------------------------------------------------------------------


def test_508_total_quota_counts_pending() -> None:
    server = _quota_server(total_quota=2)
    allocated(server)
    start_allocate(Client(server, address=("203.0.113.5", 2), username="bob", password="hunter2"))
    third = Client(server, address=("203.0.113.5", 3))
    assert_error(third, third.allocate(), 508, signed=True)


def test_508_port_range_exhausted() -> None:
    server = make_server(settings(port_range=(50000, 50001)))
    allocated(server, address=("203.0.113.5", 1))
    allocated(server, address=("203.0.113.5", 2))
    third = Client(server, address=("203.0.113.5", 3))
    assert_error(third, third.allocate(), 508, signed=True)
    assert server.ports is not None and server.ports.in_use == 2
    assert server.allocation_count == 2


def test_508_after_relay_failed_four_times() -> None:
    server = make_server(settings(port_range=(50000, 50009)))
    c = Client(server)
    request = start_allocate(c)
    tried = {c.opens[0].port}
    for _ in range(3):
        actions = server.relay_failed(c.five_tuple, 0)
        assert len(actions) == 1 and isinstance(actions[0], OpenRelay)
        tried.add(actions[0].port)
    assert len(tried) == 4  # a failed port goes to the back of the queue
    reply = c.response(server.relay_failed(c.five_tuple, 0), request)
    assert_error(c, reply, 508, signed=True)
    assert server.ports is not None and server.ports.in_use == 0
    assert server.allocation_count == 0 and not server.allocations
    assert c.send(request) == reply  # the 508 is what a retransmission gets too


def test_508_relay_failed_without_port_range_gives_up_at_once() -> None:
    c = Client(make_server())
    request = start_allocate(c)
    assert_error(c, c.response(c.server.relay_failed(c.five_tuple, 0), request), 508, signed=True)


def test_508_draining() -> None:
    server = make_server()
    server.shutdown()
    c = Client(server)
    assert_error(c, c.allocate(), 508, signed=True)


def test_508_unknown_reservation_token() -> None:
    c = Client(make_server())
    assert_error(c, c.allocate(ReservationToken(bytes(8))), 508, signed=True)


def test_400_reservation_token_with_even_port() -> None:
    c = Client(make_server())
    assert_error(c, c.allocate(ReservationToken(bytes(8)), EvenPort()), 400, signed=True)


# --- pending Allocates that lose their client ------------------------------------------


def test_connection_closed_while_pending_frees_port_and_quota() -> None:
    config = TurnConfig(
        realm=REALM, relay_host="198.51.100.1", port_range=(50000, 50000), user_quota=1
    )
    server = make_server(config)
    c = Client(server)
    start_allocate(c)
    open_ = c.opens[0]
    assert server.connection_closed(c.five_tuple) == []
    assert server.ports is not None and server.ports.in_use == 0
    assert server.allocation_count == 0
    # The runtime's bind finishes afterwards: the socket is closed, nothing is allocated.
    relayed = (open_.host, open_.port)
    assert server.relay_opened(c.five_tuple, relayed, 0) == [CloseRelay(relayed)]
    assert server.relay_failed(c.five_tuple, 0) == []
    assert not server.allocations and server.ports.in_use == 0
    c.auto_open = True
    assert_success(c, c.allocate())


def test_shutdown_answers_pending_allocates() -> None:
    server = make_server()
    c = Client(server)
    request = start_allocate(c)
    actions = server.shutdown()
    assert_error(c, c.response(actions, request), 508, signed=True)
    relayed = ("198.51.100.1", 50000)
    assert server.relay_opened(c.five_tuple, relayed, 0) == [CloseRelay(relayed)]
    assert server.allocation_count == 0


# --- retransmissions (RFC 8489 §6.3.1, design §5) -------------------------------------------


def test_retransmitted_allocate_gets_the_same_success() -> None:
    c = Client(make_server())
    c.authenticate()
    data = encode_signed(c.request(Method.ALLOCATE, RequestedTransport(17)), c.key)
    first = c.send_raw(data)
    assert sum(isinstance(a, OpenRelay) for a in first) == 1
    c.now = 5
    again = c.send_raw(data)
    replies = [a.data for a in first if isinstance(a, SendToClient)]
    assert again == [SendToClient(c.five_tuple, replies[0])]
    assert len(c.server.allocations) == 1


def test_retransmitted_allocate_while_pending_is_not_answered() -> None:
    c = Client(make_server())
    request = start_allocate(c)
    assert c.send(request) is None
    assert len(c.opens) == 1  # no second relay port


def test_retransmitted_refresh_does_not_extend_twice() -> None:
    c = allocated()
    c.now = 100
    data = encode_signed(c.request(Method.REFRESH, Lifetime(600)), c.key)
    first = c.send_raw(data)
    assert c.server.allocations[c.five_tuple].expires_at == 700
    c.now = 130
    assert c.send_raw(data) == first
    assert c.server.allocations[c.five_tuple].expires_at == 700


# --- TURN REST credentials with rotation, beside static users ------------------------------


def test_rest_both_forms_two_secrets_and_static_users() -> None:
    clock = Clock()
    new, old = b"new-secret-0123456789", b"old-secret-0123456789"
    server = make_server(clock=clock, secrets=[new, old])
    clients = []
    for index, (secret, user_first) in enumerate(
        [(new, False), (new, True), (old, False), (old, True)]
    ):
        c = Client(server, address=("203.0.113.7", 1000 + index))
        c.use_rest(f"user{index}", clock.unix + 3600, secret, user_first=user_first)
        assert_success(c, c.allocate())
        clients.append(c)
    assert {server.allocations[c.five_tuple].identity for c in clients} == {
        "user0", "user1", "user2", "user3",
    }  # fmt: skip
    static = allocated(server, address=("203.0.113.7", 2000))
    assert server.allocations[static.five_tuple].identity == "alice"
    stranger = Client(server, address=("203.0.113.7", 3000))
    stranger.use_rest("eve", clock.unix + 3600, b"unknown-secret-0123")
    assert_error(stranger, stranger.allocate(), 401, signed=False)


def test_rest_username_helper_forms() -> None:
    assert rest_credentials("u", 12.0)[0] == "12:u"
    assert rest_credentials("u", 12.0, user_first=True)[0] == "u:12"


def test_allocate_success_layout() -> None:
    c = Client(make_server())
    reply = c.allocate()
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None and relayed.host == "198.51.100.1"
