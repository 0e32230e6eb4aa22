"""A trelay fleet inside a NAT lab: a real redis-server and `trelay serve` nodes.

Everything runs in the lab's public namespace ("pub", `tests.helpers.netns`): the
redis-server on the namespace's own loopback (`start_redis`), and each node
(`start_node`) on one of the segment's addresses (203.0.113.x), its TURN over UDP on
`TURN_PORT`, its operator HTTP (/metrics) on `HTTP_PORT`, all nodes sharing one TURN
REST secret (`FleetLab.login` makes credentials). `in_namespace` runs a helper module
(`python -m tests.helpers...`) in a namespace and returns its last JSON line;
`scrape` fetches a node's /metrics from inside the lab (`Scrape.value` reads a
sample; `metric` does both).

Every wait is bounded (`WAIT`, `READY_TIMEOUT`, each command's timeout); the processes
are started with `NatLab.popen`, so the lab kills what a test leaves running, and
`FleetLab.stop` ends the nodes first with SIGINT.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.ice_agent import JsonLines
from tests.helpers.netns import NatLab
from tests.helpers.trelay_process import trelay_command
from trelay.turn.credential_sources import rest_password

ROOT = Path(__file__).resolve().parents[2]
TURN_PORT = 3478
HTTP_PORT = 9478
REDIS_PORT = 6390  # the public namespace's own loopback: nothing else listens there
READY_TIMEOUT = 30.0
WAIT = 20.0  # bound on every poll
POLL = 0.1
COMMAND_TIMEOUT = 30.0
PASSWORD_VARIABLE = "TRELAY_TEST_TURN_PASSWORD"

T = TypeVar("T")


@dataclass
class Node:
    node_id: str
    ip: str
    process: subprocess.Popen[bytes]
    lines: JsonLines

    @property
    def turn(self) -> str:
        return f"{self.ip}:{TURN_PORT}"

    @property
    def turn_uri(self) -> str:
        return f"turn:{self.ip}:{TURN_PORT}?transport=udp"

    @property
    def http(self) -> str:
        return f"http://{self.ip}:{HTTP_PORT}"


@dataclass
class FleetLab:
    lab: NatLab
    directory: Path
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.directory / "secrets").write_text(self.secret + "\n")

    def login(self, identity: str, seconds: int = 600) -> tuple[str, str]:
        """TURN REST credentials for `identity` under the fleet's secret."""
        username = f"{int(time.time()) + seconds}:{identity}"
        return username, rest_password(self.secret.encode(), username)

    def start_node(
        self,
        node_id: str,
        ip: str,
        *,
        region: str,
        fleet_extra: str = "",
        args: tuple[str, ...] = (),
    ) -> Node:
        """`trelay serve` on `ip` in "pub", in the fleet; `fleet_extra` ends the settings
        file, in its [fleet] table (e.g. "max_allocations = 2", or [fleet.placement]
        tables); `args` are more `trelay serve` flags (--api-keys, --admin-token-file...)."""
        text = f"""
[auth]
secrets_file = "{self.directory / "secrets"}"

[relay]
allow_peers = ["{self.lab.public_network}"]

[http]
listen = ["{ip}:{HTTP_PORT}"]

[fleet]
redis_url = "redis://127.0.0.1:{REDIS_PORT}/0"
node_id = "{node_id}"
region = "{region}"
public_uris = ["turn:{ip}:{TURN_PORT}?transport=udp"]
heartbeat_seconds = 0.2
ttl_seconds = 2.0
{fleet_extra}
"""
        config = self.directory / f"{node_id}.toml"
        config.write_text(text)
        log = self.directory / f"{node_id}.log"
        with log.open("wb") as stderr:
            process = self.lab.popen(
                "pub", *trelay_command(), "serve", f"--config={config}",
                f"--listen-udp={ip}:{TURN_PORT}", f"--relay-address={ip}", *args,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        lines = JsonLines(process, f"trelay serve {node_id}", log)
        ready = lines.read(READY_TIMEOUT)
        assert ready["event"] == "ready", ready
        node = Node(node_id, ip, process, lines)
        self.nodes[node_id] = node
        return node

    def stop(self) -> None:
        """SIGINT twice (at once, not a drain) to every node still running, bounded."""
        for node in self.nodes.values():
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGINT)
                node.process.send_signal(signal.SIGINT)
        for node in self.nodes.values():
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=5)

    def scrape(self, node_id: str) -> Scrape:
        """The node's /metrics, fetched from inside "pub" (bounded)."""
        url = f"{self.nodes[node_id].http}/metrics"
        done = self.lab.run("pub", sys.executable, "-c", _FETCH, url, timeout=COMMAND_TIMEOUT)
        return Scrape(done.stdout)

    def metric(self, node_id: str, name: str, **labels: str) -> float:
        """One sample of the node's /metrics (`Scrape.value`)."""
        return self.scrape(node_id).value(name, **labels)


# A bare fetch: a fresh interpreter with only urllib starts in a tenth of the time a
# helper module with trio takes, and a test scrapes often.
_FETCH = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
)


class Scrape:
    """One scrape of a node's /metrics (the Prometheus text format)."""

    def __init__(self, text: str) -> None:
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sample `name{labels}` (other labels free); 0 when there is none."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
        return 0.0


def in_namespace(
    lab: NatLab, role: str, module: str, *argv: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `python -m module argv` in `role`'s namespace to its end (bounded): its last
    JSON line, which must be there (else AssertionError with its output)."""
    command = lab.command(role, sys.executable, "-m", module, *argv)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd=ROOT,
        env={**os.environ, **(env or {})}, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"{module} {argv}: {done.stderr}{done.stdout}"
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def start_redis(lab: NatLab, directory: Path) -> None:
    """A redis-server on "pub"'s loopback, `REDIS_PORT`, no persistence; until it PONGs."""
    lab.popen(
        "pub", "redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(directory),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ping = (
        "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1); "
        "s.sendall(b'PING\\r\\n'); sys.exit(0 if s.recv(16).startswith(b'+PONG') else 1)"
    )

    def answers() -> bool:
        command = lab.command("pub", sys.executable, "-c", ping, str(REDIS_PORT))
        done = subprocess.run(command, capture_output=True, timeout=10, check=False)
        return done.returncode == 0

    poll("redis-server answers PING", answers)


def poll(description: str, check: Callable[[], T | None], wait: float = WAIT) -> T:
    """`check()` until it returns something truthy, at most `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{description}: not within {wait} s")
        time.sleep(POLL)
