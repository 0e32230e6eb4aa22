"""Usage records of a real `trelay serve --workers 2` in a fleet (real redis-server): each
worker writes its own allocations' records to the stream (its own node link), and the
supervisor's `GET /v1/usage` sums them: every allocation, on whichever worker, ends with
one final record there, named with the configured node id and region."""

from __future__ import annotations

import signal
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from tests.helpers.http_client import http_request
from tests.helpers.redis_server import RedisServer
from tests.helpers.supervised import running_workers
from tests.helpers.turn_client import TurnClient, udp_client

TOKEN = "usage-token-for-the-worker-tests-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_CLIENTS = 32  # until both workers hold allocations (the kernel picks by hash)
WAIT = 30.0


def config(tmp_path: Path, redis: RedisServer) -> Path:
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    path = tmp_path / "trelay.toml"
    path.write_text(
        '[listen]\nudp = ["127.0.0.1:0"]\n'
        f'[http]\nlisten = ["127.0.0.1:0"]\nadmin_token_file = "{token}"\n'
        '[auth]\nusers = { alice = "wonderland" }\n'
        f'[fleet]\nredis_url = "{redis.url}"\nnode_id = "w-node"\nregion = "eu"\n'
        "[usage]\ninterval_seconds = 3600\n"
    )
    return path


async def test_both_workers_write_records(tmp_path: Path, redis_server: RedisServer) -> None:
    args = ("--config", str(config(tmp_path, redis_server)), "--workers", "2")
    async with running_workers(tmp_path, *args) as node, AsyncExitStack() as stack:
        clients: list[TurnClient] = []
        workers: Counter[int] = Counter()
        [udp] = node.addresses("udp")
        while len(clients) < MAX_CLIENTS and len(workers) < 2:
            client = await stack.enter_async_context(udp_client(udp))
            await client.allocate()
            clients.append(client)
            listing = (await http_request(node.http, "/v1/sessions", headers=AUTH)).json()
            assert isinstance(listing, dict)
            workers = Counter(s["worker"] for s in listing["sessions"])
        assert set(workers) == {0, 1}, workers
        for client in clients:
            assert await client.refresh(0) == 0

        answer: object = None
        with trio.fail_after(WAIT):
            while True:  # the workers' links write within moments; bounded by the timeout
                response = await http_request(node.http, "/v1/usage?by=identity,node,region",
                                              headers=AUTH)  # fmt: skip
                answer = response.json()
                assert response.status == 200, answer
                assert isinstance(answer, dict)
                groups = answer["groups"]
                if groups and groups[0]["allocations_ended"] == len(clients):
                    break
                await trio.sleep(0.1)
        assert await node.stop(signal.SIGTERM) == 0
    assert isinstance(answer, dict)
    [group] = answer["groups"]
    assert (group["identity"], group["node"], group["region"]) == ("alice", "w-node", "eu")
    assert group["records"] == len(clients)  # one final record each, no interval passed
