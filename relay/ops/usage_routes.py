"""Usage sums on the operator port: `GET /v1/usage`, behind the admin token.

Owns the route that sums the fleet's usage records (issue 12 part 6, as Cloudflare's
TURN analytics per identity; design §9):

    GET /v1/usage?identity=ID&since=T&until=T&by=identity,node,region,transport

- `since`, `until`: Unix seconds or ISO 8601 (`2024-05-01T12:00:00Z`; no zone: UTC),
  the window [since, until) of when records were written to the stream (entry ids;
  `trelay.fleet.usage_stream.sum_usage`); absent: open ended.
- `by`: the grouping, any of identity, node, region, transport (default identity).
- 200 `{"since", "until", "by", "groups": [{<by fields>, "records", "allocations_ended",
  "client_to_peer_datagrams", "client_to_peer_bytes", "peer_to_client_datagrams",
  "peer_to_client_bytes", "allocation_seconds"}], "entries_read", "duplicates",
  "truncated"}`, groups by most bytes first. `truncated`: the read bound
  (`MAX_ENTRIES_READ` entries) was hit before the window's end: narrow the window.
- 400 for a bad parameter, 404 without a fleet (`{"error": "no_fleet"}`), 503 while
  Redis does not answer; errors are `{"error", "message"}`.

The admin token is checked by `trelay.ops.admin_routes.admin_refusal` (401 without it);
without `[http] admin_token_file` the route does not exist. Identities appear in the
JSON (only the token's holder sees it); no metric carries one.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from trelay.fleet.store import RedisStore, StoreUnavailable
from trelay.fleet.usage_stream import GROUP_FIELDS, UsageSummary, sum_usage
from trelay.ops.admin_routes import admin_refusal


class BadParameter(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")


def usage_routes(token: str | None, store: RedisStore | None) -> list[BaseRoute]:
    """`GET /v1/usage` guarded by `token` (none without a token); `store`: the fleet's
    (None: a node alone, the route answers 404)."""
    if token is None:
        return []

    async def usage(request: Request) -> Response:
        refused = admin_refusal(token, request)
        if refused is not None:
            return refused
        if store is None:
            return _error(404, "no_fleet", "usage records are summed from the fleet's Redis")
        query = request.query_params
        try:
            since = parse_time("since", query.get("since"))
            until = parse_time("until", query.get("until"))
            by = parse_by(query.get("by"))
            identity = query.get("identity")
            if identity == "":
                raise BadParameter("identity", "empty")
        except BadParameter as exc:
            return _error(400, "bad_parameter", str(exc))
        try:
            summary = await sum_usage(
                store,
                since_ms=None if since is None else math.floor(since * 1000),
                until_ms=None if until is None else math.ceil(until * 1000),
                by=by,
                identity=identity,
            )
        except StoreUnavailable as exc:
            return _error(503, "fleet_unavailable", str(exc))
        return JSONResponse(summary_json(summary, since, until))

    return [Route("/v1/usage", usage, methods=["GET"])]


def parse_time(name: str, value: str | None) -> float | None:
    """Unix seconds from a number or an ISO 8601 time (UTC unless it says otherwise)."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadParameter(name, f"expected Unix seconds or ISO 8601, got {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        seconds = moment.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise BadParameter(name, f"expected a time after 1970, got {value!r}")
    return seconds


def parse_by(value: str | None) -> tuple[str, ...]:
    if value is None or value == "":
        return ("identity",)
    names = tuple(part.strip() for part in value.split(","))
    for name in names:
        if name not in GROUP_FIELDS:
            raise BadParameter("by", f"expected some of {', '.join(GROUP_FIELDS)}, got {name!r}")
    if len(set(names)) != len(names):
        raise BadParameter("by", f"a field named twice in {value!r}")
    return names


def summary_json(summary: UsageSummary, since: float | None, until: float | None) -> dict[str, Any]:
    groups = []
    for key, totals in summary.groups.items():
        group: dict[str, Any] = dict(zip(summary.by, key, strict=True))
        group.update(
            records=totals.records,
            allocations_ended=totals.allocations_ended,
            client_to_peer_datagrams=totals.client_to_peer_datagrams,
            client_to_peer_bytes=totals.client_to_peer_bytes,
            peer_to_client_datagrams=totals.peer_to_client_datagrams,
            peer_to_client_bytes=totals.peer_to_client_bytes,
            allocation_seconds=round(totals.allocation_seconds, 3),
        )
        groups.append(group)
    groups.sort(key=lambda g: -(g["client_to_peer_bytes"] + g["peer_to_client_bytes"]))
    return {
        "since": since,
        "until": until,
        "by": list(summary.by),
        "groups": groups,
        "entries_read": summary.entries_read,
        "duplicates": summary.duplicates,
        "truncated": summary.truncated,
    }


def _error(status: int, error: str, message: str) -> Response:
    return JSONResponse({"error": error, "message": message}, status_code=status)
