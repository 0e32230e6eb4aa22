"""TURN REST secrets in Redis, on a real redis-server with nodes started in-process: a
secret added once works on every node beside the configured one, a retired one stops
working; minting waits for the activation delay; a reload of the configured secrets keeps
the fleet's; listings and logs show fingerprints, never secrets."""

from __future__ import annotations

import logging
import time

import pytest
import trio

from tests.helpers.fleet_nodes import (
    CONFIGURED_SECRET,
    FleetNode,
    allocate_code,
    credential,
    start_fleet_node,
)
from tests.helpers.fleet_store import connected_store, eventually
from tests.helpers.redis_server import RedisServer
from trelay.fleet.secrets import (
    MAX_SECRETS,
    SECRETS_KEY,
    FleetSecret,
    FleetSecrets,
    add_secret,
    fingerprint,
    list_secrets,
    retire_secret,
)
from trelay.turn.credential_sources import SharedSecrets

PROPAGATION_BOUND = 10.0


async def codes(nodes: list[FleetNode], secret: str) -> list[int]:
    username, password = credential(secret, "alice")
    return [await allocate_code(n.udp, username, password) for n in nodes]


async def test_a_secret_added_in_redis_works_on_every_node_until_retired(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with connected_store(redis_server) as store, trio.open_nursery() as nursery:
        nodes = [await start_fleet_node(nursery, redis_server.url, f"n{i}") for i in range(3)]
        added = await add_secret(store, time.time())

        async def accepted() -> bool:
            return await codes(nodes, added.secret) == [0, 0, 0]

        took = await eventually(accepted, PROPAGATION_BOUND)
        print(f"new secret accepted by 3 nodes after {took:.3f} s")
        # The configured secret still works beside it.
        assert await codes(nodes, CONFIGURED_SECRET) == [0, 0, 0]
        for node in nodes:
            assert [s.fingerprint for s in node.link.secrets.held] == [added.fingerprint]

        assert await retire_secret(store, added.fingerprint) is True
        assert await retire_secret(store, added.fingerprint) is False

        async def refused() -> bool:
            return await codes(nodes, added.secret) == [401, 401, 401]

        await eventually(refused, PROPAGATION_BOUND)
        assert await codes(nodes, CONFIGURED_SECRET) == [0, 0, 0]
        nursery.cancel_scope.cancel()
    assert added.secret not in caplog.text
    assert added.fingerprint in caplog.text


async def test_a_node_started_later_knows_the_secrets(redis_server: RedisServer) -> None:
    async with connected_store(redis_server) as store, trio.open_nursery() as nursery:
        added = await add_secret(store, time.time())
        node = await start_fleet_node(nursery, redis_server.url, "late")

        async def accepted() -> bool:
            return await codes([node], added.secret) == [0]

        await eventually(accepted, PROPAGATION_BOUND)
        nursery.cancel_scope.cancel()


async def test_listing_bounds_and_malformed_entries(redis_server: RedisServer) -> None:
    async with connected_store(redis_server) as store:
        first = await add_secret(store, 1000.0)
        second = await add_secret(store, 2000.0)
        assert first.secret not in repr(first)
        assert [s.fingerprint for s in await list_secrets(store)] == [
            second.fingerprint,
            first.fingerprint,
        ]
        await store.call(lambda c: c.hset(SECRETS_KEY, {"junk": "not json"}))
        assert len(await list_secrets(store)) == 2
        await store.call(lambda c: c.hdel(SECRETS_KEY, ["junk"]))
        for index in range(MAX_SECRETS - 2):
            await add_secret(store, 3000.0 + index)
        with pytest.raises(ValueError, match="retire one"):
            await add_secret(store, 9000.0)


def test_minting_waits_for_the_activation_delay() -> None:
    now = [1000.0]
    cache = FleetSecrets("configured", activation_seconds=60.0, wall_clock=lambda: now[0])
    assert cache.minting_secret() == "configured"
    cache.use([FleetSecret("old", 500.0), FleetSecret("new", 990.0)])
    assert cache.minting_secret() == "old"  # "new" is not known everywhere yet
    now[0] = 1050.0
    assert cache.minting_secret() == "new"
    with pytest.raises(LookupError):
        FleetSecrets(None).minting_secret()


def test_shared_secrets_keep_the_fleets_across_a_reload() -> None:
    secrets = SharedSecrets(["configured"], "example.org")
    secrets.share(["fleet-1", "configured"])
    username = "2000000000:alice"
    assert len(secrets.candidates(username)) == 2  # one per distinct secret
    secrets.replace(["reloaded"])  # a settings reload or a secrets file
    assert len(secrets.candidates(username)) == 3
    secrets.share([])  # the fleet's retired: the configured stay
    assert len(secrets.candidates(username)) == 1


def test_fingerprints_are_stable_and_not_the_secret() -> None:
    assert fingerprint("s3cret") == fingerprint("s3cret") != fingerprint("s3cret!")
    assert len(fingerprint("s3cret")) == 16 and "s3cret" not in fingerprint("s3cret")
