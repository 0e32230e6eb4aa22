"""The full chain: access token -> token API -> TURN credentials -> a relay-only aioice call.

A real trelay node (loopback, TURN REST API credentials under the shared secret) and the
token API (hypercorn) run in background threads; aioice, the TURN client of aiortc, is
forced to relayed candidates, so the call only works if the minted credential does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from twilio.jwt.access_token import AccessToken  # type: ignore[import-untyped]
from twilio.jwt.access_token.grants import VideoGrant  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from tests.helpers.aioice_call import relayed_call
from tests.helpers.token_aioice_call import gathered_relay_candidates, turn_server
from tests.helpers.token_harness import (
    ACCOUNT,
    KEY,
    KEYS,
    TURN_SECRET,
    alg_none,
    basic,
    bearer,
    call,
    forged,
    serve_token_api,
)
from trelay.config.revocations import Revocations
from trelay.credentials.access_tokens import mint_token
from trelay.credentials.token_api import static_context
from trelay.icekit.loopback_relay import LoopbackRelay, throwaway_relay

pytestmark = pytest.mark.interop


@dataclass
class Deployment:
    relay: LoopbackRelay
    api: str
    # What the relay node knows, learnt only by watching the revocations file.
    node_revocations: Revocations


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with throwaway_relay(secret=TURN_SECRET) as relay:
        node_revocations = Revocations()
        # The core's hook (trelay.turn.auth): a revoked identity's Allocate and Refresh get 401.
        relay.node.server.auth.use_revocation_check(node_revocations.is_revoked)
        revocations_file = tmp_path_factory.mktemp("chain") / "revoked.toml"
        urls = (
            f"stun:127.0.0.1:{relay.udp[1]}",
            f"turn:127.0.0.1:{relay.udp[1]}?transport=udp",
            f"turn:127.0.0.1:{relay.tcp[1]}?transport=tcp",
        )
        context = static_context(
            KEYS,
            TURN_SECRET,
            urls,
            default_ttl=600,
            revocations_file=revocations_file,
            revocations=Revocations(),  # the API's own view, separate from the node's
        )
        with serve_token_api(context, watch=(revocations_file, node_revocations)) as api:
            yield Deployment(relay, api, node_revocations)


def ice_servers_for(deployment: Deployment, token: str) -> list[dict[str, Any]]:
    answer = call("GET", deployment.api + "/v1/ice-servers?policy=relay", bearer(token))
    assert answer.status == 200, answer.body
    assert answer.body["iceTransportPolicy"] == "relay"
    servers: list[dict[str, Any]] = answer.body["iceServers"]
    return servers


def call_through(deployment: Deployment, servers: list[dict[str, Any]], transport: str) -> None:
    before = deployment.relay.counters()
    address, username, password = turn_server(servers, transport)
    kinds = asyncio.run(relayed_call(address, username, password, transport))
    assert kinds == ["relay"] * 4
    after = deployment.relay.counters()
    assert after.client_to_peer_bytes - before.client_to_peer_bytes >= len(b"pong")
    assert after.peer_to_client_bytes - before.peer_to_client_bytes >= len(b"pong")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_our_access_token_gets_a_relay_only_call(deployment: Deployment, transport: str) -> None:
    token = mint_token(KEY, "alice", time.time(), ttl=300)
    servers = ice_servers_for(deployment, token)
    _, username, _ = turn_server(servers, transport)
    expiry, _, identity = username.partition(":")
    assert identity == "alice" and int(expiry) <= time.time() + 300
    call_through(deployment, servers, transport)


def test_a_token_from_twilio_s_helper_library_gets_a_relay_only_call(
    deployment: Deployment,
) -> None:
    helper = AccessToken(ACCOUNT, KEY.sid, KEY.secret, identity="bob", ttl=300)
    helper.add_grant(VideoGrant(room="standup"))
    servers = ice_servers_for(deployment, helper.to_jwt())
    assert turn_server(servers, "udp")[1].endswith(":bob")
    call_through(deployment, servers, "udp")


def test_twilio_s_rest_client_gets_usable_ice_servers(deployment: Deployment) -> None:
    client = Client(KEY.sid, KEY.secret, ACCOUNT)
    client.api.base_url = deployment.api
    token = client.tokens.create(ttl=300)
    assert token.ttl == "300"
    # Twilio's entries carry one URL each, as `url` and `urls`.
    servers = [{"urls": [s["urls"]], **s} for s in token.ice_servers]
    call_through(deployment, servers, "udp")


@pytest.mark.parametrize("kind", ["expired", "forged", "alg_none", "revoked"])
def test_bad_tokens_get_401_and_no_credentials(deployment: Deployment, kind: str) -> None:
    now = time.time()
    if kind == "revoked":
        revoked = call(
            "POST",
            deployment.api + "/v1/revocations",
            basic(KEY),
            b'{"identity": "mallory", "ttl": 600}',
        )
        assert revoked.status == 201
        token = mint_token(KEY, "mallory", now, ttl=300)
    else:
        token = {
            "expired": mint_token(KEY, "alice", now - 3600, ttl=60),
            "forged": forged(mint_token(KEY, "alice", now)),
            "alg_none": alg_none(mint_token(KEY, "alice", now)),
        }[kind]
    allocations = deployment.relay.allocations
    answer = call("GET", deployment.api + "/v1/ice-servers?policy=relay", bearer(token))
    assert answer.status == 401
    assert answer.body["error"] == {"alg_none": "alg_not_allowed", "forged": "bad_signature"}.get(
        kind, kind
    )
    assert "iceServers" not in answer.body and TURN_SECRET not in str(answer.body)
    assert deployment.relay.allocations == allocations


def test_only_a_minted_credential_gets_a_relay(deployment: Deployment) -> None:
    servers = ice_servers_for(deployment, mint_token(KEY, "alice", time.time(), ttl=300))
    address, username, password = turn_server(servers, "udp")
    assert gathered_relay_candidates(address, username, password) == 1
    # The same username with a guessed password, or the password for another identity.
    assert gathered_relay_candidates(address, username, "guessed") == 0
    expiry = username.partition(":")[0]
    assert gathered_relay_candidates(address, f"{expiry}:mallory", password) == 0


def test_a_revoked_identity_loses_its_relay_on_the_node(deployment: Deployment) -> None:
    servers = ice_servers_for(deployment, mint_token(KEY, "trudy", time.time(), ttl=300))
    address, username, password = turn_server(servers, "udp")
    assert gathered_relay_candidates(address, username, password) == 1
    revoked = call(
        "POST",
        deployment.api + "/v1/revocations",
        basic(KEY),
        b'{"identity": "trudy", "ttl": 600}',
    )
    assert revoked.status == 201
    # The node learns it from the file alone (its watcher polls every 50 ms).
    for _ in range(400):
        if deployment.node_revocations.is_revoked("trudy", time.time()):
            break
        time.sleep(0.05)
    assert deployment.node_revocations.is_revoked("trudy", time.time())
    # The credential minted before the revocation no longer allocates: 401 on Allocate.
    assert gathered_relay_candidates(address, username, password) == 0
    # And the API mints nothing new for trudy.
    again = call(
        "GET",
        deployment.api + "/v1/ice-servers",
        bearer(mint_token(KEY, "trudy", time.time(), ttl=300)),
    )
    assert (again.status, again.body["error"]) == (401, "revoked")
    # Others are unaffected.
    servers = ice_servers_for(deployment, mint_token(KEY, "alice", time.time(), ttl=300))
    assert gathered_relay_candidates(*turn_server(servers, "udp")) == 1
