"""A throw-away Redis Sentinel group for the fleet tests: a primary, a replica and sentinels.

`running_sentinel_group` starts, on free loopback ports in a temporary directory, a primary
`redis-server`, one replica of it (`--replicaof`) and `sentinels` sentinels (Debian's
redis-server binary with `--sentinel` and a conf file of its own, which it rewrites) that
monitor the primary under `SERVICE` with a short `down-after-milliseconds` and
`failover-timeout`, so that a killed primary is replaced within seconds. Everything is
killed (SIGKILL) on leaving; it skips the test when redis-server is not installed.

`password` (the data nodes' `requirepass`, also their `masterauth` and the sentinels'
`auth-pass`) and `sentinel_password` (the sentinels' own `requirepass`) are optional.
No persistence: the tests look at replication, not at the disk.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.redis_server import free_tcp_port

SERVICE = "trelay"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _send(port: int, command: bytes, password: str | None) -> bytes:
    """One inline command (after AUTH when there is a password); b"" when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if password is not None:
                sock.sendall(b"AUTH " + password.encode() + b"\r\n")
                if not sock.recv(64).startswith(b"+OK"):
                    return b""
            sock.sendall(command + b"\r\n")
            return sock.recv(4096)
    except OSError:
        return b""


@dataclass
class RedisProcess:
    """One redis-server (data node or sentinel), on `port`, logging to `log`."""

    name: str
    port: int
    args: list[str]
    directory: Path
    password: str | None = None  # what PING needs to AUTH with
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def start(self) -> None:
        assert self.process is None, f"{self.name} is already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.directory
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if _send(self.port, b"PING", self.password).startswith(b"+PONG"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{self.name} did not answer on {self.port}:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the replicas or the sentinels."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None

    def send(self, command: bytes) -> bytes:
        """One inline command's raw answer (b"" when it does not answer)."""
        return _send(self.port, command, self.password)

    def role(self) -> str:
        """ "master", "slave", "sentinel", or "" when it does not answer."""
        answer = self.send(b"ROLE")
        # *3\r\n$6\r\nmaster\r\n...: the role is the first bulk string.
        lines = answer.split(b"\r\n")
        return lines[2].decode() if len(lines) > 2 else ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class SentinelGroup:
    primary: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess]

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def wait_replicating(self) -> None:
        """Until the replica has synced and every sentinel knows it (bounded)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            info = _send(self.replica.port, b"INFO replication", self.replica.password)
            synced = b"master_link_status:up" in info
            command = f"SENTINEL REPLICAS {SERVICE}".encode()
            known = all(
                f"{self.replica.port}".encode() in _send(s.port, command, s.password)
                for s in self.sentinels
            )
            if synced and known:
                return
            time.sleep(0.1)
        raise AssertionError(f"the replica did not sync:\n{self.logs()}")

    def logs(self) -> str:
        every = [self.primary, self.replica, *self.sentinels]
        return "\n".join(f"--- {p.name}\n{p.log_text()[-3000:]}" for p in every)


def _data_node(
    name: str, directory: Path, executable: str, password: str | None, primary: int | None
) -> RedisProcess:
    port = free_tcp_port()
    args = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
    if password is not None:
        args += ["--requirepass", password, "--masterauth", password]
    if primary is not None:
        args += ["--replicaof", "127.0.0.1", str(primary)]
    return RedisProcess(name, port, args, directory, password)


def _sentinel(
    name: str,
    directory: Path,
    executable: str,
    primary: int,
    quorum: int,
    password: str | None,
    sentinel_password: str | None,
) -> RedisProcess:
    port = free_tcp_port()
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {directory}",
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary} {quorum}",
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {SERVICE} 1",
    ]
    if password is not None:
        lines.append(f"sentinel auth-pass {SERVICE} {password}")
    if sentinel_password is not None:
        # The sentinels talk to each other with it too.
        lines += [f"requirepass {sentinel_password}", f"sentinel sentinel-pass {sentinel_password}"]
    conf = directory / f"{name}.conf"
    conf.write_text("\n".join(lines) + "\n")
    return RedisProcess(name, port, [executable, str(conf), "--sentinel"], directory,
                        sentinel_password)  # fmt: skip


@contextmanager
def running_sentinel_group(
    tmp_path: Path,
    *,
    sentinels: int = 3,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> Iterator[SentinelGroup]:
    """A started group whose replica is in sync; every process killed on leaving."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    directory = tmp_path / "sentinel-group"
    directory.mkdir()
    quorum = sentinels // 2 + 1
    with ExitStack() as stack:
        primary = _data_node("primary", directory, executable, password, None)
        stack.callback(primary.kill)
        primary.start()
        replica = _data_node("replica", directory, executable, password, primary.port)
        stack.callback(replica.kill)
        replica.start()
        group = SentinelGroup(primary, replica, [])
        for index in range(sentinels):
            sentinel = _sentinel(f"sentinel-{index}", directory, executable, primary.port,
                                 quorum, password, sentinel_password)  # fmt: skip
            stack.callback(sentinel.kill)
            sentinel.start()
            group.sentinels.append(sentinel)
        group.wait_replicating()
        yield group
