"""A real `trelay serve` at its descriptor limit (issue 15): refused cleanly, logged at a
bounded rate, counted, and serving again once descriptors free up.

The node runs in a child process whose RLIMIT_NOFILE is lowered before it execs (the
test runner's own limit is never touched). TCP connections that each get a Binding
answer hold the node's descriptors until one is refused; then a UDP Allocate must get
508 (no relay socket), more connections must be closed (not left hanging in the
backlog), and the log must hold no traceback and at most one exhaustion line per
`trelay.node.exhaustion.LOG_SECONDS`. Before the fix, trio's accept loop logged a
traceback every 0.1 s and the refused connections hung.
"""

from __future__ import annotations

import math
import socket
import sys
import urllib.request
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio

from tests.helpers.trelay_process import Running, allocate_with, running_trelay
from trelay.node.exhaustion import LOG_SECONDS
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id

TIMEOUT = 20
# What the node may open: its own ~15 descriptors at start, then a few dozen connections.
LIMIT = 64
# Connections refused before the test stops opening more (each is one accept refused).
REFUSALS = 20
USER, PASSWORD = "alice", "wonderland"

_LIMITED = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1]))); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def limited_trelay(tmp_path: Path, limit: int) -> AbstractAsyncContextManager[Running]:
    """`trelay serve` (UDP, TCP and HTTP on loopback) with RLIMIT_NOFILE `limit`."""
    args = ("--listen-udp", "127.0.0.1:0", "--listen-tcp", "127.0.0.1:0",
            "--listen-http", "127.0.0.1:0", "--user", f"{USER}:{PASSWORD}")  # fmt: skip
    launcher = (sys.executable, "-c", _LIMITED, str(limit))
    return running_trelay(tmp_path, *args, launcher=launcher)


async def binding_over_tcp(server: tuple[str, int]) -> trio.socket.SocketType | None:
    """Connect and ask for a Binding: the open connection when answered, None when the
    node closed it. A connection left hanging fails the test (the timeout)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with trio.fail_after(TIMEOUT):
        await sock.connect(server)
        request = Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
        try:
            await sock.send(encode_message(request))
            data = await sock.recv(2048)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
    if not data:
        sock.close()
        return None
    assert decode_message(data).message_class is MessageClass.SUCCESS
    return sock


def scrape(http: tuple[str, int]) -> str:
    url = f"http://{http[0]}:{http[1]}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        text: str = response.read().decode()
    return text


def sample(text: str, line_start: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(line.rsplit(" ", 1)[1])


async def test_at_the_descriptor_limit_refused_cleanly_logged_bounded_and_recovers(
    tmp_path: Path,
) -> None:
    async with limited_trelay(tmp_path, LIMIT) as node:
        [udp], [tcp], [http] = node.addresses("udp"), node.addresses("tcp"), node.addresses("http")
        started = trio.current_time()
        held: list[trio.socket.SocketType] = []
        refused = 0
        for _ in range(LIMIT + REFUSALS):  # bounded: the node cannot serve more than LIMIT
            sock = await binding_over_tcp(tcp)
            if sock is None:
                refused += 1
                if refused == REFUSALS:
                    break
            else:
                held.append(sock)
        assert refused == REFUSALS, "the node never ran out of descriptors"
        assert len(held) < LIMIT
        # No descriptor for a relay socket: 508, signed (the request authenticated).
        await allocate_with(udp, USER, PASSWORD, refused=508)
        elapsed = trio.current_time() - started

        for sock in held:
            sock.close()
        # Serving again once the node has closed its side (bounded polling).
        for _ in range(200):
            again = await binding_over_tcp(tcp)
            if again is not None:
                again.close()
                break
            await trio.sleep(0.05)
        else:
            raise AssertionError("the node did not accept connections again")
        await allocate_with(udp, USER, PASSWORD)

        text = await trio.to_thread.run_sync(scrape, http)
        accepts = sample(text, 'trelay_resource_exhaustion_total{resource="descriptors",'
                               'what="accept"}')  # fmt: skip
        relays = sample(text, 'trelay_resource_exhaustion_total{resource="descriptors",'
                              'what="relay_socket"}')  # fmt: skip
        assert accepts >= REFUSALS and relays >= 1
        assert sample(text, 'trelay_requests_total{code="508",method="allocate"}') >= 1

    log = node.stderr_path.read_text()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "out of descriptors" in line]
    # One line per LOG_SECONDS at most (the first at once), whatever the refusals.
    assert 1 <= len(lines) <= 1 + math.ceil(elapsed / LOG_SECONDS)
    assert "resources available again" in log
