"""A throw-away `redis-server` for the fleet tests: loopback, a free port, no persistence.

`RedisServer.start()` runs `redis-server --port <free> --save "" --appendonly no` in a
temporary directory and waits (bounded) until it answers PING; `stop()` kills it and
waits; `start()` again restarts it on the same port (a Redis that comes back).
`running_redis` skips with a clear reason when redis-server is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            # A server with a password answers, if only to refuse.
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    def __init__(self, directory: Path, executable: str) -> None:
        self.directory = directory
        self.executable = executable
        self.port = free_tcp_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.password: str | None = None  # set before start(): --requirepass

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        log = (self.directory / "redis.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                 *(["--requirepass", self.password] if self.password else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if _answers_ping(self.port):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        log_text = (self.directory / "redis.log").read_text(errors="replace")
        raise AssertionError(f"redis-server did not answer on {self.port}:\n{log_text}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None


@contextmanager
def running_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A started `RedisServer`, stopped on leaving; skips the test without redis-server."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, executable)
    server.start()
    try:
        yield server
    finally:
        server.stop()
