"""`trelay serve` in a fleet, on a real redis-server: the node publishes its entry, keeps
relaying when Redis goes away (/readyz 200 with "fleet": "lost", the metric 0, one log
line each way) and rejoins; the supervisor of workers publishes one entry; a node with
no [fleet] shows nothing of it."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers.fleet_store import eventually, new_store
from tests.helpers.http_client import http_request
from tests.helpers.redis_server import RedisServer
from tests.helpers.trelay_process import Running, allocate_with, running_trelay, stop
from trelay.fleet.registry import NodeEntry, live_nodes
from trelay.fleet.store import RedisStore

WAIT = 30.0
TTL = 2.0


async def readyz(running: Running) -> tuple[int, object]:
    [http] = running.addresses("http")
    response = await http_request(http, "/readyz")
    return response.status, response.json()


async def metrics_text(running: Running) -> str:
    [http] = running.addresses("http")
    return (await http_request(http, "/metrics")).text


def fleet_config(tmp_path: Path, server: RedisServer) -> Path:
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[listen]\nudp = ["127.0.0.1:0"]\n[http]\nlisten = ["127.0.0.1:0"]\n'
        f'[fleet]\nredis_url = "{server.url}"\nnode_id = "n1"\nregion = "eu"\n'
        'public_uris = ["turn:n1.example.org:3478?transport=udp"]\n'
        f"heartbeat_seconds = 0.2\nttl_seconds = {TTL}\n"
    )
    return config


async def nodes_now(reader: RedisStore) -> dict[str, NodeEntry]:
    if not reader.connected:
        return {}
    return {n.node_id: n for n in await live_nodes(reader, TTL)}


async def test_a_node_publishes_keeps_relaying_without_redis_and_rejoins(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    reader = new_store(redis_server)
    config = fleet_config(tmp_path, redis_server)
    async with reader.opened(), running_trelay(tmp_path, "--config", str(config)) as running:
        seen: dict[str, NodeEntry] = {}

        async def node_listed() -> bool:
            seen.update(await nodes_now(reader))
            # The first entry may come before the node is ready: it publishes as soon as
            # Redis answers (the node link's own connection makes that likely).
            return "n1" in seen and seen["n1"].ready

        await eventually(node_listed, WAIT)
        assert seen["n1"].region == "eu"
        assert seen["n1"].public_uris == ("turn:n1.example.org:3478?transport=udp",)
        assert seen["n1"].ready is True
        assert await readyz(running) == (200, {"status": "ready", "fleet": "connected"})
        assert "trelay_fleet_connected 1.0" in await metrics_text(running)

        redis_server.stop()

        async def fleet_lost() -> bool:
            return (await readyz(running))[1] == {"status": "ready", "fleet": "lost"}

        await eventually(fleet_lost, WAIT)
        assert "trelay_fleet_connected 0.0" in await metrics_text(running)
        # The node still relays and verifies credentials without Redis.
        [udp] = running.addresses("udp")
        servers = running.ready["ice_servers"]
        assert isinstance(servers, list)
        await allocate_with(udp, servers[1]["username"], servers[1]["credential"])

        redis_server.start()

        async def fleet_back() -> bool:
            return (await readyz(running))[1] == {"status": "ready", "fleet": "connected"}

        await eventually(fleet_back, WAIT)
        seen.clear()
        await eventually(node_listed, WAIT)
        assert await stop(running, signal.SIGTERM) == 0
    stderr = running.stderr_path.read_text()
    assert stderr.count("lost Redis") == 1, stderr
    assert stderr.count("is back after") == 1, stderr


async def test_the_supervisor_of_workers_publishes_one_entry(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    reader = new_store(redis_server)
    args = ("--workers", "2", "--redis-url", redis_server.url, "--region", "ap")
    async with reader.opened(), running_trelay(tmp_path, *args) as running:
        seen: dict[str, NodeEntry] = {}

        async def one_listed() -> bool:
            seen.update(await nodes_now(reader))
            return len(seen) == 1 and all(n.ready for n in seen.values())

        await eventually(one_listed, WAIT)
        [entry] = seen.values()
        assert entry.region == "ap"
        assert entry.allocations == 0
        assert await readyz(running) == (200, {"status": "ready", "fleet": "connected"})
        assert await stop(running, signal.SIGTERM) == 0


async def test_a_node_without_fleet_settings_shows_no_fleet(tmp_path: Path) -> None:
    async with running_trelay(tmp_path) as running:
        assert await readyz(running) == (200, {"status": "ready"})
        assert "trelay_fleet_connected" not in await metrics_text(running)
        assert await stop(running, signal.SIGTERM) == 0
    assert "fleet" not in running.stderr_path.read_text()
