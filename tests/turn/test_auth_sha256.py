"""RFC 8489 §9.2 security features in the TURN core: the nonce cookie, PASSWORD-ALGORITHMS
(and its bid-down check), SHA-256 keys, USERHASH and MESSAGE-INTEGRITY-SHA256, driven
with `Rfc8489Client`; legacy clients (`harness.Client`, MD5 + USERNAME + MI) on the same
server keep working."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.modern_client import Rfc8489Client
from tests.helpers.turn_harness import (
    Client,
    assert_error,
    assert_success,
    error_code,
    make_server,
    rest_credentials,
)
from trelay.stun.attributes import (
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    ThirdPartyAuthorization,
)
from trelay.stun.auth_attributes import PasswordAlgorithm, PasswordAlgorithms
from trelay.stun.codes import MessageClass, Method, PasswordAlgorithmId
from trelay.stun.credentials import long_term_key, opaque_string, userhash
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.integrity import integrity_algorithms
from trelay.stun.message import decode_message
from trelay.stun.nonce_cookie import (
    NONCE_COOKIE_LENGTH,
    SecurityFeature,
    make_nonce_cookie,
    parse_nonce_cookie,
)
from trelay.turn.auth import OFFERED_ALGORITHMS, LongTermAuthenticator
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import CredentialSources, StaticUsers
from trelay.turn.nonces import NonceStamper
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer

SHA256 = PasswordAlgorithmId.SHA256
MD5 = PasswordAlgorithmId.MD5
PEER = ("127.0.0.1", 40000)  # make_server allows loopback peers
BOTH = SecurityFeature.PASSWORD_ALGORITHMS | SecurityFeature.USERNAME_ANONYMITY


def modern(**kwargs: object) -> Rfc8489Client:
    return Rfc8489Client(make_server(), **kwargs)  # type: ignore[arg-type]


# --- the challenge ----------------------------------------------------------------------


def test_401_carries_cookie_nonce_and_password_algorithms() -> None:
    client = modern()
    client.authenticate()
    assert client.nonce is not None
    assert parse_nonce_cookie(client.nonce) == BOTH
    assert client.offered == PasswordAlgorithms(((SHA256, b""), (MD5, b"")))
    # No third-party authorization configured: no THIRD-PARTY-AUTHORIZATION.
    assert not any(isinstance(a, ThirdPartyAuthorization) for a in client.challenge_attributes)


def test_features_can_be_switched_off() -> None:
    server = make_server(security_features=False)
    client = Client(server)
    client.authenticate()
    assert client.nonce is not None and len(client.nonce) == 15
    assert parse_nonce_cookie(client.nonce) is None
    assert_success(client, client.allocate())
    # USERHASH needs a nonce that offered "Username anonymity": 400 without it.
    hashed = Rfc8489Client(server, address=("203.0.113.9", 1), algorithm=MD5)
    hashed.authenticate()
    assert hashed.offered is None
    assert_error(hashed, hashed.allocate(), 400, signed=False)


def test_stale_nonce_438_also_offers_the_algorithms() -> None:
    client = modern()
    client.authenticate()
    client.nonce = "obMatJos2wAAA" + "0" * 30  # cookie, but not a nonce we minted
    reply = client.allocate()
    assert_error(client, reply, 438, signed=False)
    assert reply is not None and reply.get(PasswordAlgorithms) == OFFERED_ALGORITHMS
    nonce = reply.get(Nonce)
    assert nonce is not None and parse_nonce_cookie(nonce.value) == BOTH


# --- clients that use the features -----------------------------------------------------


def test_sha256_userhash_allocation_is_signed_with_mi_sha256() -> None:
    client = modern()
    assert_success(client, client.allocate())
    assert client.signed_with_sha256()
    # Every later request of the allocation is answered the same way.
    for reply in (client.permit(PEER), client.bind(0x4000, PEER), client.refresh(600)):
        assert_success(client, reply)
        assert client.signed_with_sha256()
    assert client.server.allocations[client.five_tuple].username == "alice"


@pytest.mark.parametrize("mi_sha256", [True, False])
@pytest.mark.parametrize("use_userhash", [True, False])
@pytest.mark.parametrize("algorithm", [SHA256, MD5])
def test_every_combination_allocates(
    algorithm: PasswordAlgorithmId, use_userhash: bool, mi_sha256: bool
) -> None:
    client = modern(algorithm=algorithm, use_userhash=use_userhash, mi_sha256=mi_sha256)
    assert_success(client, client.allocate())
    assert client.last_raw is not None
    found = integrity_algorithms(client.last_raw)
    # RFC 8489 §9.2.4: the response uses the request's integrity algorithm.
    assert (found.sha256, found.sha1) == (mi_sha256, not mi_sha256)


def test_error_responses_to_sha256_requests_are_signed_with_mi_sha256() -> None:
    client = modern()
    assert_success(client, client.allocate())
    reply = client.allocate()
    assert_error(client, reply, 437, signed=True)
    assert client.signed_with_sha256()


def test_rest_credentials_work_with_sha256_but_not_with_userhash() -> None:
    client = modern(use_userhash=False)
    client.use_rest("carol", 1_700_000_000 + 3600)
    assert_success(client, client.allocate())
    assert client.signed_with_sha256()
    # The hash of `<expiry>:<user>` cannot be inverted: USERHASH finds no user (401).
    hashed = modern()
    hashed.use_rest("carol", 1_700_000_000 + 3600)
    assert_error(hashed, hashed.allocate(), 401, signed=False)


def test_legacy_and_modern_clients_share_a_server() -> None:
    server = make_server()
    legacy = Client(server, address=("203.0.113.20", 5000))
    fresh = Rfc8489Client(server, address=("203.0.113.21", 5000))
    assert_success(legacy, legacy.allocate())
    assert legacy.last_raw is not None
    assert integrity_algorithms(legacy.last_raw).sha1
    assert not integrity_algorithms(legacy.last_raw).sha256
    # The legacy client echoed a cookie nonce and ignored PASSWORD-ALGORITHMS.
    assert legacy.nonce is not None and legacy.nonce.startswith("obMatJos2")
    assert_success(fresh, fresh.allocate())
    assert fresh.signed_with_sha256()


# --- bid-down attempts and wrong keys ----------------------------------------------------

_ALTERED = [
    PasswordAlgorithms(((MD5, b""),)),  # SHA-256 removed from the 401 on the way
    PasswordAlgorithms(((MD5, b""), (SHA256, b""))),  # reordered
    PasswordAlgorithms(((SHA256, b""), (MD5, b""), (3, b""))),  # one added
    PasswordAlgorithms(((SHA256, b"\x01"), (MD5, b""))),  # parameters changed
    PasswordAlgorithms(()),
]


@pytest.mark.parametrize("altered", _ALTERED)
def test_altered_password_algorithms_is_400(altered: PasswordAlgorithms) -> None:
    client = modern(algorithm=MD5)
    client.authenticate()
    client.offered = altered
    assert_error(client, client.allocate(), 400, signed=False)
    assert client.server.allocation_count == 0


def test_password_algorithm_without_the_list_is_400() -> None:
    client = modern()
    client.authenticate()
    client.offered = None
    assert_error(client, client.allocate(), 400, signed=False)


def test_password_algorithm_not_offered_is_400() -> None:
    client = modern(chosen=PasswordAlgorithm(3))
    assert_error(client, client.allocate(), 400, signed=False)


def test_list_without_a_choice_is_400() -> None:
    server = make_server()
    client = Rfc8489Client(server, algorithm=MD5)
    client.authenticate()
    offered = client.offered
    client.send_algorithms = False  # then add only the list back by hand
    request = client.request(Method.ALLOCATE, RequestedTransport(17))
    assert offered is not None
    request = type(request)(
        request.method, request.message_class, request.transaction_id,
        (*request.attributes, offered),
    )  # fmt: skip
    assert_error(client, client.send(request), 400, signed=False)


def test_no_algorithm_attributes_means_md5() -> None:
    # §9.2.4: neither attribute present is processed as MD5, even under a cookie nonce.
    client = modern(algorithm=MD5, send_algorithms=False)
    assert_success(client, client.allocate())
    sha = modern(algorithm=SHA256, send_algorithms=False)
    assert_error(sha, sha.allocate(), 401, signed=False)


@pytest.mark.parametrize(("declared", "signed_with"), [(SHA256, MD5), (MD5, SHA256)])
def test_key_of_the_other_algorithm_is_401(
    declared: PasswordAlgorithmId, signed_with: PasswordAlgorithmId
) -> None:
    client = modern(algorithm=declared)
    client.key_override = long_term_key("alice", client.realm, "secret", signed_with)
    reply = client.allocate()
    assert_error(client, reply, 401, signed=False)
    assert reply is not None and reply.get(PasswordAlgorithms) == OFFERED_ALGORITHMS


def test_wrong_password_and_unknown_userhash_are_401() -> None:
    client = modern(password="wrong")
    assert_error(client, client.allocate(), 401, signed=False)
    nobody = modern(username="nobody")
    assert_error(nobody, nobody.allocate(), 401, signed=False)


@pytest.mark.parametrize("features", [SecurityFeature.NONE, SecurityFeature.USERNAME_ANONYMITY])
def test_cookie_altered_or_stripped_makes_the_nonce_stale(features: SecurityFeature) -> None:
    client = modern(algorithm=MD5, use_userhash=False, send_algorithms=False)
    client.authenticate()
    assert client.nonce is not None
    body = client.nonce[NONCE_COOKIE_LENGTH:]
    client.nonce = (make_nonce_cookie(features) if features else "") + body
    assert_error(client, client.allocate(), 438, signed=False)


def test_nonce_stamper_features_round_trip() -> None:
    stamper = NonceStamper(b"k" * 32, lifetime=60)
    client = ("203.0.113.5", 1)
    for features in (SecurityFeature.NONE, BOTH, SecurityFeature.PASSWORD_ALGORITHMS):
        nonce = stamper.mint(client, 1000.0, features)
        assert stamper.features(nonce, client, 1000.0) == features
        assert stamper.is_valid(nonce, client, 1060.0)
        assert stamper.features(nonce, client, 1061.0) is None
        assert stamper.features(nonce, ("203.0.113.5", 2), 1000.0) is None


# --- hypothesis --------------------------------------------------------------------------


def _opaque(text: str) -> bool:
    try:
        opaque_string(text)
    except ValueError:
        return False
    return True


# Mostly valid OpaqueString characters, so that little is filtered out.
_alphabet = st.characters(categories=("Lu", "Ll", "Lo", "Nd", "Po", "Sm", "Sc", "Zs"))
_credential_text = st.text(_alphabet, min_size=1, max_size=24).filter(_opaque)
_realm_text = _credential_text


@settings(max_examples=60, deadline=None)
@given(_credential_text, _credential_text, _realm_text)
def test_userhash_lookup_and_sha256_keys_round_trip(
    username: str, password: str, realm: str
) -> None:
    users = StaticUsers({username: password}, realm)
    assert users.username_for_hash(userhash(username, realm)) == username
    (credential,) = users.candidates(username, SHA256)
    assert credential.key == long_term_key(username, realm, password, SHA256)
    assert len(credential.key) == 32


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_credential_text, _credential_text, _realm_text, st.booleans())
def test_random_credentials_allocate_with_sha256_and_userhash(
    username: str, password: str, realm: str, mi_sha256: bool
) -> None:
    sources = CredentialSources(StaticUsers({username: password}, realm))
    auth = LongTermAuthenticator(realm, sources, NonceStamper(b"n" * 32, 600))
    server = TurnServer(
        TurnConfig(realm=realm, relay_host="198.51.100.1"),
        auth,
        PeerPolicy.from_strings(allow_loopback=True),
        wall_clock=lambda: 1_700_000_000.0,
        rng=random.Random(3),
    )
    client = Rfc8489Client(
        server, username=username, password=password, realm=realm, mi_sha256=mi_sha256
    )
    reply = client.allocate()
    assert reply is not None and reply.message_class is MessageClass.SUCCESS, reply
    assert client.signed()
    assert server.allocations[client.five_tuple].username == username


def _signed_request(client: Rfc8489Client) -> bytes:
    client.authenticate()
    request = client.request(Method.ALLOCATE, RequestedTransport(17), Lifetime(600))
    return client.encode(request)


def _regions_that_only_the_mac_protects(data: bytes) -> list[range]:
    """Transaction id, REQUESTED-TRANSPORT, LIFETIME, USERHASH and MI-SHA256 values."""
    regions = [range(8, 20)]
    offset = 20
    while offset < len(data):
        kind = int.from_bytes(data[offset : offset + 2], "big")
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if kind in (0x0019, 0x000D, 0x001E, 0x001C):
            regions.append(range(offset + 4, offset + 4 + length))
        offset += 4 + length + (-length % 4)
    return regions


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_bit_flip_in_a_protected_value_is_401(data: st.DataObject) -> None:
    # No FINGERPRINT: a flipped message would otherwise be discarded as not-STUN (§7.3).
    client = modern(fingerprint=False)
    raw = bytearray(_signed_request(client))
    region = data.draw(st.sampled_from(_regions_that_only_the_mac_protects(bytes(raw))))
    index = data.draw(st.sampled_from(region))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    actions = client.send_raw(bytes(raw))
    (reply,) = [decode_message(a.data) for a in actions if hasattr(a, "data")]
    attribute = reply.get(ErrorCodeAttribute)
    assert attribute is not None and attribute.code == 401, reply
    assert reply.get(Realm) is not None and reply.get(Nonce) is not None
    assert client.server.allocation_count == 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_bit_flip_anywhere_never_allocates(data: st.DataObject) -> None:
    client = modern(fingerprint=False)
    raw = bytearray(_signed_request(client))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    for action in client.send_raw(bytes(raw)):
        reply = decode_message(getattr(action, "data", b""))
        if reply.method == Method.BINDING:
            continue  # the flip turned the method into Binding, which needs no credentials
        assert reply.message_class is not MessageClass.SUCCESS
        assert error_code(reply) in (400, 401, 438)
    assert client.server.allocation_count == 0


def test_rest_helper_is_unchanged() -> None:
    # The legacy path of the harness still derives MD5 keys for REST credentials.
    username, password = rest_credentials("dave", 1_700_003_600)
    client = Client(make_server(), username=username, password=password)
    assert_success(client, client.allocate())
