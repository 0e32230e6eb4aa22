"""`/selftest` in headless Debian Chromium: it reports the relay working over UDP and TCP,
reports failure, in plain words, when the relay refuses the credentials, and, with the
development defaults' self-signed certificate, says TLS was not checked from the browser
(and how to check it) instead of reporting TURN over TLS as broken."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import hypercorn.config
import hypercorn.trio
import pytest
import trio
from hypercorn.typing import ASGIFramework
from selenium import webdriver
from starlette.applications import Starlette

from tests.helpers.chromium import headless_chromium, missing_binaries
from tests.helpers.turn_relay import PASSWORD, USERNAME, RunningNode, threaded_turn_node
from trelay.credentials.ice_config import TurnCredential, ice_servers
from trelay.node.listeners import BoundAddresses
from trelay.ops.selftest import selftest_routes

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        bool(missing_binaries()),
        reason=f"Debian Chromium is not installed ({', '.join(missing_binaries())} missing; "
        "apt-get install chromium chromium-driver)",
    ),
]
PAGE_DONE_TIMEOUT = 60.0


async def serve_page(
    app: Starlette, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        serve = functools.partial(hypercorn.trio.serve, cast(ASGIFramework, app), config)
        binds: list[str] = await nursery.start(serve)
        task_status.started(binds[0])


@pytest.fixture
def relay_with_page() -> Iterator[tuple[RunningNode, str]]:
    with threaded_turn_node() as running:
        bound = BoundAddresses(udp=(running.udp,), tcp=(running.tcp,))
        credential = TurnCredential(USERNAME, PASSWORD)
        app = Starlette(routes=selftest_routes(lambda: ice_servers(bound, credential)))
        base = trio.from_thread.run(
            running.node.nursery.start, serve_page, app, trio_token=running.token
        )
        yield running, base


@pytest.fixture
def relay_with_tls_page() -> Iterator[tuple[RunningNode, str]]:
    """The page as `make run` serves it: UDP, TCP and TLS with a throw-away certificate."""
    with threaded_turn_node() as running:
        bound = BoundAddresses(udp=(running.udp,), tcp=(running.tcp,), tls=(running.tls,))
        credential = TurnCredential(USERNAME, PASSWORD)
        routes = selftest_routes(lambda: ice_servers(bound, credential), self_signed_tls=True)
        base = trio.from_thread.run(
            running.node.nursery.start, serve_page, Starlette(routes=routes),
            trio_token=running.token,
        )  # fmt: skip
        yield running, base


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    with headless_chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as driver:
        yield driver


def run_page(driver: webdriver.Chrome, url: str) -> dict[str, object]:
    driver.get(url)
    deadline = time.monotonic() + PAGE_DONE_TIMEOUT
    while time.monotonic() < deadline:
        state = driver.execute_script("return window.trelaySelftest")
        if isinstance(state, dict) and state.get("done"):
            state["text"] = driver.find_element("tag name", "body").text
            return state
        time.sleep(0.1)
    console = driver.get_log("browser")  # type: ignore[no-untyped-call]
    raise AssertionError(f"the page did not finish: {console!r}")


def test_the_page_reports_a_working_relay(
    relay_with_page: tuple[RunningNode, str], browser: webdriver.Chrome
) -> None:
    running, base = relay_with_page
    state = run_page(browser, f"{base}/selftest")
    results = state["results"]
    assert isinstance(results, dict), state
    assert set(results) == {"udp", "tcp"}, state
    for transport in ("udp", "tcp"):
        result = results[transport]
        assert result["ok"] is True, json.dumps(state)
        assert result["relayProtocol"] == transport
        assert result["rtt_ms"] > 0
    text = str(state["text"])
    assert "TURN over UDP\nworks: round trip" in text or "TURN over UDP works: round trip" in text
    assert "The relay works over every transport it offers." in text
    assert running.node.counters.client_to_peer_datagrams > 0


def test_the_page_reports_refused_credentials(
    relay_with_page: tuple[RunningNode, str], browser: webdriver.Chrome
) -> None:
    _, base = relay_with_page
    state = run_page(browser, f"{base}/selftest?credential=not-the-password")
    results = state["results"]
    assert isinstance(results, dict), state
    for transport in ("udp", "tcp"):
        result = results[transport]
        assert result["ok"] is False, json.dumps(state)
        assert result["error"] == "the relay refused the credentials (401)", json.dumps(state)
    assert "does not work: the relay refused the credentials (401)" in str(state["text"])
    assert "The relay works over 0 of 2 transports." in str(state["text"])


def test_a_development_certificate_is_explained_not_reported_broken(
    relay_with_tls_page: tuple[RunningNode, str], browser: webdriver.Chrome
) -> None:
    running, base = relay_with_tls_page
    state = run_page(browser, f"{base}/selftest")
    results = state["results"]
    assert isinstance(results, dict), state
    assert set(results) == {"udp", "tcp", "tls"}, state
    assert results["udp"]["ok"] is True and results["tcp"]["ok"] is True, json.dumps(state)
    # Chromium refuses the self-signed certificate: the page says so, in plain words.
    tls = results["tls"]
    assert tls["ok"] is False and tls["untrustedCertificate"] is True, json.dumps(state)
    text = str(state["text"])
    assert "does not work" not in text, text
    assert "not checked: this browser does not trust the relay's development" in text
    assert (
        "The relay works over every transport this browser can check (TURN over UDP, "
        "TURN over TCP). TURN over TLS was not checked: the certificate is a development one."
    ) in text
    # And how to check TLS for real, with this relay's TLS address.
    host, port = running.tls
    assert f"openssl s_client -connect {host}:{port}" in text
    assert "a certificate browsers trust" in text
