"""`trelay serve --workers 2` in a fleet, on a real redis-server: each worker follows Redis
itself, so a revocation written once is refused by both workers (Allocates from many
client sockets, which SO_REUSEPORT spreads over the workers, all get 401, and each
worker logs it, as does the supervisor, which follows them for its token API), and a
secret added in Redis is accepted by both."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers.fleet_nodes import allocate_code, credential
from tests.helpers.fleet_store import connected_store, eventually
from tests.helpers.redis_server import RedisServer
from tests.helpers.trelay_process import running_trelay
from trelay.fleet.revocations import RedisRevocationWriter
from trelay.fleet.secrets import add_secret

SECRET = "workers-configured-secret"
SOURCES = 12  # client sockets: with two workers, both are all but certain to answer some
PROPAGATION_BOUND = 15.0


def config(tmp_path: Path, server: RedisServer) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[listen]\nudp = ["127.0.0.1:0"]\n[http]\nlisten = ["127.0.0.1:0"]\n'
        f'[fleet]\nredis_url = "{server.url}"\nnode_id = "w"\n'
    )
    return path


async def all_answer(server: tuple[str, int], secret: str, identity: str, code: int) -> bool:
    username, password = credential(secret, identity)
    for _ in range(SOURCES):
        if await allocate_code(server, username, password) != code:
            return False
    return True


async def test_both_workers_follow_revocations_and_secrets(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    args = ("--config", str(config(tmp_path, redis_server)), "--workers", "2", "--secret", SECRET)
    async with connected_store(redis_server) as store, running_trelay(tmp_path, *args) as running:
        [udp] = running.addresses("udp")
        assert await all_answer(udp, SECRET, "mallory", 0)

        now = time.time()
        await RedisRevocationWriter(store).revoke("mallory", now + 600, now)

        async def refused() -> bool:
            return await all_answer(udp, SECRET, "mallory", 401)

        took = await eventually(refused, PROPAGATION_BOUND)
        print(f"revocation refused by both workers after {took:.3f} s")

        async def every_process_logged() -> bool:
            # Both workers, and the supervisor, whose token API checks revocations too.
            return running.stderr_path.read_text().count("revoked from Redis") == 3

        await eventually(every_process_logged, PROPAGATION_BOUND)
        assert await all_answer(udp, SECRET, "alice", 0)

        added = await add_secret(store, time.time())

        async def accepted() -> bool:
            return await all_answer(udp, added.secret, "alice", 0)

        await eventually(accepted, PROPAGATION_BOUND)
        assert added.secret not in running.stderr_path.read_text()
