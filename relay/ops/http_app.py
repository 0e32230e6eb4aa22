"""The operator HTTP app: health, readiness and Prometheus metrics, plus mounted routes.

Owns the routes of the operator port (served by `trelay.ops.http_server`):

- `GET /healthz`: 200 `{"status": "alive"}` while the process serves HTTP at all;
- `GET /readyz`: 200 `{"status": "ready"}` once every listener is bound and while the
  node is not draining; 503 `{"status": "not ready", "reason": ...}` otherwise, so a load
  balancer stops sending new clients to a node that is shutting down. In a fleet the
  body also says `"fleet": "connected" | "connecting" | "lost"`; a lost Redis does not
  make the node unready (it still relays, design §9);
- `GET /metrics`: the node's registry in the Prometheus text format
  (`prometheus_client.CONTENT_TYPE_LATEST`);
- whatever `extra_routes` adds (the token API mounts here);
- any other path: 404 `{"error": "not found"}`; a known path with the wrong method: 405
  `{"error": "method not allowed"}` with an `Allow` header.

Invariants: `/metrics` is an async endpoint, so the scrape runs in the node's trio thread
(never in a worker thread) and reads the node's tables while nothing changes them;
`NodeStatus` is plain state the CLI flips: `mark_bound()` once every listener is bound,
`start_draining()` on the first SIGTERM or SIGINT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

NOT_BOUND = "listeners not bound yet"
DRAINING = "draining"


@dataclass(slots=True)
class NodeStatus:
    """Whether the node's listeners are bound and whether it drains (for /readyz)."""

    listeners_bound: bool = False
    draining: bool = False
    # The fleet store's state (`trelay.fleet.store.StoreState`); None: no fleet.
    fleet: Callable[[], str] | None = None

    def mark_bound(self) -> None:
        self.listeners_bound = True

    def start_draining(self) -> None:
        self.draining = True

    @property
    def ready(self) -> bool:
        return self.not_ready_reason is None

    @property
    def not_ready_reason(self) -> str | None:
        if self.draining:
            return DRAINING
        if not self.listeners_bound:
            return NOT_BOUND
        return None


def build_app(
    status: NodeStatus,
    *,
    registry: CollectorRegistry | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The operator app. `registry` is what /metrics serves (an empty one if None).

    `extra_routes` are Starlette routes (`Route`, `Mount`, ...) added after the built-in
    ones, e.g. `extra_routes=[Mount("/v1", routes=token_routes)]`.
    """
    metrics_registry = registry if registry is not None else CollectorRegistry()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        reason = status.not_ready_reason
        fleet = {} if status.fleet is None else {"fleet": status.fleet()}
        if reason is None:
            return JSONResponse({"status": "ready", **fleet})
        return JSONResponse({"status": "not ready", "reason": reason, **fleet}, status_code=503)

    async def metrics(request: Request) -> Response:
        # Async on purpose: generate_latest reads the node's tables in the node's thread.
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *extra_routes,
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _json_error})


async def _json_error(request: Request, exc: Exception) -> Response:
    """404, 405 and any other HTTPException as `{"error": ...}` JSON."""
    assert isinstance(exc, HTTPException)
    messages = {404: "not found", 405: "method not allowed"}
    error = messages.get(exc.status_code, exc.detail)
    return JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)
