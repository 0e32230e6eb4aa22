"""A throw-away Redis Sentinel group for the fleet tests: a primary, a replica and sentinels.

`running_sentinel_group` starts, on free loopback ports in a temporary directory, a primary
`redis-server`, one replica of it (`--replicaof`) and `sentinels` sentinels (Debian's
redis-server binary with `--sentinel` and a conf file of its own, which it rewrites) that
monitor the primary under `SERVICE` with a short `down-after-milliseconds` and
`failover-timeout`, so that a killed primary is replaced within seconds. Everything is
killed (SIGKILL) on leaving; it skips the test when redis-server is not installed.

`tls`: every port speaks TLS only (a self-signed certificate for 127.0.0.1 that each
process serves and trusts, for replication and between sentinels too).
`password` (the data nodes' `requirepass`, also their `masterauth` and the sentinels'
`auth-pass`) and `sentinel_password` (the sentinels' own `requirepass`) are optional.
No persistence: the tests look at replication, not at the disk.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.redis_server import free_tcp_port
from trelay.node.tls import generate_self_signed

SERVICE = "trelay"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _send(port: int, command: bytes, password: str | None, tls: ssl.SSLContext | None) -> bytes:
    """One inline command (after AUTH when there is a password); b"" when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as plain:
            sock = plain if tls is None else tls.wrap_socket(plain)
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
    tls: ssl.SSLContext | None = None  # how to talk to it: its port speaks TLS only
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
            if self.send(b"PING").startswith(b"+PONG"):
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
        return _send(self.port, command, self.password, self.tls)

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
    tls: Tls | None = None

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def wait_replicating(self) -> None:
        """Until the replica has synced and every sentinel knows it (bounded)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            info = self.replica.send(b"INFO replication")
            synced = b"master_link_status:up" in info
            command = f"SENTINEL REPLICAS {SERVICE}".encode()
            known = all(f"{self.replica.port}".encode() in s.send(command) for s in self.sentinels)
            if synced and known:
                return
            time.sleep(0.1)
        raise AssertionError(f"the replica did not sync:\n{self.logs()}")

    def logs(self) -> str:
        every = [self.primary, self.replica, *self.sentinels]
        return "\n".join(f"--- {p.name}\n{p.log_text()[-3000:]}" for p in every)


@dataclass(frozen=True)
class Tls:
    """A throw-away certificate for 127.0.0.1 that every process serves and trusts."""

    cert: Path
    key: Path

    @classmethod
    def generate(cls, directory: Path) -> Tls:
        pair = generate_self_signed(["127.0.0.1"])
        cert, key = directory / "redis-cert.pem", directory / "redis-key.pem"
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        return cls(cert, key)

    def settings(self) -> list[str]:
        """Its port speaks TLS only; replication and sentinels' links too; no client certs."""
        return [f"tls-cert-file {self.cert}", f"tls-key-file {self.key}",
                f"tls-ca-cert-file {self.cert}", "tls-auth-clients no",
                "tls-replication yes"]  # fmt: skip

    def client(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        context.check_hostname = False
        return context


def _data_node(
    name: str,
    directory: Path,
    executable: str,
    password: str | None,
    primary: int | None,
    tls: Tls | None,
) -> RedisProcess:
    port = free_tcp_port()
    args = [executable, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory)]  # fmt: skip
    if tls is None:
        args += ["--port", str(port)]
    else:
        args += ["--port", "0", "--tls-port", str(port)]
        for line in tls.settings():
            name, value = line.split(" ", 1)
            args += [f"--{name}", value]
    if password is not None:
        args += ["--requirepass", password, "--masterauth", password]
    if primary is not None:
        args += ["--replicaof", "127.0.0.1", str(primary)]
    return RedisProcess(
        name, port, args, directory, password, None if tls is None else tls.client()
    )


def _sentinel(
    name: str,
    directory: Path,
    executable: str,
    primary: int,
    quorum: int,
    password: str | None,
    sentinel_password: str | None,
    tls: Tls | None,
) -> RedisProcess:
    port = free_tcp_port()
    listen = [f"port {port}"] if tls is None else ["port 0", f"tls-port {port}", *tls.settings()]
    lines = [
        *listen,
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
                        sentinel_password, None if tls is None else tls.client())  # fmt: skip


@contextmanager
def running_sentinel_group(
    tmp_path: Path,
    *,
    sentinels: int = 3,
    password: str | None = None,
    sentinel_password: str | None = None,
    tls: bool = False,
) -> Iterator[SentinelGroup]:
    """A started group whose replica is in sync; every process killed on leaving. With
    `tls`, every port speaks TLS only, with a certificate in `group.tls.cert`."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    directory = tmp_path / "sentinel-group"
    directory.mkdir()
    quorum = sentinels // 2 + 1
    certificate = Tls.generate(directory) if tls else None
    with ExitStack() as stack:
        primary = _data_node("primary", directory, executable, password, None, certificate)
        stack.callback(primary.kill)
        primary.start()
        replica = _data_node("replica", directory, executable, password, primary.port,
                             certificate)  # fmt: skip
        stack.callback(replica.kill)
        replica.start()
        group = SentinelGroup(primary, replica, [], certificate)
        for index in range(sentinels):
            sentinel = _sentinel(f"sentinel-{index}", directory, executable, primary.port,
                                 quorum, password, sentinel_password, certificate)  # fmt: skip
            stack.callback(sentinel.kill)
            sentinel.start()
            group.sentinels.append(sentinel)
        group.wait_replicating()
        yield group
