"""Binding relay sockets for the core's `OpenRelay`: the port asked for, or an even one.

Owns the socket side of RFC 8656 §7.2's port rules (the core decides which port, or
that it must be even, `trelay.turn.allocate`):

- a port from the configured range, or port 0 (the kernel picks) without one;
- EVEN-PORT without a configured range: bind(0) gives whatever port the kernel picks
  (odd 8 times in 10 here), so the runtime picks random even ports from the kernel's
  ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`, where port 0 would land)
  and binds them, up to `EVEN_ATTEMPTS` tries (a taken port fails the bind: no socket
  shares a port it did not ask to share, `bind_relay_socket`);
- the R bit: port+1 is bound too and returned, to be held unread as the reservation
  (`trelay.turn.reservations`); both bind or neither does.

Ports are drawn from `random.SystemRandom` (coturn's CVE-2025-69217: predictable relay
ports).
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

from trelay.node.datagram_batch import enlarge_receive_buffer
from trelay.node.exhaustion import EXHAUSTION_ERRNOS

# Relay sockets: enough for bursts from peers, times many allocations (a cap, not a cost).
RELAY_RECEIVE_BUFFER = 1024 * 1024
# Random even ports tried before the Allocate gets 508; with the ephemeral range mostly
# free, the first try nearly always binds.
EVEN_ATTEMPTS = 32
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)  # Linux's default, where the file is missing
EPHEMERAL_RANGE_SECONDS = 10.0  # how long `ephemeral_range` trusts what it read

_random = random.SystemRandom()
# path -> (range, monotonic time it was read); one entry in practice, a few in tests.
_ranges: dict[Path, tuple[tuple[int, int], float]] = {}
_NONBLOCK_AT_CREATION = hasattr(socket, "SOCK_NONBLOCK")
_NONBLOCKING_DGRAM = socket.SOCK_DGRAM | getattr(socket, "SOCK_NONBLOCK", 0)


def bind_relay_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP relay socket bound to host:port (0: a free port); OSError if not.

    SO_REUSEADDR is set after the bind: channel sockets connected to one peer may then
    share the relayed address (`TurnNode.connect_channel`), while this bind, port 0
    included, still gets a port no other socket holds (Linux lets two sockets that both
    had SO_REUSEADDR when the second bound share a port, and picks such ports for port 0).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Non-blocking from creation where the kernel can (Linux): setblocking(False) would
    # cost two fcntl calls per allocation (issue 13 part 4).
    sock = socket.socket(family, _NONBLOCKING_DGRAM)
    try:
        if not _NONBLOCK_AT_CREATION:
            sock.setblocking(False)
        enlarge_receive_buffer(sock, RELAY_RECEIVE_BUFFER)
        sock.bind((host, port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError:
        sock.close()
        raise
    return sock


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range (where bind(0) picks), or Linux's default: read
    at most once per `EPHEMERAL_RANGE_SECONDS` per file, not on every EVEN-PORT
    Allocate (a file read is three syscalls; issue 13 part 4). A change an operator makes
    with sysctl is seen within that time; a port picked from the old range meanwhile is
    still bound as any explicit port is."""
    now = time.monotonic()
    cached = _ranges.get(path)
    if cached is not None and now - cached[1] < EPHEMERAL_RANGE_SECONDS:
        return cached[0]
    found = _read_range(path)
    if len(_ranges) >= 8:  # bounded: callers other than the node pass other files
        _ranges.clear()
    _ranges[path] = (found, now)
    return found


def _read_range(path: Path) -> tuple[int, int]:
    try:
        low, high = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return (low, high) if 1 <= low <= high <= 65535 else DEFAULT_EPHEMERAL_RANGE


def bind_relay(
    host: str,
    port: int,
    *,
    even: bool = False,
    reserve_next: bool = False,
    ports: tuple[int, int] | None = None,
) -> tuple[socket.socket, socket.socket | None]:
    """The relay socket (and, with `reserve_next`, the held port+1 socket) for an
    `OpenRelay`; OSError when they cannot be bound (the last error).

    `port` 0 with `even` or `reserve_next`: an even port from `ports` (the ephemeral
    range when None) is picked here. Any other `port` is bound as it is (a configured
    range's pool chose it even, and its port+1 free, already).
    """
    if port or not (even or reserve_next):
        return _bind_pair(host, port, reserve_next)
    low, high = ports or ephemeral_range()
    evens = range(low + low % 2, high if reserve_next else high + 1, 2)  # port+1 <= high
    if not evens:
        raise OSError(f"no even port in {low}-{high}")
    error: OSError | None = None
    for _ in range(EVEN_ATTEMPTS):
        try:
            return _bind_pair(host, _random.choice(evens), reserve_next)
        except OSError as exc:
            if exc.errno in EXHAUSTION_ERRNOS:
                raise  # no descriptors: another port would not help
            error = exc
    assert error is not None
    raise error


def _bind_pair(
    host: str, port: int, reserve_next: bool
) -> tuple[socket.socket, socket.socket | None]:
    sock = bind_relay_socket(host, port)
    if not reserve_next:
        return sock, None
    try:
        held = bind_relay_socket(host, sock.getsockname()[1] + 1)
    except OSError:
        sock.close()
        raise
    return sock, held
