"""`/selftest/ice-servers` from the settings: fresh "selftest" credentials, every listener's
URI, and whether TLS uses the development certificate (which the page explains instead of
reporting TURN over TLS as broken; the page itself is driven in Chromium by
tests/interop/test_selftest_chromium.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from tests.helpers.http_client import http_request
from trelay.config.settings import HttpSettings, Settings, TlsSettings
from trelay.node.listeners import BoundAddresses
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http
from trelay.ops.operator_routes import operator_routes

BOUND = BoundAddresses(
    udp=(("127.0.0.1", 40000),), tcp=(("127.0.0.1", 40000),), tls=(("127.0.0.1", 40001),)
)


async def selftest_answer(settings: Settings, bound: BoundAddresses) -> dict[str, object]:
    app = build_app(NodeStatus(), extra_routes=operator_routes(settings, bound, None))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_http, "127.0.0.1", 0, app)
        page = await http_request(address, "/selftest")
        assert page.status == 200 and "Why TURN over TLS was not checked here" in page.text
        answer = await http_request(address, "/selftest/ice-servers")
        nursery.cancel_scope.cancel()
    assert answer.status == 200
    body = answer.json()
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize(
    ("tls", "bound", "self_signed"),
    [
        (TlsSettings(), BOUND, True),  # the development defaults
        (TlsSettings(Path("cert.pem"), Path("key.pem")), BOUND, False),  # a configured pair
        (TlsSettings(), replace(BOUND, tls=()), False),  # no TLS listener: nothing to say
    ],
)
async def test_the_page_learns_whether_tls_is_self_signed(
    tls: TlsSettings, bound: BoundAddresses, self_signed: bool
) -> None:
    settings = Settings(tls=tls, http=HttpSettings(selftest=True))
    body = await selftest_answer(settings, bound)
    assert body["selfSignedTls"] is self_signed
    servers = body["iceServers"]
    assert isinstance(servers, list)
    turn = next(s for s in servers if "username" in s)
    assert turn["username"].endswith(":selftest")
    # The page probes every listener, TLS included, and decides from `selfSignedTls`.
    assert any(url.startswith("turns:") for url in turn["urls"]) is bool(bound.tls)
