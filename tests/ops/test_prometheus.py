"""A real Prometheus (Debian package `prometheus`) scrapes trelay during an aioice call.

The test starts `/usr/bin/prometheus` on 127.0.0.1 with a temporary config (scrape
every second) and data directory, and a trelay node with its operator port in a trio
thread. Two aioice agents, forced to relay-only candidates (as in
tests/interop/test_turn_aioice.py), keep exchanging datagrams through the node while
the test asks Prometheus's query API for `rate(trelay_relayed_bytes_total[5s])` and
`trelay_allocations_active` until they are non-zero and >= 2 (bounded polling).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from tests.helpers.aioice_call import connected_pair
from tests.helpers.turn_relay import PASSWORD, REALM, USERNAME
from trelay.icekit.loopback_relay import (
    LoopbackRelay,
    RelayCredentials,
    start_relay,
    trio_in_thread,
)
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http
from trelay.ops.metrics import node_registry
from trelay.turn.config import TurnConfig

pytestmark = pytest.mark.interop
PROMETHEUS = Path("/usr/bin/prometheus")
TIMEOUT = 20.0
QUERY_DEADLINE = 40.0


@contextmanager
def node_with_operator_port() -> Iterator[tuple[LoopbackRelay, tuple[str, int]]]:
    config = TurnConfig(realm=REALM, relay_host="127.0.0.1")
    credentials = RelayCredentials(USERNAME, PASSWORD, REALM)

    async def start(nursery: trio.Nursery) -> tuple[LoopbackRelay, tuple[str, int]]:
        relay = await start_relay(nursery, config=config, credentials=credentials)
        status = NodeStatus(listeners_bound=True)
        app = build_app(status, registry=node_registry(relay.node, ready=lambda: status.ready))
        http: tuple[str, int] = await nursery.start(serve_http, "127.0.0.1", 0, app)
        return relay, http

    with trio_in_thread(start, "trelay-prometheus-test") as running:
        yield running


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, object] = json.load(response)
        return result


@contextmanager
def prometheus(target: tuple[str, int], workdir: Path) -> Iterator[str]:
    """Prometheus scraping `target` every second; yields its base URL once it is ready."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: trelay\n    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n    static_configs:\n"
        f"      - targets: ['{target[0]}:{target[1]}']\n",
        encoding="utf-8",
    )
    port = free_tcp_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert process.poll() is None, (workdir / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def query(base: str, expression: str) -> float | None:
    """The value of a scalar-like PromQL expression now, or None when it has no result."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    answer = http_json(url)
    assert answer["status"] == "success", answer
    data = answer["data"]
    assert isinstance(data, dict)
    result = data["result"]
    if not result:
        return None
    return float(result[0]["value"][1])


async def call_while(server: tuple[str, int], check: asyncio.Future[None]) -> int:
    """A relay-only aioice call sending both ways until `check` is done; datagrams sent."""

    sent = 0
    async with connected_pair(server, USERNAME, PASSWORD) as (left, right):
        for _ in range(int(QUERY_DEADLINE / 0.05) + 1):  # bounded by the check's deadline
            if check.done():
                break
            await left.send(b"x" * 200)
            assert await asyncio.wait_for(right.recv(), TIMEOUT) == b"x" * 200
            await right.send(b"y" * 100)
            assert await asyncio.wait_for(left.recv(), TIMEOUT) == b"y" * 100
            sent += 2
            await asyncio.sleep(0.05)
        return sent


async def watch(base: str, check: asyncio.Future[None]) -> tuple[float, float]:
    """Poll Prometheus until both expectations hold (or the deadline); resolve `check`."""
    rate = active = 0.0
    try:
        deadline = time.monotonic() + QUERY_DEADLINE
        while time.monotonic() < deadline:
            measured = await asyncio.to_thread(
                query, base, "sum(rate(trelay_relayed_bytes_total[5s]))"
            )
            rate = measured or 0.0
            measured = await asyncio.to_thread(query, base, "sum(trelay_allocations_active)")
            active = measured or 0.0
            if rate > 0 and active >= 2:
                break
            await asyncio.sleep(0.5)
        return rate, active
    finally:
        check.set_result(None)


@pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason="Debian's prometheus is not installed (apt-get install prometheus)",
)
def test_prometheus_scrapes_live_relay_traffic(tmp_path: Path) -> None:
    assert shutil.which(str(PROMETHEUS))
    with node_with_operator_port() as (relay, http), prometheus(http, tmp_path) as base:

        async def run() -> tuple[int, tuple[float, float]]:
            check: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            sent, seen = await asyncio.gather(call_while(relay.udp, check), watch(base, check))
            return sent, seen

        sent, (rate, active) = asyncio.run(run())
        assert sent > 0
        assert rate > 0, "rate(trelay_relayed_bytes_total[5s]) stayed 0"
        assert active >= 2, f"trelay_allocations_active summed to {active}"
        assert query(base, 'up{job="trelay"}') == 1
        assert query(base, 'trelay_ready{job="trelay"}') == 1
        relayed = query(base, 'sum(trelay_relayed_datagrams_total{direction="client_to_peer"})')
        assert relayed is not None and relayed > 0
        assert relay.node.counters.client_to_peer_bytes > 0
