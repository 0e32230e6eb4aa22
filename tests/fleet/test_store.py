"""The fleet store on a real redis-server: connect, lose, keep answering, rejoin; logged
once each way, never per attempt; a command's store (`logged=False`) logs nothing and
keeps why it failed for the command's own line."""

from __future__ import annotations

import logging

import pytest
import trio

from tests.helpers.fleet_store import eventually, new_store
from tests.helpers.redis_server import RedisServer
from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.redis_client import Client
from trelay.fleet.store import RedisStore, StoreState, StoreUnavailable


def store_lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trelay.fleet.store" and words in r.getMessage()
    ]


async def test_store_connects_loses_and_rejoins_with_one_line_each_way(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trelay.fleet.store")
    store = new_store(redis_server, backoff_max=0.1)
    async with store.opened():
        await eventually(lambda: store.connected)
        assert await store.call(lambda c: c.set("k", "v")) is True
        assert await store.call(lambda c: c.get("k")) == "v"

        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.call(lambda c: c.get("k"))
        assert store.state is StoreState.LOST
        assert store.lost_since is not None
        # Several reconnection attempts fail, and calls are refused at once meanwhile.
        await eventually(lambda: store.failed_probes >= 3)
        with pytest.raises(StoreUnavailable, match="lost"):
            await store.call(lambda c: c.ping())

        redis_server.start()
        await eventually(lambda: store.connected)
        assert store.lost_since is None
        assert await store.call(lambda c: c.set("k", "w")) is True
    assert len(store_lines(caplog, "connected to Redis")) == 1
    assert len(store_lines(caplog, "lost Redis")) == 1
    assert len(store_lines(caplog, "is back after")) == 1
    assert not store_lines(caplog, "cannot reach")


async def test_store_that_never_reached_redis_says_so_once_and_joins_later(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trelay.fleet.store")
    redis_server.stop()
    store = new_store(redis_server, backoff_max=0.1)
    assert store.state.value == "connecting"
    async with store.opened():
        await eventually(lambda: store.failed_probes >= 3)
        assert store.state is StoreState.LOST
        redis_server.start()
        await eventually(lambda: store.connected)
    assert len(store_lines(caplog, "cannot reach Redis")) == 1
    assert len(store_lines(caplog, "is back after")) == 1


async def test_password_from_settings_reaches_a_redis_that_requires_one(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    redis_server.password = "hunter2"
    redis_server.start()
    right = FleetSettings(redis_url=redis_server.url, redis_password="hunter2")
    wrong = FleetSettings(redis_url=redis_server.url, redis_password="wrong")
    assert "hunter2" not in repr(right)
    stores = [RedisStore(right, call_timeout=1.0), RedisStore(wrong, call_timeout=1.0)]
    async with stores[0].opened(), stores[1].opened():
        await eventually(lambda: stores[0].connected and stores[1].failed_probes >= 1)
        assert stores[1].state is StoreState.LOST


async def test_a_commands_store_logs_nothing_and_keeps_the_reason(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trelay.fleet.store")
    redis_server.stop()
    settings = FleetSettings(redis_url=redis_server.url)
    quiet = RedisStore(settings, call_timeout=1.0, backoff_max=0.1, logged=False)
    assert quiet.last_failure is None
    async with quiet.opened():
        await eventually(lambda: quiet.failed_probes >= 2)
        assert quiet.state is StoreState.LOST
        assert quiet.last_failure is not None and "127.0.0.1" in quiet.last_failure
        redis_server.start()
        await eventually(lambda: quiet.connected)
    assert store_lines(caplog, "Redis") == []


async def test_a_call_whose_client_closes_under_it_is_unavailable(
    redis_server: RedisServer,
) -> None:
    # A node stopping while a usage write is in a pipeline's shielded part: the pool
    # exits under it and coredis raises RuntimeError, which must reach the caller as
    # StoreUnavailable (the usage stream then logs the record), not end the node.
    store = new_store(redis_server)
    began, closed = trio.Event(), trio.Event()

    async def write_after_close(client: Client) -> None:
        began.set()
        with trio.CancelScope(shield=True):
            await closed.wait()
            await client.set("trelay:fleet:test", "late")

    async def call() -> None:
        with pytest.raises(StoreUnavailable, match="client closed"):
            await store.call(write_after_close)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with store.opened():
                await store.wait_connected()
                nursery.start_soon(call)
                await began.wait()
            closed.set()
