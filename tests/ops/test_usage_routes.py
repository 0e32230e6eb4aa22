"""`GET /v1/usage` through a real hypercorn over a real redis-server: sums by identity
(and node, region) over a window of entry ids, a record written twice counted once,
the read bound said as `truncated`; 401 without the token, 400 for a bad parameter,
404 without a fleet, no route without an admin token."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.http_client import http_request
from tests.helpers.redis_server import RedisServer
from tests.helpers.usage_records import T0_MS, TOKEN, usage_port, write_records
from trelay.fleet import usage_stream
from trelay.fleet.usage_stream import sum_usage

AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = T0_MS / 1000


def by_key(answer: Any, *fields: str) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(g[f] for f in fields): g for g in answer["groups"]}


async def test_sums_by_identity_over_windows(redis_server: RedisServer) -> None:
    async with usage_port(redis_server) as (http, store):
        assert store is not None
        await write_records(store)
        everything = (await http_request(http, "/v1/usage", headers=AUTH)).json()
        window = f"/v1/usage?since={T0 + 1.5}&until={T0 + 4}"
        windowed = (await http_request(http, window, headers=AUTH)).json()
        iso = "/v1/usage?since=2023-11-14T22:13:21.500Z&until=2023-11-14T22:13:24Z&identity=bob"
        bob = (await http_request(http, iso, headers=AUTH)).json()
    assert isinstance(everything, dict)
    assert (everything["entries_read"], everything["duplicates"]) == (5, 1)
    assert everything["truncated"] is False and everything["by"] == ["identity"]
    groups = by_key(everything, "identity")
    assert groups[("alice",)] == {
        "identity": "alice", "records": 3, "allocations_ended": 2,
        "client_to_peer_datagrams": 11, "client_to_peer_bytes": 115,
        "peer_to_client_datagrams": 22, "peer_to_client_bytes": 225,
        "allocation_seconds": 95.0,
    }  # fmt: skip
    assert groups[("bob",)]["client_to_peer_bytes"] == 30
    assert [g["identity"] for g in everything["groups"]] == ["alice", "bob"]  # most bytes first
    # [1.5 s, 4 s): alice's a2 and the retried copy of a1's first record, and bob's.
    assert isinstance(windowed, dict)
    assert windowed["entries_read"] == 3 and windowed["duplicates"] == 0
    assert by_key(windowed, "identity")[("alice",)]["client_to_peer_bytes"] == 110
    assert isinstance(bob, dict)
    assert [(g["identity"], g["peer_to_client_bytes"]) for g in bob["groups"]] == [("bob", 40)]


async def test_grouped_by_node_and_region(redis_server: RedisServer) -> None:
    async with usage_port(redis_server) as (http, store):
        assert store is not None
        await write_records(store)
        path = "/v1/usage?by=identity,node,region"
        answer = (await http_request(http, path, headers=AUTH)).json()
    groups = by_key(answer, "identity", "node", "region")
    assert set(groups) == {("alice", "n-a", "eu"), ("alice", "n-b", "eu"), ("bob", "n-a", "us")}
    assert groups[("alice", "n-a", "eu")]["client_to_peer_bytes"] == 105


async def test_the_read_bound_and_chunks(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_stream, "READ_CHUNK", 2)  # three XRANGE calls for five entries
    async with usage_port(redis_server) as (_, store):
        assert store is not None
        await write_records(store)
        whole = await sum_usage(store, since_ms=None, until_ms=None)
        cut = await sum_usage(store, since_ms=None, until_ms=None, max_entries=3)
        exact = await sum_usage(store, since_ms=T0_MS, until_ms=T0_MS + 3000, max_entries=3)
    assert (whole.entries_read, whole.truncated) == (5, False)
    assert (cut.entries_read, cut.truncated) == (3, True)
    assert (exact.entries_read, exact.truncated) == (3, False)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("by=user", "by: expected some of identity, node, region, transport, got 'user'"),
        ("by=node,node", "by: a field named twice in 'node,node'"),
        ("since=yesterday", "since: expected Unix seconds or ISO 8601, got 'yesterday'"),
        ("until=-5", "until: expected a time after 1970, got '-5'"),
        ("identity=", "identity: empty"),
    ],
)
async def test_bad_parameters(redis_server: RedisServer, query: str, message: str) -> None:
    async with usage_port(redis_server) as (http, _):
        response = await http_request(http, f"/v1/usage?{query}", headers=AUTH)
    assert response.status == 400
    assert response.json() == {"error": "bad_parameter", "message": message}


async def test_token_fleet_and_route_presence() -> None:
    async with usage_port(None) as (http, _):
        unauthorized = await http_request(http, "/v1/usage")
        wrong = await http_request(http, "/v1/usage", headers={"Authorization": "Bearer nope"})
        no_fleet = await http_request(http, "/v1/usage", headers=AUTH)
    assert (unauthorized.status, wrong.status) == (401, 401)
    assert no_fleet.status == 404
    assert no_fleet.json() == {
        "error": "no_fleet",
        "message": "usage records are summed from the fleet's Redis",
    }
    async with usage_port(None, token=None) as (http, _):
        response = await http_request(http, "/v1/usage", headers=AUTH)
    assert (response.status, response.json()) == (404, {"error": "not found"})
