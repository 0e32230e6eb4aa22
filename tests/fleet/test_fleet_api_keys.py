"""API keys in Redis (`trelay.fleet.api_keys`) on a real redis-server: a key added works on
two API nodes within their refresh and stops working on both once removed; the keys
file wins a SID clash (logged once); bad entries are skipped, secrets never logged; the
last keys stay while Redis is away."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.helpers.fleet_store import connected_store, eventually, new_store
from tests.helpers.http_client import http_request
from tests.helpers.redis_server import RedisServer
from tests.helpers.token_harness import ACCOUNT, KEY, TURN_SECRET
from trelay.config.api_keys import ApiKey, ApiKeys
from trelay.credentials.ice_uris import static_uris
from trelay.credentials.token_api import TokenApiContext, token_routes
from trelay.fleet.api_keys import (
    API_KEYS_KEY,
    FleetApiKeys,
    add_key,
    key_json,
    read_stored,
    remove_key,
)
from trelay.fleet.store import StoreUnavailable
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http

REFRESH = 0.2
NTS = f"/2010-04-01/Accounts/{ACCOUNT}/Tokens.json"


@asynccontextmanager
async def api_node(server: RedisServer, file_keys: ApiKeys) -> AsyncIterator[tuple[str, int]]:
    """One API node: its own store, the keys' follower, the token API on a loopback port."""
    store = new_store(server)
    keys = FleetApiKeys(store, file_keys, refresh_seconds=REFRESH)
    context = TokenApiContext(
        keys=keys.current, secret=lambda: TURN_SECRET, uris=static_uris(("stun:x:3478",))
    )
    app = build_app(NodeStatus(), extra_routes=token_routes(context))
    async with store.opened(), trio.open_nursery() as nursery:
        await nursery.start(keys.run)
        yield await nursery.start(serve_http, "127.0.0.1", 0, app)
        nursery.cancel_scope.cancel()


async def status_with(address: tuple[str, int], key: ApiKey) -> int:
    pair = base64.b64encode(f"{key.sid}:{key.secret}".encode()).decode()
    path = f"/2010-04-01/Accounts/{key.account}/Tokens.json"
    answer = await http_request(address, path, "POST", {"Authorization": f"Basic {pair}"})
    return answer.status


async def test_a_key_added_works_on_every_api_node_and_removed_stops(
    redis_server: RedisServer,
) -> None:
    async with (
        connected_store(redis_server) as operator,
        api_node(redis_server, ApiKeys((KEY,))) as first,
        api_node(redis_server, ApiKeys()) as second,
    ):
        key = await add_key(operator, ACCOUNT)
        assert await status_with(first, KEY) == 201  # the file's key, as before

        async def both_accept() -> bool:
            return [await status_with(a, key) for a in (first, second)] == [201, 201]

        await eventually(both_accept)
        assert await remove_key(operator, key.sid)
        assert not await remove_key(operator, key.sid)

        async def both_refuse() -> bool:
            return [await status_with(a, key) for a in (first, second)] == [401, 401]

        await eventually(both_refuse)
        assert await status_with(first, KEY) == 201


async def test_the_file_wins_a_clash_and_bad_entries_are_skipped(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    impostor = ApiKey(KEY.sid, "I" * 40, ACCOUNT)
    good = ApiKey("SK" + "ab" * 16, "G" * 40, ACCOUNT)
    async with connected_store(redis_server) as store:
        entries = {
            KEY.sid: key_json(impostor, 0.0),
            good.sid: key_json(good, 0.0),
            "SKnot-a-sid": key_json(good, 0.0),
            "SK" + "cd" * 16: '{"account": "AC0", "secret": "short-secret"}',
        }
        await store.call(lambda c: c.hset(API_KEYS_KEY, entries))
        follower = FleetApiKeys(store, ApiKeys((KEY,)))
        for _ in range(2):
            await follower.refresh()
        merged = follower.current()
        assert merged.by_sid(KEY.sid) == KEY  # the file's secret, not the impostor's
        assert merged.by_sid(good.sid) == good
        assert len(merged) == 2
        stored, problems = await read_stored(store)
        assert len(stored) == 2 and len(problems) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the file's is used" in m for m in messages) == 1
    assert sum("ignored" in m for m in messages) == 2
    assert not any(secret in m for m in messages for secret in ("I" * 40, "G" * 40, "short"))


async def test_the_last_keys_stay_while_redis_is_away(redis_server: RedisServer) -> None:
    async with connected_store(redis_server) as store:
        key = await add_key(store, ACCOUNT)
        follower = FleetApiKeys(store, None, refresh_seconds=REFRESH)
        async with trio.open_nursery() as nursery:
            await nursery.start(follower.run)

            async def known() -> bool:
                return follower.current().by_sid(key.sid) is not None

            await eventually(known)
            redis_server.stop()

            async def lost() -> bool:
                return not store.connected

            await eventually(lost)  # the follower's next read failed
            with pytest.raises(StoreUnavailable):
                await follower.refresh()
            assert follower.current().by_sid(key.sid) == key
            nursery.cancel_scope.cancel()
