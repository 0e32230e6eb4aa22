"""`/selftest`: a page that checks, in the operator's own browser, that the relay relays.

Owns the two routes of the self-test: `GET /selftest` (the page, `selftest.html`
beside this module) and `GET /selftest/ice-servers` (an RTCConfiguration's `iceServers`
with a fresh short-lived TURN credential). The page opens two relay-only peer
connections per transport (UDP, TCP, TLS), sends data over a data channel and says in
plain words whether it worked and the round-trip time, like the WebRTC project's
trickle-ICE sample aimed at one relay.

The endpoint also says whether the TLS listeners use the throw-away self-signed
certificate of the development defaults (`selfSignedTls`). A browser refuses that
certificate, so TURN over TLS fails in it whatever the relay does: the page then says
so in plain words, as "not checked from this browser" rather than as a failure, and
how to check TLS for real (a trusted certificate, or `openssl s_client`).

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


def selftest_routes(
    ice_servers: Callable[[], Sequence[IceServer]], *, self_signed_tls: bool = False
) -> list[BaseRoute]:
    """The page and its credential endpoint; `ice_servers()` mints fresh credentials,
    `self_signed_tls` says the turns: URLs lead to a certificate browsers do not trust."""
    page = PAGE.read_text(encoding="utf-8")

    async def show(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def credentials(request: Request) -> Response:
        body = {"iceServers": ice_servers_json(ice_servers()), "selfSignedTls": self_signed_tls}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return [
        Route("/selftest", show, methods=["GET"]),
        Route("/selftest/ice-servers", credentials, methods=["GET"]),
    ]
