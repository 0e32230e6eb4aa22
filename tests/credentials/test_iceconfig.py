"""`POST /v1/iceconfig`: Google's Network Traversal shape (lifetimeDuration, iceServers,
iceTransportPolicy) as AppRTC-style clients parse it, over real HTTP; refusals."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.helpers.token_harness import (
    KEY,
    KEYS,
    TURN_SECRET,
    Answer,
    SettableClock,
    basic,
    bearer,
    call,
    serve_token_api,
)
from trelay.credentials.access_tokens import mint_token
from trelay.credentials.ice_config import rest_credential
from trelay.credentials.token_api import static_context

NOW = 1_800_000_000.0
URLS = ("stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp")


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    context = static_context(KEYS, TURN_SECRET, URLS, default_ttl=3600, clock=SettableClock(NOW))
    with serve_token_api(context) as url:
        yield url


def parse_ice_config(answer: Answer) -> tuple[int, list[dict[str, object]], str]:
    """What an AppRTC-style client reads: the lifetime in seconds, the servers, the policy."""
    assert answer.status == 200, answer.body
    body = answer.body
    assert set(body) == {"lifetimeDuration", "iceServers", "iceTransportPolicy"}
    # A protobuf Duration in JSON: decimal seconds followed by "s".
    match = re.fullmatch(r"(\d+)s", body["lifetimeDuration"])
    assert match is not None
    return int(match.group(1)), body["iceServers"], body["iceTransportPolicy"]


def test_a_bearer_token_gets_the_config_until_the_token_ends(base: str) -> None:
    token = mint_token(KEY, "alice", NOW, ttl=600)
    lifetime, servers, policy = parse_ice_config(
        call("POST", base + "/v1/iceconfig", bearer(token))
    )
    assert (lifetime, policy) == (600, "all")
    assert servers[0] == {"urls": [URLS[0]]}
    turn = servers[1]
    assert turn["urls"] == [URLS[1]]
    assert turn["username"] == f"{int(NOW) + 600}:alice"
    assert turn["credential"] == rest_credential(TURN_SECRET, "alice", int(NOW) + 600).password


def test_an_api_key_gets_the_default_lifetime_and_v1alpha_works(base: str) -> None:
    for path in ("/v1/iceconfig", "/v1alpha/iceconfig"):
        lifetime, servers, _ = parse_ice_config(call("POST", base + path, basic(KEY)))
        assert lifetime == 3600
        assert servers[1]["username"] == f"{int(NOW) + 3600}:{KEY.sid}"


def test_relay_policy_from_the_body_or_the_query(base: str) -> None:
    token = mint_token(KEY, "alice", NOW)
    headers = bearer(token) | {"Content-Type": "application/json"}
    relay = json.dumps({"policy": "relay", "anything": 1}).encode()
    assert parse_ice_config(call("POST", base + "/v1/iceconfig", headers, relay))[2] == "relay"
    query = base + "/v1/iceconfig?policy=relay"
    assert parse_ice_config(call("POST", query, bearer(token)))[2] == "relay"
    assert parse_ice_config(call("POST", base + "/v1/iceconfig", headers, b"{}"))[2] == "all"


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"not json", "malformed_body"), (b"[1]", "malformed_body"), (b'{"policy": 5}', "bad_policy")],
)
def test_bad_bodies_are_400(base: str, body: bytes, reason: str) -> None:
    token = mint_token(KEY, "alice", NOW)
    answer = call("POST", base + "/v1/iceconfig", bearer(token), body)
    assert (answer.status, answer.body["error"]) == (400, reason)


def test_no_credentials_is_401(base: str) -> None:
    answer = call("POST", base + "/v1/iceconfig")
    assert answer.status == 401
    assert call("POST", base + "/v1/iceconfig", bearer("x.y.z")).status == 401
    assert call("GET", base + "/v1/iceconfig", bearer("x.y.z")).status == 405
