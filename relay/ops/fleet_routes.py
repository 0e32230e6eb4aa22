"""The fleet listing on the operator port: `GET /v1/fleet/nodes`, with the admin token.

Owns the operator's view of the registry (design §9), served beside the session admin
routes and only like them: with `[http] admin_token_file` (checked by
`trelay.ops.admin_routes.admin_refusal`, Bearer in constant time, 401 otherwise) and, in
addition, with `[fleet]` (a node alone has no such route: 404 like any unknown path).

- `GET /v1/fleet/nodes`: 200 {"nodes": [entry...], "store": "connected" | "connecting" |
  "lost", "node_id": this node's id}, the live entries as Redis lists them now (each
  entry's JSON as the registry writes it, plus `available`), by node id. While Redis
  does not answer: 200 with "store" saying so, "nodes": [] and "error" (the operator
  sees why; the command exits 1 on it).

`trelay fleet nodes` (`trelay.process.commands.fleet`) is its client.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from trelay.fleet.registry import NodeEntry, NodeRegistry, live_nodes
from trelay.fleet.store import StoreUnavailable
from trelay.ops.admin_routes import admin_refusal


def entry_json(entry: NodeEntry) -> dict[str, Any]:
    """A registry entry as the listing shows it (`available` added)."""
    out = asdict(entry)
    out["public_uris"] = list(entry.public_uris)
    out["available"] = entry.available
    return out


def fleet_routes(token: str | None, fleet: NodeRegistry | None) -> list[BaseRoute]:
    """The fleet listing, guarded by the admin `token`; none without a token or a fleet."""
    if token is None or fleet is None:
        return []
    registry = fleet

    async def nodes(request: Request) -> Response:
        refused = admin_refusal(token, request)
        if refused is not None:
            return refused
        store = registry.store
        body: dict[str, Any] = {"node_id": registry.node_id}
        try:
            entries = await live_nodes(store, registry.settings.ttl_seconds)
        except StoreUnavailable as exc:
            body |= {"nodes": [], "store": store.state.value, "error": str(exc)}
            return JSONResponse(body)
        body |= {"nodes": [entry_json(e) for e in entries], "store": store.state.value}
        return JSONResponse(body)

    return [Route("/v1/fleet/nodes", nodes, methods=["GET"])]
