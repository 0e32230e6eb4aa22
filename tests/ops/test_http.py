"""The operator port through a real hypercorn on 127.0.0.1 port 0: health, readiness, metrics.

/healthz is always 200; /readyz is 503 before the listeners are bound and while
draining, 200 in between; /metrics is the Prometheus text format with
prometheus_client's content type; unknown paths are JSON 404s, wrong methods JSON 405s;
routes given as `extra_routes` are served; an address in use is a plain OSError.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from tests.helpers.http_client import http_request
from tests.helpers.turn_client import LocalNode, start_node
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http
from trelay.ops.metrics import node_registry

Address = tuple[str, int]


@pytest.fixture
async def local() -> AsyncIterator[LocalNode]:
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery)
        nursery.cancel_scope.cancel()


async def serve(nursery: trio.Nursery, status: NodeStatus, local: LocalNode) -> Address:
    registry = node_registry(local.node, ready=lambda: status.ready)
    app = build_app(status, registry=registry)
    address: Address = await nursery.start(serve_http, "127.0.0.1", 0, app)
    return address


async def test_healthz_and_readyz_follow_the_node_status(local: LocalNode) -> None:
    status = NodeStatus()
    async with trio.open_nursery() as nursery:
        address = await serve(nursery, status, local)
        assert address[0] == "127.0.0.1" and address[1] > 0
        health = await http_request(address, "/healthz")
        assert (health.status, health.json()) == (200, {"status": "alive"})
        assert health.headers["content-type"] == "application/json"

        before = await http_request(address, "/readyz")
        assert before.status == 503
        assert before.json() == {"status": "not ready", "reason": "listeners not bound yet"}

        status.mark_bound()
        ready = await http_request(address, "/readyz")
        assert (ready.status, ready.json()) == (200, {"status": "ready"})

        status.start_draining()
        draining = await http_request(address, "/readyz")
        assert (draining.status, draining.json()) == (
            503,
            {"status": "not ready", "reason": "draining"},
        )
        # Still alive while draining: only readiness changes.
        assert (await http_request(address, "/healthz")).status == 200
        nursery.cancel_scope.cancel()


async def test_metrics_is_prometheus_text_with_the_ready_gauge(local: LocalNode) -> None:
    status = NodeStatus()
    async with trio.open_nursery() as nursery:
        address = await serve(nursery, status, local)
        scraped = []
        for step in ("before", "ready", "draining"):
            if step == "ready":
                status.mark_bound()
            elif step == "draining":
                status.start_draining()
            response = await http_request(address, "/metrics")
            assert response.status == 200
            assert response.headers["content-type"] == CONTENT_TYPE_LATEST
            families = {f.name: f for f in text_string_to_metric_families(response.text)}
            scraped.append(families["trelay_ready"].samples[0].value)
            assert "trelay_build_info" in families
            assert "trelay_relayed_bytes" in families  # counters are named without _total
            assert "process_cpu_seconds" in families
        assert scraped == [0.0, 1.0, 0.0]
        nursery.cancel_scope.cancel()


async def test_unknown_paths_and_wrong_methods_are_json_errors(local: LocalNode) -> None:
    async with trio.open_nursery() as nursery:
        address = await serve(nursery, NodeStatus(), local)
        missing = await http_request(address, "/nope")
        assert (missing.status, missing.json()) == (404, {"error": "not found"})
        assert missing.headers["content-type"] == "application/json"
        for path in ("/healthz", "/readyz", "/metrics"):
            wrong = await http_request(address, path, method="POST")
            assert (wrong.status, wrong.json()) == (405, {"error": "method not allowed"})
            assert "GET" in wrong.headers["allow"]
        nursery.cancel_scope.cancel()


async def test_extra_routes_are_mounted_beside_the_built_in_ones() -> None:
    async def token(request: Request) -> Response:
        return JSONResponse({"token": request.path_params["name"]}, status_code=201)

    extra = [Mount("/v1", routes=[Route("/tokens/{name}", token, methods=["POST"])])]
    app = build_app(NodeStatus(), extra_routes=extra)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_http, "127.0.0.1", 0, app)
        created = await http_request(address, "/v1/tokens/abc", method="POST")
        assert (created.status, created.json()) == (201, {"token": "abc"})
        assert (await http_request(address, "/v1/tokens/abc")).status == 405
        assert (await http_request(address, "/v1/other")).status == 404
        # No registry given: /metrics serves an empty one.
        empty = await http_request(address, "/metrics")
        assert (empty.status, empty.body) == (200, b"")
        nursery.cancel_scope.cancel()


async def test_an_address_in_use_is_an_oserror_and_cancel_frees_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        async with trio.open_nursery() as nursery:
            with pytest.raises(OSError, match="in use"):
                await nursery.start(
                    serve_http, "127.0.0.1", taken.getsockname()[1], build_app(NodeStatus())
                )
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_http, "127.0.0.1", 0, build_app(NodeStatus()))
        assert (await http_request(address, "/healthz")).status == 200
        nursery.cancel_scope.cancel()
    # Cancelled: nobody listens there any more.
    with pytest.raises(OSError), trio.fail_after(5):
        await trio.open_tcp_stream(*address)


async def test_an_ipv6_loopback_address_is_served_when_available() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_http, "::1", 0, build_app(NodeStatus()))
        assert address[0] == "::1"
        assert (await http_request(address, "/healthz")).status == 200
        nursery.cancel_scope.cancel()
