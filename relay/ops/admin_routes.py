"""Admin on the operator HTTP port: list and end allocations, drain, reload.

Owns the admin routes (what coturn's CLI, `eturnalctl sessions` and STUNner give), served
only when `[http] admin_token_file` is set (`trelay.config.admin_token`); without it none
of them exists (404 like any unknown path), so an operator port without a token exposes
nothing new:

- `GET /v1/sessions[?identity=ID]`: 200 `{"sessions": [...], "unanswered_workers": []}`,
  one object per live allocation (`session_json`: transport, client, server, relayed
  address, every relayed address (`relayed_addresses`: a dual allocation's two),
  identity, age, lifetime left, permissions, channels, a TCP allocation's peer
  connections (`peer_connections`, null for UDP), datagrams and bytes both ways, and
  with `--workers` the worker index);
- `DELETE /v1/sessions?identity=ID`: end every allocation of ID, 200 `{"ended": n}`;
- `DELETE /v1/sessions/{relayed}` ("198.51.100.1:49152", "[2001:db8::1]:49152"): end
  that allocation, 200 `{"ended": 1}`, or 404 `{"error": ..., "ended": 0}`;
- `POST /v1/drain`: start the drain exactly as SIGTERM does (design §4), 202
  `{"status": "draining", "started": true}`; asked again while draining it changes
  nothing (`"started": false`): cutting a drain short stays a second signal's job;
- `POST /v1/reload`: the SIGHUP reload (`trelay.process.reload`), 200 `{"applied":
  [...], "waiting_for_restart": [...]}`, or 422 with the reason when the settings file
  is refused (the settings in force stay).

Every admin request must carry `Authorization: Bearer <token>` (RFC 6750 §2.1), compared
in constant time (`hmac.compare_digest`, design §6); otherwise 401 with a JSON reason and
`WWW-Authenticate: Bearer`. The identity is shown in the JSON (only the token's holder
sees it); logs keep their `user_ref` (`trelay.ops.logs`) and no metric gets a per-user
label.

What serves the routes is a `SessionAdmin`: one node (`trelay.process.session_admin`),
or the supervisor asking every worker (then `unanswered_workers` lists those that did
not answer within the supervisor's bound, and their sessions are missing).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from trelay.config.values import SettingsError, format_host_port, parse_host_port
from trelay.node.sessions import Session
from trelay.turn.addressing import Address


@dataclass(frozen=True, slots=True)
class ListedSession:
    """A session and the worker serving it (None with one process)."""

    session: Session
    worker: int | None = None


@dataclass(frozen=True, slots=True)
class SessionListing:
    sessions: tuple[ListedSession, ...]
    unanswered_workers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionsEnded:
    ended: int
    unanswered_workers: tuple[int, ...] = ()


class SessionAdmin(Protocol):
    """What the admin routes ask of the relay (one node, or every worker)."""

    async def list_sessions(self, identity: str | None) -> SessionListing: ...

    async def end_sessions(
        self, *, identity: str | None = None, relayed: Address | None = None
    ) -> SessionsEnded: ...

    @property
    def draining(self) -> bool:
        """True once a drain has started (or been asked for)."""
        ...

    def start_drain(self) -> None:
        """Start the drain as SIGTERM does; nothing more if it had started already."""
        ...


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload did: the changes applied live, the keys waiting for a restart, or
    (`refused`) why the settings file was not used."""

    applied: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    refused: str | None = None


def admin_routes(
    token: str | None,
    admin: SessionAdmin,
    reload: Callable[[], Awaitable[Reloaded]] | None = None,
) -> list[BaseRoute]:
    """The admin routes guarded by `token`; none at all without a token. `reload`: what
    `POST /v1/reload` runs (the SIGHUP reload); no such route without it."""
    if token is None:
        return []

    def refusal(request: Request) -> Response | None:
        return admin_refusal(token, request)

    async def sessions(request: Request) -> Response:
        refused = refusal(request)
        if refused is not None:
            return refused
        identity = request.query_params.get("identity")
        if identity == "":
            return _error(400, "identity is empty")
        if request.method == "GET":
            listing = await admin.list_sessions(identity)
            return JSONResponse(
                {
                    "sessions": [session_json(entry) for entry in listing.sessions],
                    "unanswered_workers": list(listing.unanswered_workers),
                }
            )
        if identity is None:
            return _error(400, "give ?identity=ID, or DELETE /v1/sessions/{relayed address}")
        ended = await admin.end_sessions(identity=identity)
        return _ended(ended)

    async def end_one(request: Request) -> Response:
        refused = refusal(request)
        if refused is not None:
            return refused
        try:
            address = parse_host_port("relayed", request.path_params["relayed"])
        except SettingsError as exc:
            return _error(400, f"relayed address: {exc.problem}")
        ended = await admin.end_sessions(relayed=(address.host, address.port))
        if not ended.ended and not ended.unanswered_workers:
            return _error(404, f"no session relays on {address}", ended=0)
        return _ended(ended)

    async def drain(request: Request) -> Response:
        refused = refusal(request)
        if refused is not None:
            return refused
        started = not admin.draining

        async def start() -> None:
            # Async: Starlette would run a plain function in a worker thread, and the
            # drain belongs to the node's trio thread.
            admin.start_drain()

        # After the answer is sent: a node with nothing to wait for ends at once, and
        # its HTTP port with it.
        return JSONResponse(
            {"status": "draining", "started": started},
            status_code=202,
            background=BackgroundTask(start),
        )

    async def reload_settings(request: Request) -> Response:
        refused = refusal(request)
        if refused is not None:
            return refused
        assert reload is not None  # the route exists only with it
        outcome = await reload()
        if outcome.refused is not None:
            return _error(422, f"reload refused, the settings in force stay: {outcome.refused}")
        return JSONResponse(
            {"applied": list(outcome.applied), "waiting_for_restart": list(outcome.waiting)}
        )

    routes: list[BaseRoute] = [
        Route("/v1/sessions", sessions, methods=["GET", "DELETE"]),
        Route("/v1/sessions/{relayed}", end_one, methods=["DELETE"]),
        Route("/v1/drain", drain, methods=["POST"]),
    ]
    if reload is not None:
        routes.append(Route("/v1/reload", reload_settings, methods=["POST"]))
    return routes


def admin_refusal(token: str, request: Request) -> Response | None:
    """None when `request` bears the admin `token` (Bearer, constant time), else the 401.
    Every admin route of the operator port checks with this (`trelay.ops.fleet_routes` too)."""
    header = request.headers.get("authorization")
    if header is None:
        return _unauthorized("missing Authorization: Bearer <admin token>")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _unauthorized("expected Authorization: Bearer <admin token>")
    # Header values arrive latin-1 decoded; compared as bytes in constant time.
    if not hmac.compare_digest(given.strip().encode("latin-1"), token.encode("ascii")):
        return _unauthorized("wrong admin token")
    return None


def session_json(entry: ListedSession) -> dict[str, Any]:
    """One session as the admin routes (and `trelay sessions --json`) show it."""
    view, traffic = entry.session.view, entry.session.traffic
    five_tuple = view.five_tuple
    out: dict[str, Any] = {
        "transport": five_tuple.transport.value,
        "client": format_host_port(*five_tuple.client),
        "server": format_host_port(*five_tuple.server),
        "relayed": format_host_port(*view.reported_relayed),
        "relay_socket": format_host_port(*view.relayed),
        # Every relayed address relaying (a dual allocation's two, RFC 8656 §7.2; not a
        # first one the client deleted alone, §7.3), as reported.
        "relayed_addresses": [
            format_host_port(*address)
            for address in (
                None if view.first_withdrawn else view.reported_relayed,
                view.second_reported_relayed,
            )
            if address is not None
        ],
        "identity": view.identity,
        "age_seconds": round(view.age, 3),
        "lifetime_left_seconds": round(view.lifetime_left, 3),
        "permissions": view.permissions,
        "channels": view.channels,
        "peer_connections": view.peer_connections,  # null for a UDP allocation
        "client_to_peer_datagrams": traffic.client_to_peer_datagrams,
        "client_to_peer_bytes": traffic.client_to_peer_bytes,
        "peer_to_client_datagrams": traffic.peer_to_client_datagrams,
        "peer_to_client_bytes": traffic.peer_to_client_bytes,
    }
    if entry.worker is not None:
        out["worker"] = entry.worker
    return out


def _ended(ended: SessionsEnded) -> Response:
    return JSONResponse(
        {"ended": ended.ended, "unanswered_workers": list(ended.unanswered_workers)}
    )


def _unauthorized(reason: str) -> Response:
    return JSONResponse(
        {"error": "unauthorized", "reason": reason},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="trelay admin"'},
    )


def _error(status: int, message: str, **extra: object) -> Response:
    return JSONResponse({"error": message, **extra}, status_code=status)
