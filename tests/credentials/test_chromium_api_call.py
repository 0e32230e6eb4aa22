"""Headless Chromium fetches TURN credentials from the token API and calls through trelay.

One trio thread runs a throw-away relay (TURN REST API credentials under a shared
secret, `trelay.icekit.loopback_relay.start_relay`) and, beside it, the operator app with the token
API routes (`trelay.ops.http_app.build_app` + `trelay.credentials.token_api.token_routes`, served by
`trelay.ops.http_server.serve_http`). The app also serves an empty page at `/blank`, so the
page that calls `fetch` is same-origin with the API and needs no CORS.

In Chromium: `fetch("/v1/ice-servers?policy=relay")` with `Authorization: Bearer
<access token>`; with the configuration it answers, the relay-only call of
tests/interop/relay_call.js (two RTCPeerConnections and a data channel). The selected
pairs must be relay/relay and the relay's allocations must belong to the token's
identity. With an expired access token the fetch gets 401 and no call is attempted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from selenium import webdriver
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.helpers.chromium import (
    SCRIPT_TIMEOUT,
    check_relayed_call,
    diagnostics,
    headless_chromium,
    missing_binaries,
    wait_for_no_allocations,
)
from tests.helpers.token_harness import KEY, KEYS, TURN_SECRET
from trelay.credentials.access_tokens import mint_token
from trelay.credentials.token_api import static_context, token_routes
from trelay.icekit.loopback_relay import LOOPBACK, LoopbackRelay, start_relay, trio_in_thread
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http

pytestmark = pytest.mark.interop

RELAY_CALL = (Path(__file__).parents[1] / "interop" / "relay_call.js").read_text(encoding="utf-8")
MESSAGE = "hello with credentials from the token API"
PAGE_MARGIN = 5.0  # the page answers this long before Selenium's script timeout
STARTUP_TIMEOUT = 10.0
TOKEN_TTL = 300

# Fetch the RTCConfiguration as a browser app would; on success run relay_call.js (its
# source is passed in and called with its own arguments: a config and a callback) with
# the TURN entry of that configuration. Any failure answers instead of hanging.
FETCH_AND_CALL = """
const [token, relayCall, message, deadlineMs] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const response = await fetch("/v1/ice-servers?policy=relay", {
    headers: { Authorization: `Bearer ${token}` },
  });
  const body = await response.json();
  const answer = { origin: location.origin, status: response.status, body, call: null };
  if (!response.ok) {
    done(answer);
    return;
  }
  const turn = body.iceServers.find((server) => server.username !== undefined);
  const config = {
    url: turn.urls, username: turn.username, credential: turn.credential, message, deadlineMs,
  };
  new Function(relayCall)(config, (call) => done({ ...answer, call }));
})().catch((error) => done({ origin: location.origin, status: null, body: String(error) }));
"""


@dataclass(frozen=True, slots=True)
class Deployment:
    relay: LoopbackRelay
    api: str  # the token API's base URL, also the page's origin


async def blank_page(request: Request) -> Response:
    """Test-only: an empty page on the API's origin, for the browser to fetch from."""
    return HTMLResponse("<!doctype html><title>trelay token API test</title>")


@contextmanager
def relay_with_token_api() -> Iterator[Deployment]:
    """The relay and the token API in one background trio thread, both on loopback."""

    async def start(nursery: trio.Nursery) -> Deployment:
        relay = await start_relay(nursery, secret=TURN_SECRET)
        # No turns: URL: Chromium does not trust the throw-away certificate.
        urls = (
            f"stun:{LOOPBACK}:{relay.udp[1]}",
            f"turn:{LOOPBACK}:{relay.udp[1]}?transport=udp",
            f"turn:{LOOPBACK}:{relay.tcp[1]}?transport=tcp",
        )
        context = static_context(KEYS, TURN_SECRET, urls)
        routes = [*token_routes(context), Route("/blank", blank_page, methods=["GET"])]
        app = build_app(NodeStatus(), extra_routes=routes)
        host, port = await nursery.start(serve_http, LOOPBACK, 0, app)
        return Deployment(relay, f"http://{host}:{port}")

    with trio_in_thread(start, "trelay-relay-and-api", STARTUP_TIMEOUT) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with relay_with_token_api() as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"Debian Chromium is not installed ({', '.join(missing)} missing; "
            "apt-get install chromium chromium-driver)"
        )
    base = tmp_path_factory.mktemp("chromium")
    with headless_chromium(base / "profile", base / "chromedriver.log") as driver:
        yield driver


def fetch_and_call(browser: webdriver.Chrome, deployment: Deployment, token: str) -> dict[str, Any]:
    browser.get(deployment.api + "/blank")
    deadline_ms = int((SCRIPT_TIMEOUT - PAGE_MARGIN) * 1000)
    result = browser.execute_async_script(FETCH_AND_CALL, token, RELAY_CALL, MESSAGE, deadline_ms)
    assert isinstance(result, dict)
    return result


def test_chromium_calls_through_the_relay_with_api_credentials(
    browser: webdriver.Chrome, deployment: Deployment
) -> None:
    issued = time.time()
    token = mint_token(KEY, "alice", issued, ttl=TOKEN_TTL)
    result = fetch_and_call(browser, deployment, token)
    # Snapshot trelay's side while the call is up, then hang up.
    allocations = list(deployment.relay.node.server.allocations.copy().values())
    counters = deployment.relay.counters()
    browser.execute_script("if (window.trelayHangUp) window.trelayHangUp()")
    left = wait_for_no_allocations(deployment.relay)

    # The page was same-origin with the API, and the API answered an RTCConfiguration.
    assert result["origin"] == deployment.api
    assert result["status"] == 200, diagnostics(result, browser)
    configuration = result["body"]
    assert configuration["iceTransportPolicy"] == "relay"
    (turn,) = [s for s in configuration["iceServers"] if "username" in s]
    # "<expiry>:<identity>", expiring no later than the access token.
    expiry, _, identity = turn["username"].partition(":")
    assert identity == "alice" and turn["username"].endswith(":alice")
    assert expiry.isdigit() and issued < int(expiry) <= issued + TOKEN_TTL
    assert turn["username"].startswith(f"{expiry}:")

    call = result["call"]
    assert call is not None and call["ok"], diagnostics(result, browser)
    check_relayed_call(call, result, browser, allocations, MESSAGE)
    # trelay's side: the allocations are the API credential's, and carried the call.
    assert {a.username for a in allocations} == {turn["username"]}
    assert {a.identity for a in allocations} == {"alice"}
    exchanged = len(MESSAGE) + len("echo:" + MESSAGE)
    assert counters.client_to_peer_bytes >= exchanged
    assert counters.peer_to_client_bytes >= exchanged
    assert left == 0


def test_an_expired_token_gets_401_and_no_call(
    browser: webdriver.Chrome, deployment: Deployment
) -> None:
    before = deployment.relay.counters()
    token = mint_token(KEY, "alice", time.time() - 3600, ttl=60)
    result = fetch_and_call(browser, deployment, token)
    assert result["origin"] == deployment.api
    assert result["status"] == 401, diagnostics(result, browser)
    assert result["body"]["error"] == "expired"
    assert "iceServers" not in result["body"]
    assert result["call"] is None  # the page never created a peer connection
    assert browser.execute_script("return window.trelayPeers === undefined") is True
    after = deployment.relay.counters()
    assert after.allocations == 0
    assert after.client_to_peer_bytes == before.client_to_peer_bytes
