"""The token API over real HTTP (hypercorn on loopback): every route, every refusal."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from twilio.rest import Client  # type: ignore[import-untyped]

from tests.helpers.token_harness import (
    ACCOUNT,
    FOREIGN,
    KEY,
    KEYS,
    TURN_SECRET,
    SettableClock,
    alg_none,
    basic,
    bearer,
    call,
    forged,
    form,
    serve_token_api,
)
from trelay.config.revocations import Revocation, Revocations, read_revocations_file
from trelay.credentials.access_tokens import mint_token
from trelay.credentials.token_api import TokenApiContext, static_context

NOW = 1_800_000_000.0
URLS = (
    "stun:127.0.0.1:3478",
    "turn:127.0.0.1:3478?transport=udp",
    "turn:127.0.0.1:3478?transport=tcp",
    "turns:127.0.0.1:5349?transport=tcp",
)
NTS = f"/2010-04-01/Accounts/{ACCOUNT}/Tokens.json"


@dataclass
class Api:
    base: str
    clock: SettableClock
    context: TokenApiContext
    revocations_file: Path


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    revocations_file = tmp_path_factory.mktemp("api") / "revoked.toml"
    clock = SettableClock(NOW)
    context = static_context(
        KEYS,
        TURN_SECRET,
        URLS,
        revocations_file=revocations_file,
        revocations=Revocations(),
        clock=clock,
    )
    with serve_token_api(context) as base:
        yield Api(base, clock, context, revocations_file)


@pytest.fixture(autouse=True)
def _reset_clock(api: Api) -> None:
    api.clock.now = NOW


def rest_password(username: str) -> str:
    mac = hmac.digest(TURN_SECRET.encode(), username.encode(), hashlib.sha1)
    return base64.b64encode(mac).decode()


# --- Twilio NTS Token resource ---------------------------------------------------------


def test_nts_token_answers_twilio_s_shape(api: Api) -> None:
    headers, body = form(Ttl="3600")
    answer = call("POST", api.base + NTS, basic(KEY) | headers, body)
    assert answer.status == 201
    token = answer.body
    assert token["account_sid"] == ACCOUNT
    assert token["ttl"] == "3600"
    assert token["username"] == f"{int(NOW) + 3600}:{KEY.sid}"
    assert token["password"] == rest_password(token["username"])
    created = email.utils.parsedate_to_datetime(token["date_created"])
    assert created.timestamp() == NOW and token["date_updated"] == token["date_created"]
    assert token["date_created"].endswith("+0000")
    assert [s["url"] for s in token["ice_servers"]] == list(URLS)
    for server in token["ice_servers"]:
        assert server["urls"] == server["url"]
        if server["url"].startswith("stun:"):
            assert set(server) == {"url", "urls"}
        else:
            assert server["username"] == token["username"]
            assert server["credential"] == token["password"]


def test_nts_token_default_ttl_and_bad_ttls(api: Api) -> None:
    answer = call("POST", api.base + NTS, basic(KEY))
    assert answer.status == 201 and answer.body["ttl"] == "86400"
    for bad in ("0", "86401", "-5", "1.5", "soon"):
        headers, body = form(Ttl=bad)
        refused = call("POST", api.base + NTS, basic(KEY) | headers, body)
        assert refused.status == 400, bad
        assert refused.body["error"] == "bad_ttl"
    refused = call("POST", api.base + NTS, basic(KEY) | {"Content-Type": "application/json"}, b"{}")
    assert (refused.status, refused.body["error"]) == (400, "malformed_body")


def test_nts_token_authentication(api: Api) -> None:
    missing = call("POST", api.base + NTS)
    assert (missing.status, missing.body["error"]) == (401, "missing")
    assert missing.headers["www-authenticate"].startswith("Basic")
    wrong = call("POST", api.base + NTS, basic(KEY, "W" * 32))
    assert (wrong.status, wrong.body["error"]) == (401, "unauthorized")
    assert KEY.secret not in json.dumps(wrong.body)
    garbage = call("POST", api.base + NTS, {"Authorization": "Basic !!!"})
    assert (garbage.status, garbage.body["error"]) == (401, "malformed")
    # A valid key of another account, on this account's path.
    foreign = call("POST", api.base + NTS, basic(FOREIGN))
    assert (foreign.status, foreign.body["error"]) == (403, "wrong_account")


def test_twilio_s_rest_client_creates_a_token(api: Api) -> None:
    client = Client(KEY.sid, KEY.secret, ACCOUNT)
    client.api.base_url = api.base
    token = client.tokens.create(ttl=600)
    assert token.account_sid == ACCOUNT
    assert token.ttl == "600"
    assert token.username == f"{int(NOW) + 600}:{KEY.sid}"
    assert token.password == rest_password(token.username)
    assert token.date_created is not None and token.date_created.timestamp() == NOW
    assert [s["urls"] for s in token.ice_servers] == list(URLS)


# --- /v1/ice-servers -----------------------------------------------------------------


def test_ice_servers_for_a_bearer_token(api: Api) -> None:
    token = mint_token(KEY, "alice", NOW, ttl=600)
    answer = call("GET", api.base + "/v1/ice-servers", bearer(token))
    assert answer.status == 200
    assert "iceTransportPolicy" not in answer.body
    stun, turn = answer.body["iceServers"]
    assert stun == {"urls": ["stun:127.0.0.1:3478"]}
    assert turn["urls"] == list(URLS[1:])
    # Bound to the identity, expiring with the token, not later.
    assert turn["username"] == f"{int(NOW) + 600}:alice"
    assert turn["credential"] == rest_password(turn["username"])
    relay_only = call("GET", api.base + "/v1/ice-servers?policy=relay", bearer(token))
    assert relay_only.body["iceTransportPolicy"] == "relay"
    bad = call("GET", api.base + "/v1/ice-servers?policy=strict", bearer(token))
    assert (bad.status, bad.body["error"]) == (400, "bad_policy")
    # A long-lived token still gets credentials of at most max_ttl.
    long_lived = mint_token(KEY, "alice", NOW, ttl=7 * 86400)
    capped = call("GET", api.base + "/v1/ice-servers", bearer(long_lived))
    assert capped.body["iceServers"][1]["username"] == f"{int(NOW) + 86400}:alice"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: "", "missing"),
        (lambda: "x.y", "malformed"),
        (lambda: mint_token(KEY, "alice", NOW - 7200, ttl=600), "expired"),
        (lambda: mint_token(KEY, "alice", NOW + 7200, ttl=600), "not_yet_valid"),
        (lambda: forged(mint_token(KEY, "alice", NOW)), "bad_signature"),
        (lambda: alg_none(mint_token(KEY, "alice", NOW)), "alg_not_allowed"),
    ],
)
def test_ice_servers_refuse_bad_tokens(api: Api, make: object, reason: str) -> None:
    assert callable(make)
    token = make()
    headers = bearer(token) if token else {}
    answer = call("GET", api.base + "/v1/ice-servers", headers)
    assert answer.status == 401
    assert answer.body["error"] == reason
    assert "iceServers" not in answer.body
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_secrets_and_tokens_are_not_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = mint_token(KEY, "alice", NOW)
    call("GET", api.base + "/v1/ice-servers", bearer(token))
    call("GET", api.base + "/v1/ice-servers", bearer(forged(token)))
    call("POST", api.base + NTS, basic(KEY))
    call("POST", api.base + NTS, basic(KEY, "W" * 32))
    text = caplog.text
    assert "refused: bad_signature" in text  # the log does say what happened
    for secret in (KEY.secret, TURN_SECRET, token, token.split(".")[2], "W" * 32):
        assert secret not in text


# --- /v1/turn-credentials ----------------------------------------------------------------


def test_turn_rest_api_shape_with_a_key_or_a_token(api: Api) -> None:
    url = api.base + "/v1/turn-credentials?service=turn&username=bob"
    answer = call("GET", url, basic(KEY))
    assert answer.status == 200
    assert answer.body["username"] == f"{int(NOW) + 86400}:bob"
    assert answer.body["password"] == rest_password(answer.body["username"])
    assert answer.body["ttl"] == 86400
    assert answer.body["uris"] == list(URLS[1:])
    token = mint_token(KEY, "bob", NOW, ttl=300)
    by_token = call("POST", url, bearer(token))
    assert by_token.status == 200
    assert by_token.body["username"] == f"{int(NOW) + 300}:bob"
    assert by_token.body["ttl"] == 300
    other = call("GET", url.replace("bob", "carol"), bearer(token))
    assert (other.status, other.body["error"]) == (403, "identity_mismatch")
    no_service = call("GET", api.base + "/v1/turn-credentials?username=bob", basic(KEY))
    assert (no_service.status, no_service.body["error"]) == (400, "bad_service")
    anonymous = call("GET", url)
    assert (anonymous.status, anonymous.body["error"]) == (401, "missing")


# --- /v1/revocations -------------------------------------------------------------------


def test_revocation_is_written_and_refuses_minting(api: Api) -> None:
    token = mint_token(KEY, "mallory", NOW, ttl=3600)
    assert call("GET", api.base + "/v1/ice-servers", bearer(token)).status == 200
    body = json.dumps({"identity": "mallory", "ttl": 600}).encode()
    answer = call(
        "POST",
        api.base + "/v1/revocations",
        basic(KEY) | {"Content-Type": "application/json"},
        body,
    )
    assert answer.status == 201
    assert answer.body["identity"] == "mallory" and answer.body["until"] == int(NOW) + 600
    assert Revocation("mallory", NOW + 600) in read_revocations_file(api.revocations_file)
    refused = call("GET", api.base + "/v1/ice-servers", bearer(token))
    assert (refused.status, refused.body["error"]) == (401, "revoked")
    url = api.base + "/v1/turn-credentials?service=turn&username=mallory"
    by_key = call("GET", url, basic(KEY))
    assert (by_key.status, by_key.body["error"]) == (403, "revoked")
    api.clock.now = NOW + 600  # the revocation is over
    assert call("GET", api.base + "/v1/ice-servers", bearer(token)).status == 200
    until = call(
        "POST",
        api.base + "/v1/revocations",
        basic(KEY),
        json.dumps({"identity": "eve", "until": "2027-06-01T00:00:00Z"}).encode(),
    )
    assert until.status == 201 and until.body["until_rfc3339"].startswith("2027-06-01T00:00")


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"identity": "x"}',
        b'{"identity": "", "ttl": 5}',
        b'{"identity": "x", "ttl": 5, "until": 1900000000}',
        b'{"identity": "x", "ttl": -5}',
        b'{"identity": "x", "ttl": true}',
        b'{"identity": "x", "until": "tomorrow"}',
        b'{"identity": "x", "until": 1000}',
        b'{"identity": "x", "until": 99999999999}',
    ],
)
def test_bad_revocations_are_400(api: Api, payload: bytes) -> None:
    answer = call("POST", api.base + "/v1/revocations", basic(KEY), payload)
    assert (answer.status, answer.body["error"]) == (400, "malformed_body")


def test_revocations_need_a_key(api: Api) -> None:
    body = json.dumps({"identity": "x", "ttl": 5}).encode()
    token = mint_token(KEY, "alice", NOW)
    for headers in ({}, bearer(token), basic(KEY, "W" * 32)):
        answer = call("POST", api.base + "/v1/revocations", headers, body)
        assert answer.status == 401
    assert all(e.identity != "x" for e in read_revocations_file(api.revocations_file))
