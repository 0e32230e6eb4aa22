"""Redis load of the fleet-wide quota sync (`trelay.fleet.quotas`), for the capacity plan.

Starts a throw-away redis-server on loopback, then for each N runs one full step of a
`QuotaSync` holding N identities (the worst case: one allocation per identity) and one
step with 1% of them changed, and prints the commands sent, Redis's own count of the
commands it processed (INFO stats), the step's wall time, and the commands per second
per process that follow at the default heartbeat (5 s) and sync interval (1 s).

    .venv/bin/python -m benchmarks.quota_sync [N ...]     (default: 100 1000 10000)

Never asserted in CI.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import trio

from tests.helpers.redis_server import RedisServer
from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.quotas import QuotaSync
from trelay.fleet.store import RedisStore

HEARTBEAT = 5.0


class Counts:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def identity_counts(self) -> Mapping[str, int]:
        return self.counts

    def use_remote_counts(self, counts: Mapping[str, int]) -> None:
        pass


async def processed(store: RedisStore) -> int:
    info = await store.call(lambda c: c.info("stats"))
    return int(str(info["total_commands_processed"]))


async def measure(url: str, sizes: list[int]) -> None:
    settings = FleetSettings(redis_url=url, heartbeat_seconds=HEARTBEAT)
    store = RedisStore(settings, call_timeout=30.0)
    async with store.opened():
        with trio.fail_after(10):
            await store.wait_connected()
        print(f"{'N':>7} {'full: cmds':>11} {'redis':>7} {'ms':>7} {'1% changed: cmds':>17} "
              f"{'ms':>6} {'cmds/s at 5 s heartbeat':>24}")  # fmt: skip
        for n in sizes:
            core = Counts({f"bench-{n}-{i}": 1 for i in range(n)})
            sync = QuotaSync(store, settings, core, f"bench:{n}", clock=lambda: 0.0)
            before = await processed(store)
            started = time.perf_counter()
            await sync.step()
            full_ms = (time.perf_counter() - started) * 1000
            full_redis = await processed(store) - before - 1  # less our INFO
            for i in range(0, n, 100):
                core.counts[f"bench-{n}-{i}"] = 2
            sent = sync.commands
            started = time.perf_counter()
            await sync.step()
            change_ms = (time.perf_counter() - started) * 1000
            per_second = sent / HEARTBEAT
            print(f"{n:>7} {sent:>11} {full_redis:>7} {full_ms:>7.1f} "
                  f"{sync.commands - sent:>17} {change_ms:>6.1f} {per_second:>24.0f}")  # fmt: skip


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 10000]
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory), executable)
        server.start()
        try:
            trio.run(measure, server.url, sizes)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
