"""coturn's 2025-2026 security advisories, as regression tests where they apply to trelay.

Each test names the advisory it stands for; the texts were read from the public CVE
records (NVD, the Debian security tracker, GHSA pages):

- CVE-2026-27624 (GHSA-j8mm-mpf8-gvjg, coturn < 4.9.0): XOR-PEER-ADDRESS
  `::ffff:127.0.0.1` in CreatePermission/ChannelBind got 200 although 127.0.0.0/8 was
  denied (IPv4-mapped forms not unwrapped). Here: every mapped, translated, NAT64 and
  6to4 form of a denied address gets 403 on an IPv6 allocation (443 on an IPv4 one: a
  family mismatch, never 200), on a real `trelay serve` with its default peer policy.
  The requests only ask for permissions; nothing is relayed, and the test and its node
  run in a private network namespace (`tests.helpers.private_network`), so a
  permission wrongly granted could not reach the metadata or a private address anyway.
- STUN length truncation breaking TCP framing (issue 15): over a stream the header's
  length field *is* the framing (RFC 8489 §6.2.2, RFC 8656 §12.5). Decided: a frame
  whose content disagrees with its header length is answered 400 and the next message,
  which starts where the header said, is answered; a header whose length cannot be
  right (not a multiple of 4, RFC 8489 §5) or that desynchronizes the stream ends the
  connection cleanly (EOF), and the node serves on. A length 8 bytes off leaves 'xxxx'
  where a header should be: ChannelData on channel 0x7878 (in the RFC 5766 range trelay
  accepts for coturn's uclient) claiming 30840 bytes; a channel the connection has not
  bound is lost framing, and the connection is closed on that header at once
  (`trelay.node.stream_listener`), not left waiting for the idle timeout.
- CVE-2026-43994 (coturn < 4.10.0): `decode_oauth_token_gcm()` copied the token's
  attacker-chosen nonce_len before the AES-GCM tag was checked. Here: an RFC 7635
  ACCESS-TOKEN whose nonce length overruns is a decode error, and a token whose tag does
  not verify is refused before its plaintext is looked at (decode_grant never runs);
  a JWT of the token API with malformed claims under a bad signature gets the signature
  refusal, not a claims error.
- CVE-2025-69217 (Fedora FEDORA-2026-c75d08ab90; predictable random numbers: an
  authentication bypass and relay-port prediction). Here: the nonces of successive
  challenges are distinct and HMAC-tagged (a nonce with one character changed is
  refused), and the relay port pool is shuffled by `random.SystemRandom` (os.urandom):
  seeding Python's global generator does not change the order.
- CVE-2026-40613 (coturn < 4.10.0): misaligned attribute reads crashed ARM64 servers on
  one crafted packet. Not applicable as such (Python slices bytes); odd-aligned and
  overrunning attributes are part of the fuzzer in test_fuzz_node.py.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.helpers.private_network import private_network
from tests.reliability.node_process import (
    TIMEOUT,
    Node,
    binding,
    challenge,
    exchange,
    open_allocation,
    running_node,
    signed_request,
    udp_socket,
)
from trelay.config.api_keys import ApiKey, ApiKeys
from trelay.credentials.access_tokens import TokenError, TokenReason, verify_token
from trelay.credentials.token_crypto import mint_access_token
from trelay.node.token_cipher import AesGcmTokenCipher
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import Nonce, RequestedAddressFamily, RequestedTransport, Software
from trelay.stun.auth_attributes import AccessToken
from trelay.stun.codes import AddressFamily, MessageClass, Method
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.errors import StunDecodeError
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id
from trelay.turn import third_party
from trelay.turn.port_pool import RelayPortPool

# Denied addresses in the forms CVE-2026-27624 and issue 15 name: IPv4-mapped loopback
# and unspecified, IPv4-translated (::ffff:0:0:0/96), NAT64 and 6to4 wrappings of
# loopback, the metadata address and a private address, mapped; plain IPv6 loopback.
MAPPED_FORMS = (
    "::ffff:127.0.0.1",
    "::ffff:127.1.2.3",
    "::ffff:0.0.0.0",
    "::ffff:0:7f00:1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::1",
    "::",
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The default peer policy (no --allow-loopback-peers), IPv4 and IPv6 relays."""
    workdir = Path(tmp_path_factory.mktemp("advisories"))
    with running_node(workdir, "--relay-address-v6", "::1", loopback_peers=False) as running:
        yield running


def _code(message: Message) -> int | None:
    error = message.get(ErrorCodeAttribute)
    return None if error is None else error.code


# --- CVE-2026-27624: IPv4-mapped peers ------------------------------------------------------


@private_network
@pytest.mark.parametrize("family", [AddressFamily.IPV4, AddressFamily.IPV6])
@pytest.mark.parametrize("method", [Method.CREATE_PERMISSION, Method.CHANNEL_BIND])
def test_mapped_forms_of_denied_peers_are_refused(
    node: Node, family: AddressFamily, method: Method
) -> None:
    with udp_socket() as sock:
        auth, key, _ = open_allocation(sock, node.udp, RequestedAddressFamily(family))
        for channel, host in enumerate(MAPPED_FORMS, start=0x4000):
            extra = () if method is Method.CREATE_PERMISSION else (_channel(channel),)
            reply = signed_request(
                sock, node.udp, auth, key, method, XorPeerAddress(host, 9), *extra
            )
            # 403 on the IPv6 relay; an IPv4 relay cannot reach an IPv6 peer at all (443).
            expected = 403 if family is AddressFamily.IPV6 else 443
            assert _code(reply) == expected, (host, reply)
    assert node.log_problems() == []


def _channel(number: int) -> object:
    from trelay.stun.attributes import ChannelNumber

    return ChannelNumber(number)


# --- STUN length vs TCP framing ------------------------------------------------------------


def _binding_bytes(tid: bytes | None = None) -> tuple[bytes, bytes]:
    tid = new_transaction_id() if tid is None else tid
    return encode_message(Message(Method.BINDING, MessageClass.REQUEST, tid, ())), tid


def _with_software() -> bytearray:
    request = Message(
        Method.BINDING, MessageClass.REQUEST, new_transaction_id(), (Software("x" * 20),)
    )
    return bytearray(encode_message(request))


def _replies(server: tuple[str, int], data: bytes) -> tuple[list[Message], bool]:
    """Send `data` on a fresh connection; (the messages read, whether the node closed it).

    Reads until the node closes or stays silent for TIMEOUT (bounded)."""
    with socket.create_connection(server, timeout=TIMEOUT) as conn:
        conn.sendall(data)
        received, closed = b"", False
        for _ in range(1000):
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    messages, offset = [], 0
    while offset + 20 <= len(received):
        end = offset + 20 + struct.unpack("!H", received[offset + 2 : offset + 4])[0]
        messages.append(decode_message(received[offset:end]))
        offset = end
    return messages, closed


def test_an_attribute_overrunning_its_frame_leaves_the_next_message_framed(node: Node) -> None:
    """Header length right, an attribute inside claims more: 400, then the next request
    (which starts where the header said) is answered."""
    bad = _with_software()
    bad[22:24] = struct.pack("!H", 200)  # SOFTWARE's length runs past the frame
    good, tid = _binding_bytes()
    messages, _ = _replies(node.tcp, bytes(bad) + good)
    assert [_code(m) for m in messages] == [400, None]
    assert messages[1].transaction_id == tid
    assert messages[1].message_class is MessageClass.SUCCESS


@pytest.mark.parametrize("delta", [-2, +2])
def test_a_header_length_that_cannot_be_right_ends_the_connection(node: Node, delta: int) -> None:
    """Not a multiple of 4 (RFC 8489 §5): the stream cannot be resynchronized, so it is
    closed, nothing is guessed."""
    bad = _with_software()
    bad[2:4] = struct.pack("!H", len(bad) - 20 + delta)
    good, _ = _binding_bytes()
    messages, closed = _replies(node.tcp, bytes(bad) + good + good)
    assert closed
    assert all(m.message_class is not MessageClass.SUCCESS for m in messages)
    binding(node.udp)
    assert node.log_problems() == []


@pytest.mark.parametrize("delta", [-8, +8])
def test_a_header_length_that_lies_by_a_word_does_not_hang_the_stream(
    node: Node, delta: int
) -> None:
    """-8: the message's last 8 bytes ('x' * 8) fall outside its frame; +8: the frame
    swallows the next request's first 8 bytes, leaving its transaction id (made to start
    with 'xx') where a header should be. Either way the next frame starts 0x7878: the
    connection is closed (before `_replies` gives up after TIMEOUT of silence), not left
    waiting; the node serves on."""
    bad = _with_software()
    bad[2:4] = struct.pack("!H", len(bad) - 20 + delta)
    swallowed, _ = _binding_bytes(b"xx" + new_transaction_id()[2:])
    good, tid = _binding_bytes()
    data = bytes(bad) + (swallowed if delta > 0 else b"") + good
    messages, closed = _replies(node.tcp, data)
    assert closed
    assert all(m.transaction_id != tid for m in messages)  # nothing guessed after the loss
    binding(node.udp)
    assert node.log_problems() == []


# --- CVE-2026-43994: token contents before the signature -----------------------------------


ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"
API_KEY = ApiKey("SK" + "0123456789abcdef" * 2, "k" * 40, ACCOUNT)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "never", "grants": 5},
        {"exp": float("nan"), "nbf": "x", "grants": {"identity": "\x00" * 600}},
        {"sub": ACCOUNT, "grants": {"identity": 7}, "exp": None, "iat": []},
    ],
)
def test_a_jwt_with_malformed_claims_and_a_bad_signature_gets_the_signature_refusal(
    claims: dict[str, object],
) -> None:
    """Only `iss` (which key to check with) is read before the HMAC is verified."""
    token = jwt.encode(
        {"iss": API_KEY.sid, **claims},
        "not the key's secret" * 2,
        algorithm="HS256",
        headers={"kid": API_KEY.sid},
    )
    with pytest.raises(TokenError) as refused:
        verify_token(token, ApiKeys((API_KEY,)), 1_800_000_000.0)
    assert refused.value.reason is TokenReason.BAD_SIGNATURE


def test_an_access_token_whose_nonce_length_overruns_is_a_decode_error() -> None:
    """The coturn overflow's input: nonce_length 0xFFFF in a short ACCESS-TOKEN."""
    value = struct.pack("!H", 0xFFFF) + bytes(40)
    with pytest.raises(StunDecodeError):
        AccessToken.decode_value(value, new_transaction_id())


def test_an_access_token_with_a_bad_tag_is_refused_before_its_plaintext_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = bytes(range(32))
    value, _ = mint_access_token("kid", key, "turn.example", 600, 1_800_000_000.0)
    token = AccessToken.decode_value(value, b"")
    forged = AccessToken(token.nonce, token.encrypted_block[:-1] + b"\x00")

    def never(plaintext: bytes) -> object:
        raise AssertionError("the plaintext was interpreted before the tag verified")

    authorizer = third_party.ThirdPartyAuthorizer(
        "turn.example", "https://auth.example", {"kid": key}, AesGcmTokenCipher()
    )
    assert authorizer.open(token, "kid", 1_800_000_000.0) is not None  # the control
    monkeypatch.setattr(third_party, "decode_grant", never)
    assert authorizer.open(forged, "kid", 1_800_000_000.0) is None


# --- CVE-2025-69217: nonce and relay port randomness -----------------------------------------


def test_successive_challenges_to_different_clients_carry_distinct_nonces(node: Node) -> None:
    """Nonces are stateless (issue 15: a challenge costs no state): expiry and an HMAC of
    the client's address under the node's secret key, so one address gets the same nonce
    again within a second (by design), and every other address a different one that no
    one without the key can compute (the next test)."""
    nonces = set()
    for _ in range(10):
        with udp_socket() as sock:
            nonces.add(_challenge_nonce(sock, node)[1])
    assert len(nonces) == 10


def _challenge_nonce(sock: socket.socket, node: Node) -> tuple[tuple[object, ...], str]:
    auth, _ = challenge(sock, node.udp)
    nonce = next(a for a in auth if isinstance(a, Nonce))
    return auth, nonce.value


@pytest.mark.parametrize("position", [0, 5, -1])
def test_a_nonce_with_one_character_changed_is_refused(node: Node, position: int) -> None:
    """The nonce is HMAC-tagged: a guessed or edited one is not accepted (401/438)."""
    with udp_socket() as sock:
        auth, key = challenge(sock, node.udp)
        nonce = next(a for a in auth if isinstance(a, Nonce)).value
        changed = nonce[:position] + ("A" if nonce[position] != "A" else "B")
        changed += nonce[position + 1 :] if position != -1 else ""
        forged = tuple(Nonce(changed) if isinstance(a, Nonce) else a for a in auth)
        request = Message(
            Method.ALLOCATE,
            MessageClass.REQUEST,
            new_transaction_id(),
            (RequestedTransport(17), *forged),
        )
        reply = exchange(sock, node.udp, encode_signed(request, key))
    assert _code(reply) in (401, 438), reply


def test_relay_ports_come_from_the_system_random_source() -> None:
    """Seeding Python's (predictable) global generator does not fix the port order."""
    orders = []
    for _ in range(2):
        random.seed(1234)
        pool = RelayPortPool(49152, 65535)
        orders.append([pool.acquire() for _ in range(8)])
    assert orders[0] != orders[1]
    assert orders[0] != list(range(49152, 49160))
