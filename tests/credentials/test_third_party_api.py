"""`POST /v1/access-tokens` over real HTTP: the RFC 7635 tokens it mints allocate.

The token API (hypercorn on loopback, `tests.helpers.token_harness`) mints with one kid; a pure
TURN core whose `ThirdPartyAuthorizer` holds that kid's key checks the tokens
(`tests.helpers.modern_client.TokenClient`): Allocate succeeds, the allocation counts under
the identity the API announced, and a token stops working when its capped lifetime ends.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers.modern_client import TokenClient
from tests.helpers.token_harness import (
    KEY,
    KEYS,
    TURN_SECRET,
    SettableClock,
    basic,
    bearer,
    call,
    forged,
    serve_token_api,
)
from tests.helpers.turn_harness import Clock, assert_error, assert_success, make_server
from trelay.config.revocations import Revocation, Revocations
from trelay.credentials.access_tokens import mint_token
from trelay.credentials.token_api import ThirdPartyMint, TokenApiContext, static_context
from trelay.node.token_cipher import AesGcmTokenCipher
from trelay.turn.server import TurnServer
from trelay.turn.third_party import ThirdPartyAuthorizer, token_identity

NOW = 1_800_000_000.0
KID = "as-key-1"
AES_KEY = bytes(range(32))
SERVER_NAME = "turn.example.org"
AS_NAME = "https://api.example.org"
LIFETIME = 3600
URLS = ("stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp")
PATH = "/v1/access-tokens"


@dataclass
class Api:
    base: str
    clock: SettableClock
    context: TokenApiContext


def context_for(clock: SettableClock, third_party: ThirdPartyMint | None) -> TokenApiContext:
    return static_context(
        KEYS,
        TURN_SECRET,
        URLS,
        revocations=Revocations(),
        clock=clock,
        third_party=third_party,
    )


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    clock = SettableClock(NOW)
    mint = ThirdPartyMint(KID, AES_KEY, SERVER_NAME, LIFETIME)
    context = context_for(clock, mint)
    with serve_token_api(context) as base:
        yield Api(base, clock, context)


@pytest.fixture(autouse=True)
def _reset(api: Api) -> None:
    api.clock.now = NOW
    api.context.revocations.replace(())


def token_server(clock: Clock) -> TurnServer:
    """A pure TURN core that knows the API's kid, as a relay node configured for it would."""
    authorizer = ThirdPartyAuthorizer(SERVER_NAME, AS_NAME, {KID: AES_KEY}, AesGcmTokenCipher())
    return make_server(clock=clock, third_party=authorizer)


def client_for(server: TurnServer, body: dict[str, Any]) -> TokenClient:
    return TokenClient(
        server,
        username=body["kid"],
        token=base64.b64decode(body["access_token"]),
        mac_key=base64.b64decode(body["mac_key"]),
    )


def test_a_bearer_gets_a_token_that_allocates(api: Api) -> None:
    answer = call("POST", api.base + PATH, bearer(mint_token(KEY, "alice", NOW, ttl=7200)))
    assert answer.status == 201, answer.body
    body = answer.body
    assert body["kid"] == KID and body["server_name"] == SERVER_NAME
    assert body["lifetime"] == LIFETIME  # the configured one: the Bearer lives longer
    assert body["uris"] == list(URLS[1:])  # TURN URIs only
    assert len(base64.b64decode(body["mac_key"])) == 32
    assert AES_KEY.hex() not in str(body) and base64.b64encode(AES_KEY).decode() not in str(body)

    server = token_server(Clock(NOW))
    client = client_for(server, body)
    assert_success(client, client.allocate())  # verified with the minted mac_key
    allocation = server.allocations[client.five_tuple]
    assert allocation.username == KID
    # The identity quotas count (and revocations name) is the one the API announced.
    assert allocation.identity == body["identity"]
    assert body["identity"] == token_identity(KID, client.mac_key)
    assert_success(client, client.refresh(600))


def test_an_api_key_gets_a_token_that_allocates(api: Api) -> None:
    answer = call("POST", api.base + PATH, basic(KEY))
    assert answer.status == 201, answer.body
    assert answer.body["lifetime"] == LIFETIME
    client = client_for(token_server(Clock(NOW)), answer.body)
    assert_success(client, client.allocate())


def test_every_token_is_a_fresh_grant(api: Api) -> None:
    token = bearer(mint_token(KEY, "alice", NOW))
    first, second = (call("POST", api.base + PATH, token).body for _ in range(2))
    assert first["mac_key"] != second["mac_key"]
    assert first["access_token"] != second["access_token"]
    assert first["identity"] != second["identity"]


def test_the_lifetime_never_passes_the_bearer_token(api: Api) -> None:
    bearer_token = mint_token(KEY, "alice", NOW, ttl=600)
    api.clock.now = NOW + 100
    answer = call("POST", api.base + PATH, bearer(bearer_token))
    assert answer.status == 201, answer.body
    assert answer.body["lifetime"] == 500  # the Bearer's exp, not the configured 3600

    clock = Clock(NOW + 100)
    server = token_server(clock)
    client = client_for(server, answer.body)
    assert_success(client, client.allocate())
    # At the Bearer's exp the RFC 7635 token is over too: the core refuses a refresh.
    clock.unix = NOW + 600
    assert_error(client, client.refresh(600), 401, signed=False)


def test_a_bearer_in_its_leeway_gets_nothing(api: Api) -> None:
    # Past exp but within the verifier's 30 s leeway: no lifetime left to grant.
    bearer_token = mint_token(KEY, "alice", NOW - 600, ttl=590)
    answer = call("POST", api.base + PATH, bearer(bearer_token))
    assert (answer.status, answer.body["error"]) == (401, "expired")
    assert "access_token" not in answer.body


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        (basic(KEY, "W" * 32), "unauthorized"),
        ({"Authorization": "Basic !!!"}, "malformed"),
        ({"Authorization": "Bearer "}, "missing"),
        (bearer("x.y"), "malformed"),
        (bearer(mint_token(KEY, "alice", NOW - 7200, ttl=600)), "expired"),
        (bearer(forged(mint_token(KEY, "alice", NOW))), "bad_signature"),
    ],
)
def test_wrong_or_missing_auth_is_401(api: Api, headers: dict[str, str], reason: str) -> None:
    answer = call("POST", api.base + PATH, headers)
    assert answer.status == 401
    assert answer.body["error"] == reason
    assert "access_token" not in answer.body and "mac_key" not in answer.body
    assert "www-authenticate" in answer.headers


def test_revoked_identities_and_kids_get_nothing(api: Api) -> None:
    revocations = api.context.revocations
    revocations.add(Revocation("mallory", NOW + 600))
    refused = call("POST", api.base + PATH, bearer(mint_token(KEY, "mallory", NOW)))
    # As on /v1/ice-servers: a Bearer token of a revoked identity is itself refused (401).
    assert (refused.status, refused.body["error"]) == (401, "revoked")
    revocations.add(Revocation(KEY.sid, NOW + 600))
    by_key = call("POST", api.base + PATH, basic(KEY))
    assert (by_key.status, by_key.body["error"]) == (403, "revoked")
    # A revoked kid: every node refuses its tokens, so the API mints none either.
    revocations.add(Revocation(KID, NOW + 600))
    by_kid = call("POST", api.base + PATH, bearer(mint_token(KEY, "alice", NOW)))
    assert (by_kid.status, by_kid.body["error"]) == (403, "revoked")
    assert "access_token" not in by_kid.body
    api.clock.now = NOW + 600  # all three revocations are over
    assert call("POST", api.base + PATH, basic(KEY)).status == 201


def test_not_configured_is_404() -> None:
    with serve_token_api(context_for(SettableClock(NOW), None)) as base:
        answer = call("POST", base + PATH, bearer(mint_token(KEY, "alice", NOW)))
        assert (answer.status, answer.body["error"]) == (404, "not_configured")
        # Authentication still comes first: nothing about the node for anonymous callers.
        anonymous = call("POST", base + PATH)
        assert (anonymous.status, anonymous.body["error"]) == (401, "missing")


def test_only_post(api: Api) -> None:
    answer = call("GET", api.base + PATH, basic(KEY))
    assert answer.status == 405
