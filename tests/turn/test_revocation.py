"""The revocation hook of `LongTermAuthenticator` (`is_revoked(identity, unix_now)`):
a revoked identity's Allocate and Refresh get a signed 401 "Credentials revoked" with
REALM and NONCE; other requests, deletions and other identities are unaffected."""

from __future__ import annotations

from tests.helpers.modern_client import Rfc8489Client, TokenClient
from tests.helpers.turn_harness import Client, Clock, assert_error, assert_success, make_server
from trelay.credentials.token_crypto import mint_access_token
from trelay.node.token_cipher import AesGcmTokenCipher
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.message import decode_message
from trelay.turn.server import TurnServer
from trelay.turn.third_party import ThirdPartyAuthorizer

NOW = 1_700_000_000.0
PEER = ("127.0.0.1", 40000)


class Revoked:
    """A revocation list the test edits, recording what the core asked."""

    def __init__(self, *identities: str) -> None:
        self.identities = set(identities)
        self.asked: list[tuple[str, float]] = []

    def __call__(self, identity: str, unix_now: float) -> bool:
        self.asked.append((identity, unix_now))
        return identity in self.identities


def server_with(revoked: Revoked) -> TurnServer:
    return make_server(clock=Clock(NOW), is_revoked=revoked)


def reason(client: Client) -> str:
    assert client.last_raw is not None
    attribute = decode_message(client.last_raw).get(ErrorCodeAttribute)
    assert attribute is not None
    return attribute.reason


def test_revoked_identity_cannot_allocate() -> None:
    revoked = Revoked("alice")
    client = Client(server_with(revoked))
    assert_error(client, client.allocate(), 401, signed=True)
    assert reason(client) == "Credentials revoked"
    assert ("alice", NOW) in revoked.asked
    assert client.server.allocation_count == 0


def test_others_are_unaffected() -> None:
    client = Client(server_with(Revoked("alice")), username="bob", password="hunter2")
    assert_success(client, client.allocate())


def test_revocation_refuses_refresh_but_not_deletion_or_permissions() -> None:
    revoked = Revoked()
    client = Client(server_with(revoked))
    assert_success(client, client.allocate())
    revoked.identities.add("alice")
    assert_error(client, client.refresh(600), 401, signed=True)
    assert reason(client) == "Credentials revoked"
    assert_success(client, client.permit(PEER))  # only Allocate and Refresh are checked
    assert_success(client, client.refresh(0))  # a deletion frees the relay: allowed
    assert client.server.allocation_count == 0


def test_rest_identity_is_the_user_part() -> None:
    revoked = Revoked("carol")
    client = Client(server_with(revoked))
    client.use_rest("carol", NOW + 3600)
    assert_error(client, client.allocate(), 401, signed=True)
    assert revoked.asked == [("carol", NOW)]


def test_sha256_client_gets_a_revocation_signed_with_mi_sha256() -> None:
    client = Rfc8489Client(server_with(Revoked("alice")))
    assert_error(client, client.allocate(), 401, signed=True)
    assert client.signed_with_sha256()


def test_tokens_are_revoked_by_kid_or_by_token_identity() -> None:
    revoked = Revoked()
    authorizer = ThirdPartyAuthorizer(
        "turn.example.org", "as.example.org", {"kid1": bytes(32)}, AesGcmTokenCipher()
    )
    server = make_server(clock=Clock(NOW), is_revoked=revoked, third_party=authorizer)

    def client(address: tuple[str, int]) -> TokenClient:
        token, mac_key = mint_access_token("kid1", bytes(32), "turn.example.org", 600, NOW)
        return TokenClient(server, address=address, username="kid1", token=token, mac_key=mac_key)

    first = client(("203.0.113.40", 1))
    assert_success(first, first.allocate())
    identity = server.allocations[first.five_tuple].identity
    revoked.identities.add(identity)
    assert_error(first, first.refresh(600), 401, signed=True)
    second = client(("203.0.113.41", 1))
    assert_success(second, second.allocate())  # another token of the same kid
    revoked.identities.add("kid1")
    third = client(("203.0.113.42", 1))
    assert_error(third, third.allocate(), 401, signed=True)
