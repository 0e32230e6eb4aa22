"""A real `trelay serve --workers N` process for the tests, and what they look at in it.

`running_workers` starts the installed console script on loopback (port 0 unless told),
reads its ready line and kills it on leaving if the test has not stopped it. The worker
processes are found as the supervisor's children in /proc, and each worker's UDP ports
from the socket inodes it holds (/proc/<pid>/fd and /proc/net/udp). Every wait is bounded.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.helpers.http_client import http_request
from tests.helpers.trelay_process import Running, running_trelay, stop

TIMEOUT = 20.0
POLL_INTERVAL = 0.05
POLLS = int(TIMEOUT / POLL_INTERVAL)
Address = tuple[str, int]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Supervised(Running):
    """The supervisor process, with what the worker tests ask of it."""

    @property
    def http(self) -> Address:
        return self.addresses("http")[0]

    async def status(self, path: str) -> int:
        return (await http_request(self.http, path)).status

    async def metrics(self) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        response = await http_request(self.http, "/metrics")
        assert response.status == 200
        samples: Samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def workers(self) -> list[int]:
        """The pids of the supervisor's children (its workers), from /proc."""
        return child_pids(self.process.pid)

    async def stop(self, signal_number: int) -> int:
        return await stop(self, signal_number)


async def poll_until(check: Callable[[], Awaitable[bool]]) -> None:
    """Ask `check` every `POLL_INTERVAL` until it says yes; fail after `TIMEOUT`."""
    with trio.fail_after(TIMEOUT):
        for _ in range(POLLS):
            if await check():
                return
            await trio.sleep(POLL_INTERVAL)
    raise AssertionError("condition never met")


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@asynccontextmanager
async def running_workers(tmp_path: Path, *args: str) -> AsyncIterator[Supervised]:
    async with running_trelay(tmp_path, *args) as running:
        try:
            yield Supervised(running.process, running.ready, running.stderr_path)
        finally:
            if running.process.returncode is None:
                running.process.kill()
                with trio.fail_after(TIMEOUT):
                    await running.process.wait()
            # A killed supervisor's workers see their control socket close and drain;
            # wait (bounded) so that no test leaves processes behind.
            with trio.move_on_after(TIMEOUT):
                for _ in range(POLLS):
                    if not child_pids(running.process.pid):
                        break
                    await trio.sleep(POLL_INTERVAL)


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            children.append(int(entry))
    return sorted(children)


def udp_ports_of(pid: int) -> set[int]:
    """The local ports of every IPv4 UDP socket that process `pid` holds."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
