"""How much larger than the request is every answer to an unauthenticated request
(issue 15, deliver 4): anybody can send one from a forged source, so the relay must not
be a better reflector than it needs to be.

Measured through the pure core with the default realm ("trelay.local") and the RFC 8489
security features on (the nonce cookie and PASSWORD-ALGORITHMS). Sizes are
deterministic. The bound is coturn 4.6's, measured on its own answers to the same
requests with the same realm: its 401 to a 28-byte Allocate is 100 bytes, and any
20-byte request of an authenticated method gets 100 bytes (5.0x). Run with `-s` for the
table of figures.
"""

from __future__ import annotations

import struct

import pytest

from trelay.stun.attributes import (
    MessageIntegrity,
    Nonce,
    Realm,
    RequestedTransport,
    Software,
    Username,
)
from trelay.stun.auth_attributes import PasswordAlgorithms
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn.actions import SendToClient
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.auth import LongTermAuthenticator
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import CredentialSources, StaticUsers
from trelay.turn.nonces import NonceStamper
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer

REALM = TurnConfig().realm  # "trelay.local", the default, as in the coturn comparison
COTURN_ALLOCATE_401 = 100  # bytes, coturn's 401 to a 28-byte Allocate
COTURN_LARGEST_FACTOR = 100 / 20  # coturn's 401 to a 20-byte Refresh, Allocate, ...
TID = bytes(range(12))


def _server() -> TurnServer:
    auth = LongTermAuthenticator(
        REALM, CredentialSources(StaticUsers({"alice": "secret"}, REALM)), NonceStamper(b"n" * 32)
    )
    return TurnServer(TurnConfig(), auth, PeerPolicy(), wall_clock=lambda: 1_700_000_000.0)


def _request(method: int, *attributes: object, fingerprint: bool = False) -> bytes:
    message = Message(method, MessageClass.REQUEST, TID, tuple(attributes))  # type: ignore[arg-type]
    return encode_signed(message, None) if fingerprint else encode_message(message)


def _header(method: int) -> bytes:
    return struct.pack("!HHI12s", method, 0, 0x2112A442, TID)


def _cases() -> dict[str, bytes]:
    server = _server()
    nonce = server.auth.nonces.mint(("192.0.2.5", 5000), 1_700_000_000.0)
    stale = Nonce("x" * len(nonce))
    signed_bad = Message(
        Method.ALLOCATE, MessageClass.REQUEST, TID,
        (RequestedTransport(17), Username("alice"), Realm(REALM), stale),
    )  # fmt: skip
    wrong = Message(
        Method.ALLOCATE, MessageClass.REQUEST, TID,
        (RequestedTransport(17), Username("alice"), Realm(REALM), Nonce(nonce)),
    )  # fmt: skip
    no_username = Message(Method.REFRESH, MessageClass.REQUEST, TID, (Realm(REALM), Nonce(nonce)))
    return {
        "Binding": _header(Method.BINDING),
        "Binding with FINGERPRINT": _request(Method.BINDING, fingerprint=True),
        "Allocate, header only": _header(Method.ALLOCATE),
        "Allocate (REQUESTED-TRANSPORT)": _request(Method.ALLOCATE, RequestedTransport(17)),
        "Allocate with FINGERPRINT": _request(
            Method.ALLOCATE, RequestedTransport(17), fingerprint=True
        ),
        "Refresh, header only": _header(Method.REFRESH),
        "CreatePermission, header only": _header(Method.CREATE_PERMISSION),
        "ChannelBind, header only": _header(Method.CHANNEL_BIND),
        "unknown method": _header(0x0123 & 0x3EEF),
        "undecodable attribute": _header(Method.ALLOCATE)[:2]
        + struct.pack("!H", 8)
        + _header(Method.ALLOCATE)[4:]
        + struct.pack("!HH", 0x0006, 40)
        + b"\0" * 4,
        "stale nonce (438)": encode_signed(signed_bad, b"k" * 16),
        "wrong credentials (401)": encode_signed(wrong, b"k" * 16),
        "integrity without USERNAME (400)": encode_signed(no_username, b"k" * 16),
    }


def _answer(data: bytes, client: tuple[str, int] = ("192.0.2.5", 5000)) -> bytes:
    server = _server()
    five_tuple = FiveTuple(ClientTransport.UDP, client, ("192.0.2.1", 3478))
    actions = server.handle_message(data, five_tuple, 0.0)
    sent = [a.data for a in actions if isinstance(a, SendToClient)]
    assert len(sent) == 1
    return sent[0]


def test_the_401_to_a_28_byte_allocate_is_no_larger_than_coturn_s() -> None:
    request = _request(Method.ALLOCATE, RequestedTransport(17))
    assert len(request) == 28
    answer = _answer(request)
    assert len(answer) <= COTURN_ALLOCATE_401
    # Only what RFC 8489 §9.2.4 asks for: no SOFTWARE, no FINGERPRINT unasked.
    reply = decode_message(answer)
    assert reply.get(Software) is None and reply.get(MessageIntegrity) is None
    assert reply.get(Realm) is not None and reply.get(Nonce) is not None
    assert reply.get(PasswordAlgorithms) is not None  # the cookie offers SHA-256
    assert answer[-8:-6] != b"\x80\x28"  # no FINGERPRINT attribute


@pytest.mark.parametrize("client", [("192.0.2.5", 5000), ("2001:db8::5", 5000)])
def test_no_answer_to_an_unauthenticated_request_reflects_more_than_coturn(
    client: tuple[str, int],
) -> None:
    rows = []
    for name, request in _cases().items():
        answer = _answer(request, client)
        factor = len(answer) / len(request)
        rows.append(f"{name:36s} {len(request):4d} B -> {len(answer):4d} B  {factor:4.2f}x")
        assert factor <= COTURN_LARGEST_FACTOR, rows[-1]
    print("\n".join(["", f"client {client[0]}", *rows]))


def test_a_fingerprinted_request_gets_a_fingerprinted_challenge() -> None:
    answer = _answer(_request(Method.ALLOCATE, RequestedTransport(17), fingerprint=True))
    assert answer[-8:-6] == b"\x80\x28"
