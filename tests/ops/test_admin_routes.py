"""The session admin routes through a real hypercorn on 127.0.0.1 port 0, over a real node.

Without an admin token none of the routes exists (404); with one, every request needs
`Authorization: Bearer <token>` (401 with a JSON reason otherwise); GET /v1/sessions
lists the live allocations (filtered by ?identity=), DELETE ends one identity's or one
relayed address's, POST /v1/drain starts the drain as SIGTERM does (202), and a second
POST does not cut it short.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from tests.helpers.http_client import HttpResponse, http_request
from tests.helpers.turn_client import LocalNode, start_node, udp_client
from tests.helpers.turn_relay import PASSWORD
from trelay.config.settings import DrainSettings
from trelay.ops.admin_routes import admin_routes
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http
from trelay.process.drain import NodeDrain
from trelay.process.session_admin import NodeSessionAdmin
from trelay.turn.credential_sources import StaticUsers

TOKEN = "s3cret-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Address = tuple[str, int]


@dataclass
class Admin:
    local: LocalNode
    status: NodeStatus
    http: Address | None

    async def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> HttpResponse:
        assert self.http is not None
        return await http_request(self.http, path, method, AUTH if headers is None else headers)


@asynccontextmanager
async def served(token: str | None) -> AsyncIterator[Admin]:
    async with trio.open_nursery() as nursery:
        local = await start_node(nursery)
        server = local.node.server
        server.use_users(StaticUsers({"alice": PASSWORD, "bob": "builder"}, server.config.realm))
        status = NodeStatus()
        status.mark_bound()
        # The drain's end cancels this scope (the process would end); the test's own
        # nursery is left alone.
        node_scope = trio.CancelScope()
        drain = NodeDrain(local.node, status, DrainSettings(3600), node_scope, nursery, False)
        app = build_app(
            status, extra_routes=admin_routes(token, NodeSessionAdmin(local.node, drain))
        )
        http: Address = await nursery.start(serve_http, "127.0.0.1", 0, app)
        yield Admin(local, status, http)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    async with served(TOKEN) as served_admin:
        yield served_admin


async def settle() -> None:
    """Let the tasks the last request started run (the drain), bounded."""
    with trio.fail_after(5):
        await trio.testing.wait_all_tasks_blocked()


async def test_without_a_token_there_is_no_admin_route() -> None:
    async with served(None) as admin:
        routes = [
            ("/v1/sessions", "GET"),
            ("/v1/sessions", "DELETE"),
            ("/v1/sessions/127.0.0.1:5000", "DELETE"),
            ("/v1/drain", "POST"),
        ]
        for path, method in routes:
            response = await admin.request(path, method)
            assert (response.status, response.json()) == (404, {"error": "not found"})
        assert not admin.local.node.server.draining


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing Authorization: Bearer <admin token>"),
        ({"Authorization": f"Basic {TOKEN}"}, "expected Authorization: Bearer <admin token>"),
        ({"Authorization": "Bearer "}, "expected Authorization: Bearer <admin token>"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong admin token"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "wrong admin token"),
    ],
)
async def test_every_admin_route_needs_the_token(
    admin: Admin, headers: dict[str, str], reason: str
) -> None:
    async with udp_client(admin.local.udp) as alice:
        await alice.allocate()
        for path, method in [("/v1/sessions", "GET"), ("/v1/sessions?identity=alice", "DELETE"),
                             ("/v1/drain", "POST")]:  # fmt: skip
            response = await admin.request(path, method, headers)
            assert response.status == 401
            assert response.json() == {"error": "unauthorized", "reason": reason}
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert len(admin.local.node.sessions()) == 1
        assert not admin.local.node.server.draining


async def test_list_and_end_sessions(admin: Admin) -> None:
    async with udp_client(admin.local.udp) as alice, udp_client(admin.local.udp) as bob:
        bob.username, bob.password = "bob", "builder"
        alice_relayed = await alice.allocate()
        bob_relayed = await bob.allocate()
        listing = await admin.request("/v1/sessions")
        assert listing.status == 200
        body = listing.json()
        assert isinstance(body, dict) and body["unanswered_workers"] == []
        by_identity = {s["identity"]: s for s in body["sessions"]}
        assert set(by_identity) == {"alice", "bob"}
        mine = by_identity["alice"]
        assert mine["client"] == f"127.0.0.1:{alice.local[1]}"
        assert mine["server"] == f"{admin.local.udp[0]}:{admin.local.udp[1]}"
        assert mine["relayed"] == mine["relay_socket"] == f"127.0.0.1:{alice_relayed[1]}"
        assert mine["relayed_addresses"] == [mine["relayed"]]  # single-family: one
        assert mine["peer_connections"] is None  # a UDP allocation
        assert mine["transport"] == "udp"
        assert (mine["permissions"], mine["channels"]) == (0, 0)
        assert 0 <= mine["age_seconds"] < mine["lifetime_left_seconds"] <= 600
        assert mine["client_to_peer_bytes"] == mine["peer_to_client_bytes"] == 0
        assert "worker" not in mine

        only_bob = (await admin.request("/v1/sessions?identity=bob")).json()
        assert isinstance(only_bob, dict)
        assert [s["identity"] for s in only_bob["sessions"]] == ["bob"]

        no_identity = await admin.request("/v1/sessions", "DELETE")
        assert no_identity.status == 400
        assert len(admin.local.node.sessions()) == 2

        ended = await admin.request("/v1/sessions?identity=alice", "DELETE")
        assert (ended.status, ended.json()) == (200, {"ended": 1, "unanswered_workers": []})
        assert [s.view.identity for s in admin.local.node.sessions()] == ["bob"]

        one = await admin.request(f"/v1/sessions/127.0.0.1:{bob_relayed[1]}", "DELETE")
        assert (one.status, one.json()) == (200, {"ended": 1, "unanswered_workers": []})
        assert admin.local.node.sessions() == []
        again = await admin.request(f"/v1/sessions/127.0.0.1:{bob_relayed[1]}", "DELETE")
        assert again.status == 404 and again.json() == {
            "error": f"no session relays on 127.0.0.1:{bob_relayed[1]}",
            "ended": 0,
        }
        bad = await admin.request("/v1/sessions/not-an-address", "DELETE")
        assert bad.status == 400
        empty = (await admin.request("/v1/sessions")).json()
        assert empty == {"sessions": [], "unanswered_workers": []}


async def test_post_drain_starts_the_drain_once(admin: Admin) -> None:
    async with udp_client(admin.local.udp) as alice:
        await alice.allocate()
        first = await admin.request("/v1/drain", "POST")
        assert (first.status, first.json()) == (202, {"status": "draining", "started": True})
        await settle()
        assert admin.local.node.server.draining and not admin.status.ready
        second = await admin.request("/v1/drain", "POST")
        assert (second.status, second.json()) == (202, {"status": "draining", "started": False})
        # Not a second signal: the call goes on.
        await settle()
        assert len(admin.local.node.sessions()) == 1
        assert await alice.refresh(600) == 600
