"""`GET /v1/fleet/nodes` (`trelay.ops.fleet_routes`) over real HTTP: no route without an admin
token or a fleet, 401 without the token, and, while Redis does not answer, the store's
state and the reason instead of a listing (the listing itself: tests/process/test_fleet_command)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.helpers.http_client import HttpResponse, http_request
from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.registry import LoadSample, NodeRegistry, NodeView
from trelay.fleet.store import RedisStore
from trelay.ops.fleet_routes import fleet_routes
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http

TOKEN = "fleet-admin-token-0123456789"
SETTINGS = FleetSettings(redis_url="redis://127.0.0.1:1/0", node_id="n1", region="eu")


def registry() -> NodeRegistry:
    view = NodeView(load=lambda: LoadSample(0, 0, 0.0), ready=lambda: True, draining=lambda: False)
    # Never opened: the store stays "connecting" and every call is refused at once.
    return NodeRegistry(RedisStore(SETTINGS), SETTINGS, view)


@asynccontextmanager
async def served(token: str | None, fleet: NodeRegistry | None) -> AsyncIterator[tuple[str, int]]:
    app = build_app(NodeStatus(), extra_routes=fleet_routes(token, fleet))
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve_http, "127.0.0.1", 0, app)
        nursery.cancel_scope.cancel()


async def get(address: tuple[str, int], token: str | None = TOKEN) -> HttpResponse:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await http_request(address, "/v1/fleet/nodes", headers=headers)


async def test_no_route_without_a_token_or_a_fleet() -> None:
    assert fleet_routes(None, registry()) == []
    assert fleet_routes(TOKEN, None) == []
    async with served(None, registry()) as address:
        assert (await get(address)).status == 404


async def test_the_admin_token_is_required() -> None:
    async with served(TOKEN, registry()) as address:
        missing = await get(address, None)
        assert missing.status == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert (await get(address, "not-the-admin-token-at-all")).status == 401


async def test_without_redis_the_store_state_and_the_reason() -> None:
    async with served(TOKEN, registry()) as address:
        answer = await get(address)
        assert answer.status == 200
        body = answer.json()
        assert isinstance(body, dict)
        assert (body["nodes"], body["store"], body["node_id"]) == ([], "connecting", "n1")
        assert "127.0.0.1:1" in body["error"]
