"""RFC 7635 third-party authorization in the TURN core: tokens minted by
`trelay.credentials.token_crypto` allocate through the pure core; tampered, misaddressed, expired or
unknown-kid tokens get 401 with REALM and NONCE; random bit flips never raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.modern_client import TokenClient
from tests.helpers.turn_harness import (
    Client,
    Clock,
    assert_error,
    assert_success,
    error_code,
    make_server,
)
from trelay.credentials.token_crypto import mint_access_token
from trelay.node.token_cipher import AesGcmTokenCipher
from trelay.stun.attributes import Nonce, Realm, RequestedTransport, ThirdPartyAuthorization
from trelay.stun.auth_attributes import AccessToken
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import decode_message
from trelay.turn.config import TurnConfig
from trelay.turn.server import TurnServer
from trelay.turn.third_party import (
    ThirdPartyAuthorizer,
    TokenGrant,
    decode_grant,
    decode_timestamp,
    encode_grant,
    encode_timestamp,
    token_identity,
)

KID = "as-2024-key"
KEY256 = bytes(range(32))
KID128 = "as-a128gcm"
KEY128 = bytes(range(100, 116))
SERVER_NAME = "turn.example.org"
AS_NAME = "https://as.example.org"
NOW = 1_700_000_000.0


def token_server(clock: Clock | None = None, config: TurnConfig | None = None) -> TurnServer:
    authorizer = ThirdPartyAuthorizer(
        SERVER_NAME, AS_NAME, {KID: KEY256, KID128: KEY128}, AesGcmTokenCipher()
    )
    return make_server(config=config, clock=clock or Clock(NOW), third_party=authorizer)


def token_client(
    server: TurnServer,
    *,
    kid: str = KID,
    key: bytes = KEY256,
    server_name: str = SERVER_NAME,
    lifetime: int = 3600,
    now: float = NOW,
    address: tuple[str, int] = ("203.0.113.5", 50000),
) -> TokenClient:
    token, mac_key = mint_access_token(kid, key, server_name, lifetime, now)
    return TokenClient(server, address=address, username=kid, token=token, mac_key=mac_key)


def test_401_announces_the_authorization_server() -> None:
    client = token_client(token_server())
    client.authenticate()
    found = [a for a in client.challenge_attributes if isinstance(a, ThirdPartyAuthorization)]
    assert found == [ThirdPartyAuthorization(AS_NAME)]


@pytest.mark.parametrize(("kid", "key"), [(KID, KEY256), (KID128, KEY128)])
def test_minted_token_allocates_and_responses_use_the_mac_key(kid: str, key: bytes) -> None:
    client = token_client(token_server(), kid=kid, key=key)
    assert_success(client, client.allocate())  # verified with the mac_key
    allocation = client.server.allocations[client.five_tuple]
    assert allocation.username == kid
    assert allocation.identity == token_identity(kid, client.mac_key)
    assert_success(client, client.refresh(600))


def test_token_with_mi_sha256_gets_mi_sha256_responses() -> None:
    client = token_client(token_server())
    client.mi_sha256 = True
    assert_success(client, client.allocate())
    assert client.signed_with_sha256()


def test_long_term_users_still_work_beside_tokens() -> None:
    server = token_server()
    assert_success(legacy := Client(server, address=("203.0.113.30", 1)), legacy.allocate())
    client = token_client(server)
    assert_success(client, client.allocate())


def test_tampered_ciphertext_is_401() -> None:
    client = token_client(token_server())
    client.token = client.token[:-1] + bytes([client.token[-1] ^ 0x01])
    assert_error(client, client.allocate(), 401, signed=False)


def test_wrong_server_name_is_401() -> None:
    client = token_client(token_server(), server_name="other.example.org")
    assert_error(client, client.allocate(), 401, signed=False)


def test_expired_lifetime_is_401() -> None:
    clock = Clock(NOW)
    server = token_server(clock)
    client = token_client(server, lifetime=60)
    assert_success(client, client.allocate())
    # The lifetime has passed: a refresh (and a new token-less retry) is refused.
    clock.unix = NOW + 60
    reply = client.refresh(600)
    assert_error(client, reply, 401, signed=False)
    other = token_client(server, lifetime=60, address=("203.0.113.6", 1))
    assert_error(other, other.allocate(), 401, signed=False)


def test_token_from_the_future_is_401() -> None:
    client = token_client(token_server(), now=NOW + 3600)
    assert_error(client, client.allocate(), 401, signed=False)


def test_unknown_kid_and_wrong_key_are_401() -> None:
    server = token_server()
    stranger = token_client(server, kid="nobody")
    assert_error(stranger, stranger.allocate(), 401, signed=False)
    forged = token_client(server, key=bytes(32), address=("203.0.113.7", 1))
    assert_error(forged, forged.allocate(), 401, signed=False)


def test_mac_key_mismatch_is_401() -> None:
    client = token_client(token_server())
    client.mac_key = bytes(32)  # the token is fine, the MESSAGE-INTEGRITY is not
    assert_error(client, client.allocate(), 401, signed=False)


def test_withdrawn_kid_is_401() -> None:
    server = token_server()
    client = token_client(server)
    assert server.auth.third_party is not None
    server.auth.third_party.replace_keys({KID128: KEY128})
    assert_error(client, client.allocate(), 401, signed=False)


def test_quota_counts_each_token_on_its_own() -> None:
    server = token_server(config=TurnConfig(realm="example.org", user_quota=1))
    first = token_client(server, address=("203.0.113.8", 1))
    second = token_client(server, address=("203.0.113.9", 1))
    assert_success(first, first.allocate())
    assert_success(second, second.allocate())  # another token: another identity
    # The same token from a second 5-tuple hits its quota.
    again = TokenClient(
        server, address=("203.0.113.10", 1), username=KID, token=first.token, mac_key=first.mac_key
    )
    assert_error(again, again.allocate(), 486, signed=True)


def test_without_third_party_configured_tokens_are_just_unknown_users() -> None:
    client = token_client(make_server(clock=Clock(NOW)))
    client.authenticate()
    assert not any(isinstance(a, ThirdPartyAuthorization) for a in client.challenge_attributes)
    assert_error(client, client.allocate(), 401, signed=False)


# --- the token format ---------------------------------------------------------------------


def test_timestamp_is_48_16_fixed_point() -> None:
    assert encode_timestamp(1.5) == (1 << 16) | 32000
    assert decode_timestamp((NOW_INT := int(NOW)) << 16) == NOW_INT
    assert abs(decode_timestamp(encode_timestamp(NOW + 0.25)) - (NOW + 0.25)) < 1 / 64000
    with pytest.raises(ValueError, match="48-bit"):
        encode_timestamp(-1)


def test_grant_round_trip_and_bad_lengths() -> None:
    grant = TokenGrant(b"m" * 20, NOW, 600)
    plain = encode_grant(grant)
    assert len(plain) == 2 + 20 + 8 + 4
    assert decode_grant(plain) == grant
    for bad in (b"", b"\x00", plain[:-1], plain + b"\x00", b"\x00\x00" + plain[22:]):
        assert decode_grant(bad) is None


def test_cipher_refuses_bad_sizes_without_raising() -> None:
    cipher = AesGcmTokenCipher()
    assert cipher.decrypt(b"short", b"n" * 12, b"x" * 32, b"") is None
    assert cipher.decrypt(KEY256, b"", b"x" * 32, b"") is None
    assert cipher.decrypt(KEY256, b"n" * 12, b"", b"") is None


def test_mint_validates_its_arguments() -> None:
    for kid, key, lifetime in (("", KEY256, 60), ("k" * 510, KEY256, 60), (KID, b"x" * 24, 60)):
        with pytest.raises(ValueError):
            mint_access_token(kid, key, SERVER_NAME, lifetime, NOW)
    with pytest.raises(ValueError, match="lifetime"):
        mint_access_token(KID, KEY256, SERVER_NAME, 0, NOW)
    token, mac_key = mint_access_token(KID, KEY256, SERVER_NAME, 60, NOW)
    parsed = AccessToken.decode_value(token, bytes(12))
    assert len(parsed.nonce) == 12 and len(mac_key) == 32
    authorizer = ThirdPartyAuthorizer(SERVER_NAME, AS_NAME, {KID: KEY256}, AesGcmTokenCipher())
    credential = authorizer.open(parsed, KID, NOW)
    assert credential is not None and credential.key == mac_key
    assert credential.expires_at == pytest.approx(NOW + 60)


# --- hypothesis -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_bit_flips_in_the_token_are_refused(data: st.DataObject) -> None:
    client = token_client(token_server())
    index = data.draw(st.integers(0, len(client.token) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(client.token)
    flipped[index] ^= 1 << bit
    client.token = bytes(flipped)
    client.authenticate()
    actions = client.send_raw(
        client.encode(client.request(Method.ALLOCATE, RequestedTransport(17)))
    )
    (reply,) = [decode_message(a.data) for a in actions if hasattr(a, "data")]
    assert reply.message_class is MessageClass.ERROR
    if index >= 2:
        # Nonce or ciphertext: the AEAD tag fails (a shorter nonce is refused too).
        assert error_code(reply) == 401
        assert reply.get(Realm) is not None and reply.get(Nonce) is not None
    else:
        # The nonce length field: a length past the end does not even decode (400).
        assert error_code(reply) in (400, 401)
    assert client.server.allocation_count == 0
