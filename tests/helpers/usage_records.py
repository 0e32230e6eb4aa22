"""Usage records written straight into the fleet's stream with chosen entry ids (so a
test picks the window each lands in), and an operator port serving `GET /v1/usage`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.helpers.redis_server import RedisServer
from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.store import RedisStore
from trelay.fleet.usage_stream import STREAM_KEY
from trelay.node.usage import UsageRecord
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http
from trelay.ops.usage_routes import usage_routes

TOKEN = "usage-admin-token-0123456789"
T0_MS = 1_700_000_000_000  # the window tests' origin: entry ids are T0_MS + offsets


def record(
    allocation: str, seq: int, identity: str, node: str, to_peer: int, to_client: int,
    *, final: bool = False, seconds: float = 60.0, region: str = "eu",
) -> UsageRecord:  # fmt: skip
    return UsageRecord(
        allocation=allocation, seq=seq, identity=identity, node=node, region=region,
        transport="udp", family="ipv4", start=1_700_000_000.0, end=1_700_000_060.0,
        client_to_peer_datagrams=to_peer // 10, client_to_peer_bytes=to_peer,
        peer_to_client_datagrams=to_client // 10, peer_to_client_bytes=to_client,
        allocation_seconds=seconds, final=final,
    )  # fmt: skip


# (entry id offset in ms, record): alice on two nodes, bob on one, one record written twice.
RECORDS = [
    (1000, record("a1", 0, "alice", "n-a", 100, 200)),
    (2000, record("a2", 0, "alice", "n-b", 10, 20, final=True, seconds=5.0)),
    (2500, record("a1", 0, "alice", "n-a", 100, 200)),  # a retried batch: counted once
    (3000, record("b1", 0, "bob", "n-a", 30, 40, final=True, region="us")),
    (5000, record("a1", 1, "alice", "n-a", 5, 5, final=True, seconds=30.0)),
]


async def write_records(store: RedisStore) -> None:
    for offset, entry in RECORDS:
        flat = entry.flat()
        ident = f"{T0_MS + offset}-0"
        await store.call(lambda c: c.xadd(STREAM_KEY, flat, identifier=ident))  # noqa: B023


@asynccontextmanager
async def usage_port(
    redis: RedisServer | None, token: str | None = TOKEN
) -> AsyncIterator[tuple[tuple[str, int], RedisStore | None]]:
    """An operator port with `GET /v1/usage` over `redis`'s stream (None: no fleet)."""
    async with trio.open_nursery() as nursery:
        if redis is None:
            app = build_app(NodeStatus(), extra_routes=usage_routes(token, None))
            yield await nursery.start(serve_http, "127.0.0.1", 0, app), None
        else:
            store = RedisStore(FleetSettings(redis_url=redis.url), call_timeout=2.0)
            async with store.opened():
                with trio.fail_after(10):
                    await store.wait_connected()
                app = build_app(NodeStatus(), extra_routes=usage_routes(token, store))
                yield await nursery.start(serve_http, "127.0.0.1", 0, app), store
        nursery.cancel_scope.cancel()
