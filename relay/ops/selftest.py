"""`/selftest`: a page that checks, in the operator's own browser, that the relay relays.

Owns the two routes of the self-test: `GET /selftest` (the page, `selftest.html`
beside this module) and `GET /selftest/ice-servers` (an RTCConfiguration's `iceServers`
with a fresh short-lived TURN credential). The page opens two relay-only peer
connections per transport (UDP, TCP, TLS), sends data over a data channel and says in
plain words whether it worked and the round-trip time, like the WebRTC project's
trickle-ICE sample aimed at one relay.

The credential endpoint hands out working credentials to whoever reaches it, so the
routes belong on the operator HTTP port (loopback or a private network by default),
never on a public one; `http.selftest = false` turns them off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from trelay.credentials.ice_config import IceServer, ice_servers_json

PAGE = resources.files(__package__).joinpath("selftest.html")


def selftest_routes(ice_servers: Callable[[], Sequence[IceServer]]) -> list[BaseRoute]:
    """The page and its credential endpoint; `ice_servers()` mints fresh credentials."""
    page = PAGE.read_text(encoding="utf-8")

    async def show(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def credentials(request: Request) -> Response:
        body = {"iceServers": ice_servers_json(ice_servers())}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return [
        Route("/selftest", show, methods=["GET"]),
        Route("/selftest/ice-servers", credentials, methods=["GET"]),
    ]
