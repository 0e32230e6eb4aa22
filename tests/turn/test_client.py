"""The TURN client core (`trelay.turn.client`) against the real server core, both pure:
bytes from one are handed to the other by `Link`, with time as a number.

Covers the challenge (401, then signed), Refresh, CreatePermission, ChannelBind, data
both ways (Send indication, ChannelData, Data indication), a stale nonce (438) answered,
a wrong password surfaced as `RequestFailed`, the RFC 8489 SHA-256 path (PASSWORD-
ALGORITHMS, MESSAGE-INTEGRITY-SHA256, USERHASH), RFC 7635 ACCESS-TOKEN signing, the
integrity check of responses, and hypothesis: whatever bytes the client core is fed, it
raises nothing but `StunDecodeError` or `TurnClientError`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.turn_harness import SERVER_ADDRESS, Clock, make_server
from trelay.stun import strategies as stun_st
from trelay.stun.address_attributes import XorMappedAddress, XorPeerAddress, XorRelayedAddress
from trelay.stun.attributes import (
    Data,
    Fingerprint,
    Lifetime,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    Realm,
    UserHash,
    Username,
)
from trelay.stun.auth_attributes import PasswordAlgorithm, PasswordAlgorithms
from trelay.stun.codes import ErrorCode, MessageClass, Method, PasswordAlgorithmId
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.errors import StunDecodeError
from trelay.stun.integrity import encode_signed, integrity_algorithms
from trelay.stun.message import Message, decode_message, encode_message
from trelay.stun.nonce_cookie import parse_nonce_cookie
from trelay.turn.actions import OpenRelay, SendToClient, SendToPeer
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.client import TurnClientSession
from trelay.turn.client_auth import (
    AccessTokenCredentials,
    Challenge,
    LongTermCredentials,
    signing_for,
)
from trelay.turn.client_events import (
    Allocated,
    BindingSucceeded,
    ChannelBound,
    ClientEvent,
    DataReceived,
    Discarded,
    DiscardReason,
    OutgoingRequest,
    PermissionCreated,
    Refreshed,
    RequestFailed,
    Retrying,
    TransactionEnded,
    TurnClientError,
)
from trelay.turn.server import TurnServer

PEER = ("127.0.0.1", 40000)  # make_server allows loopback peers
ALICE = LongTermCredentials("alice", "secret", password_algorithms=())  # RFC 5389 style
MODERN = LongTermCredentials("alice", "secret")  # SHA-256 when offered


@dataclass
class Link:
    """A client session and a server core joined by a perfect wire; `now` is shared."""

    server: TurnServer
    session: TurnClientSession
    transport: ClientTransport = ClientTransport.UDP
    now: float = 0.0
    sent: list[bytes] = field(default_factory=list)  # every request on the wire
    to_peer: list[SendToPeer] = field(default_factory=list)

    @property
    def five_tuple(self) -> FiveTuple:
        return FiveTuple(self.transport, ("203.0.113.5", 50000), SERVER_ADDRESS)

    def deliver(self, data: bytes) -> list[ClientEvent]:
        """`data` to the server; what it answers, through the client core."""
        self.sent.append(data)
        actions = self.server.handle_message(data, self.five_tuple, self.now)
        events: list[ClientEvent] = []
        for action in actions:
            if isinstance(action, OpenRelay):
                relayed = (action.host, action.port or 49152)
                actions += self.server.relay_opened(self.five_tuple, relayed, self.now)
            elif isinstance(action, SendToClient):
                events += self.feed(action.data)
            elif isinstance(action, SendToPeer):
                self.to_peer.append(action)
        return events

    def feed(self, data: bytes) -> list[ClientEvent]:
        if self.transport.is_stream:
            return self.session.receive_stream(data)
        return self.session.receive_datagram(data)

    def run(self, request: OutgoingRequest) -> tuple[TransactionEnded, list[Retrying]]:
        """Send `request`, answering challenges as a runtime would, until it ends."""
        retries: list[Retrying] = []
        while True:
            (event,) = self.deliver(request.data)
            if not isinstance(event, Retrying):
                assert not isinstance(event, (DataReceived, Discarded)), event
                return event, retries
            assert event.transaction_id == request.transaction_id
            retries.append(event)
            request = event.request

    def end(self, request: OutgoingRequest) -> TransactionEnded:
        return self.run(request)[0]

    def from_peer(self, data: bytes, peer: tuple[str, int] = PEER) -> list[ClientEvent]:
        allocation = self.server.allocations[self.five_tuple]
        framed = self.server.peer_datagram(allocation, peer, data)
        assert framed is not None, "the server dropped the peer's datagram"
        return self.feed(framed)


def link(
    credentials: LongTermCredentials | AccessTokenCredentials | None = ALICE,
    server: TurnServer | None = None,
    transport: ClientTransport = ClientTransport.UDP,
    **kwargs: object,
) -> Link:
    ids = itertools.count(1)
    session = TurnClientSession(
        credentials,
        transaction_ids=lambda: next(ids).to_bytes(12, "big"),
        stream=transport.is_stream,
        **kwargs,  # type: ignore[arg-type]
    )
    return Link(server or make_server(), session, transport)


# --- the control path ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", [ClientTransport.UDP, ClientTransport.TCP])
def test_allocate_with_challenge_then_refresh_permission_channel(
    transport: ClientTransport,
) -> None:
    wire = link(transport=transport)
    first = wire.session.allocate(lifetime=600)
    assert not first.signed  # RFC 8489 §9.2.3: the first request carries no credentials
    allocated, retries = wire.run(first)
    assert [r.code for r in retries] == [ErrorCode.UNAUTHORIZED]
    assert retries[0].request.signed
    assert isinstance(allocated, Allocated), allocated
    assert allocated.relayed == ("198.51.100.1", 49152)
    assert allocated.mapped == wire.five_tuple.client
    assert allocated.lifetime == 600
    assert wire.session.relayed == allocated.relayed
    assert wire.session.realm == "example.org" and wire.session.nonce is not None
    # Later requests are signed at once: no second challenge.
    refreshed, retries = wire.run(wire.session.refresh(300))
    assert refreshed == Refreshed(refreshed.transaction_id, 300) and not retries
    permitted = wire.end(wire.session.create_permission(PEER, ("127.0.0.2", 1)))
    assert isinstance(permitted, PermissionCreated)
    assert permitted.peers == (PEER, ("127.0.0.2", 1))
    bound = wire.end(wire.session.channel_bind(0x4001, PEER))
    assert bound == ChannelBound(bound.transaction_id, 0x4001, PEER)
    allocation = wire.server.allocations[wire.five_tuple]
    assert allocation.channels == {0x4001: PEER}
    assert set(allocation.permissions) == {"127.0.0.1", "127.0.0.2"}
    deleted = wire.end(wire.session.refresh(0))
    assert isinstance(deleted, Refreshed) and deleted.lifetime == 0
    assert wire.session.relayed is None and wire.session.channels == {}
    assert wire.server.allocation_count == 0


@pytest.mark.parametrize("transport", [ClientTransport.UDP, ClientTransport.TCP])
def test_data_both_ways(transport: ClientTransport) -> None:
    wire = link(transport=transport)
    assert isinstance(wire.end(wire.session.allocate()), Allocated)
    assert isinstance(wire.end(wire.session.create_permission(PEER)), PermissionCreated)
    # Client -> peer: a Send indication (RFC 8656 §10.1).
    assert wire.deliver(wire.session.send_indication(PEER, b"hello")) == []
    relayed = wire.session.relayed
    assert relayed is not None
    assert wire.to_peer == [SendToPeer(relayed, PEER, b"hello")]
    # Peer -> client without a channel: a Data indication (§10.3, §10.4).
    assert wire.from_peer(b"hi there") == [DataReceived(PEER, None, b"hi there")]
    # With a channel: ChannelData both ways (§12), padded over TCP (§12.5).
    assert isinstance(wire.end(wire.session.channel_bind(0x4000, PEER)), ChannelBound)
    framed = wire.session.channel_data(0x4000, b"abcde")
    assert len(framed) == (12 if transport.is_stream else 9)
    assert wire.from_peer(b"xyz") == [DataReceived(PEER, 0x4000, b"xyz")]


def test_binding_is_never_signed_nor_challenged() -> None:
    wire = link()
    wire.end(wire.session.allocate())
    request = wire.session.binding()
    assert not request.signed
    event = wire.end(request)
    assert isinstance(event, BindingSucceeded) and event.mapped == wire.five_tuple.client


def test_stale_nonce_438_is_answered_with_the_new_nonce() -> None:
    clock = Clock()
    wire = link(server=make_server(clock=clock, nonce_lifetime=60))
    wire.end(wire.session.allocate())
    old_nonce = wire.session.nonce
    clock.unix += 120  # the nonce has expired: the next signed request meets 438
    refreshed, retries = wire.run(wire.session.refresh(600))
    assert [r.code for r in retries] == [ErrorCode.STALE_NONCE]
    assert isinstance(refreshed, Refreshed) and refreshed.lifetime == 600
    assert wire.session.nonce != old_nonce


def test_wrong_password_is_a_typed_error() -> None:
    wire = link(LongTermCredentials("alice", "not the password", password_algorithms=()))
    failed, retries = wire.run(wire.session.allocate())
    # One challenge answered, and the 401 to the signed request stands (RFC 8489 §9.2.5).
    assert len(retries) == 1
    assert isinstance(failed, RequestFailed), failed
    assert failed.code is ErrorCode.UNAUTHORIZED and failed.method == Method.ALLOCATE
    assert failed.reason
    assert wire.session.pending() == ()


def test_other_errors_are_typed_and_signed() -> None:
    wire = link()
    wire.end(wire.session.allocate())
    again = wire.end(wire.session.allocate())  # the 5-tuple already has one: 437
    assert isinstance(again, RequestFailed) and again.code is ErrorCode.ALLOCATION_MISMATCH
    bad = wire.end(wire.session.channel_bind(0x3FFF, PEER))
    assert isinstance(bad, RequestFailed) and bad.code is ErrorCode.BAD_REQUEST


def test_a_response_with_bad_integrity_is_discarded_and_the_transaction_stays() -> None:
    wire = link()
    wire.end(wire.session.allocate())
    request = wire.session.refresh(600)
    assert request.transaction_id in wire.session.pending()
    forged = Message(Method.REFRESH, MessageClass.SUCCESS, request.transaction_id)
    (event,) = wire.feed(encode_message(forged))
    assert event == Discarded(request.transaction_id, DiscardReason.BAD_INTEGRITY)
    assert request.transaction_id in wire.session.pending()
    # The real answer still ends it (a retransmission of the same bytes).
    assert isinstance(wire.end(request), Refreshed)
    (late,) = wire.deliver(request.data)  # answered again from the response cache
    assert late == Discarded(request.transaction_id, DiscardReason.UNKNOWN_TRANSACTION)


# --- RFC 8489 SHA-256 and RFC 7635 ----------------------------------------------------------


def test_sha256_password_algorithm_and_mi_sha256() -> None:
    wire = link(MODERN)
    allocated, _ = wire.run(wire.session.allocate())
    assert isinstance(allocated, Allocated), allocated
    signed = decode_message(wire.sent[-1])
    assert signed.get(PasswordAlgorithm) == PasswordAlgorithm(PasswordAlgorithmId.SHA256)
    assert integrity_algorithms(wire.sent[-1]).sha256
    response = allocated.response
    assert response is not None
    assert wire.session.signing is not None and wire.session.signing.sha256
    assert isinstance(wire.end(wire.session.channel_bind(0x4000, PEER)), ChannelBound)


def test_userhash_when_the_server_offers_anonymity() -> None:
    wire = link(LongTermCredentials("alice", "secret", use_userhash=True))
    assert isinstance(wire.end(wire.session.allocate()), Allocated)
    signed = decode_message(wire.sent[-1])
    assert signed.get(UserHash) is not None and signed.get(Username) is None
    assert wire.server.allocations[wire.five_tuple].username == "alice"


def test_md5_only_client_names_md5_from_the_offer() -> None:
    wire = link(LongTermCredentials("alice", "secret", (PasswordAlgorithmId.MD5,)))
    assert isinstance(wire.end(wire.session.allocate()), Allocated)
    assert not integrity_algorithms(wire.sent[-1]).sha256


def test_bid_down_is_refused() -> None:
    # The cookie says PASSWORD-ALGORITHMS was sent; without it, the client must not retry.
    nonce = "obMatJos2gAAA" + "x" * 10
    with pytest.raises(TurnClientError, match="PASSWORD-ALGORITHMS"):
        signing_for(MODERN, Challenge(401, "example.org", nonce, parse_nonce_cookie(nonce)))


def test_access_token_credentials_sign_with_the_mac_key() -> None:
    signing = signing_for(
        AccessTokenCredentials("kid1", b"k" * 32, b"\x00\x02ab-token"),
        Challenge(401, "example.org", "n" * 20),
    )
    assert signing.key == b"k" * 32
    assert signing.identity == Username("kid1")
    assert [a.TYPE for a in signing.extra] == [0x001B]  # ACCESS-TOKEN


def test_misuse_raises_the_client_error() -> None:
    wire = link()
    with pytest.raises(TurnClientError):
        wire.session.request(Method.REFRESH, sign=True)  # nothing to sign with yet
    with pytest.raises(TurnClientError):
        wire.session.create_permission()
    with pytest.raises(TurnClientError):
        wire.session.channel_data(0x1000, b"x")


# --- hypothesis: only our own error types escape ---------------------------------------------


def _prepared_session(verify: bool) -> tuple[TurnClientSession, list[tuple[bytes, int]]]:
    """A session holding an allocation, with signed requests of every method pending."""
    wire = link(verify_responses=verify)
    wire.end(wire.session.allocate())
    requests = [
        wire.session.refresh(600),
        wire.session.create_permission(PEER),
        wire.session.channel_bind(0x4000, PEER),
        wire.session.binding(),
        wire.session.allocate(),
    ]
    return wire.session, [(r.transaction_id, r.method) for r in requests]


# Attributes an answer is made of: anything, and often what a challenge or a success carries.
_answer_attributes = stun_st.attributes() | st.one_of(
    *(
        stun_st.attributes_of(kind)
        for kind in (ErrorCodeAttribute, Realm, Nonce, PasswordAlgorithms, Lifetime,
                     XorRelayedAddress, XorMappedAddress, XorPeerAddress, Data)
    )
)  # fmt: skip


@st.composite
def _answers(draw: st.DrawFn, pending: list[tuple[bytes, int]], key: bytes) -> bytes:
    """A response (or indication) to one of the `pending` requests, random inside, often
    signed with the session's `key` so that it passes the integrity check."""
    tid, method = draw(st.sampled_from(pending))
    if draw(st.booleans()):
        method = draw(st.sampled_from(Method))
    message_class = draw(st.sampled_from(MessageClass))
    attributes = draw(st.lists(_answer_attributes, max_size=6))
    body = [
        a
        for a in attributes
        if not isinstance(a, (MessageIntegrity, MessageIntegritySha256, Fingerprint))
    ]
    message = Message(method, message_class, tid, tuple(body))
    signed_with = draw(st.sampled_from([None, key]))
    sha256 = draw(st.booleans())
    return encode_signed(
        message, signed_with, sha1=not sha256, sha256=sha256, fingerprint=draw(st.booleans())
    )


@settings(max_examples=400, deadline=None)
@given(st.data(), st.booleans(), st.booleans())
def test_random_bytes_raise_only_our_errors(
    data: st.DataObject, verify: bool, stream: bool
) -> None:
    session, pending = _prepared_session(verify)
    session.stream = stream
    assert session.signing is not None
    chunks = data.draw(
        st.lists(
            st.binary(max_size=120)
            | _answers(pending, session.signing.key)
            | stun_st.almost_valid_messages(),
            min_size=1,
            max_size=4,
        )
    )
    for chunk in chunks:
        try:
            if stream:
                session.receive_stream(chunk)
            else:
                session.receive_datagram(chunk)
        except (StunDecodeError, TurnClientError):
            pass
