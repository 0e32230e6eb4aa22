"""Load for a TURN server under test: saturating ChannelData senders, ping-pong, Allocates.

Owns the client side of `benchmarks.relay_bench`, in processes of its own so the server's
CPU time (which the driver reads from /proc) is the server's alone:

- `saturate`: N sender processes each allocate on the server, bind channel 0x4000 to one
  sink (a UDP socket in a sink process) and send ChannelData in a tight non-blocking loop.
  After a warm-up the driver's `server_cpu` probe and the counters are read at the start
  and the end of the window: datagrams offered by the senders, received by the sink, and
  dropped at the sink's socket (its receive queue was full; the server did relay them),
  read from the "drops" column of /proc/net/udp.
- `ping_pong`: one client, one channel to an echo process, one message in flight.
- `allocation_rate`: worker processes that, for a fixed time, each do Allocate (401, then
  signed) and Refresh(0) on a fresh 5-tuple. The source IPs rotate over 127.x.y.z so a
  server's per-IP limit on unauthenticated requests (trelay: 20/s) does not cap the rate.

Bounded everywhere: receives have timeouts, loops end on a stop event and a hard deadline,
and every process this module starts is terminated in a `finally`.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from benchmarks.turn_client import Address, TurnClient, TurnClientError

CHANNEL = 0x4000
_CTX = mp.get_context("fork")
_BATCH = 256  # sends between two looks at the stop event and the clock
_START_TIMEOUT = 15.0  # seconds for a process to report ready


@dataclass(frozen=True, slots=True)
class Target:
    """The server under test and the static user it knows."""

    address: Address
    username: str = "u"
    password: str = "p"

    def client(self, bind: Address = ("127.0.0.1", 0)) -> TurnClient:
        return TurnClient(self.address, self.username, self.password, bind=bind)


@dataclass(frozen=True, slots=True)
class Window:
    """What one saturation window measured."""

    seconds: float  # wall clock
    server_cpu: float  # CPU seconds the server used in the window
    offered: int  # ChannelData datagrams the senders sent
    received: int  # datagrams the sink read
    sink_dropped: int  # datagrams the kernel dropped at the sink's full receive queue

    @property
    def relayed(self) -> int:
        return self.received + self.sink_dropped


def _stop_all(processes: list[BaseProcess]) -> None:
    for process in processes:
        process.join(timeout=3.0)
        if process.is_alive():
            process.terminate()
            process.join(timeout=3.0)


@contextlib.contextmanager
def _started(processes: list[BaseProcess]) -> Iterator[None]:
    try:
        for process in processes:
            process.start()
        yield
    finally:
        _stop_all(processes)


def _get(results: Any, what: str, timeout: float = _START_TIMEOUT) -> Any:
    try:
        return results.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"{what}: no report within {timeout} s") from None


# --- the sink ---------------------------------------------------------------------------


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    return sock


def _sink(ports: Any, count: Synchronized[int], stop: Any, seconds: float) -> None:
    """Read and count datagrams until `stop` is set (or `seconds` pass)."""
    with _udp_socket() as sock:
        sock.settimeout(0.2)
        ports.put(sock.getsockname()[1])
        buffer = bytearray(65535)
        recv_into = sock.recv_into
        received = 0
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(_BATCH):
                try:
                    recv_into(buffer)
                except TimeoutError:
                    break
                received += 1
            count.value = received
        count.value = received


def sink_drops(port: int) -> int:
    """The kernel's drop count of the 127.0.0.1 UDP socket bound to `port` (0 if gone)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        for line in table:
            fields = line.split()
            if len(fields) > 12 and fields[1] == wanted:
                return int(fields[-1])
    return 0


# --- saturation ------------------------------------------------------------------------


def _sender(
    target: Target,
    sink: Address,
    payload_size: int,
    index: int,
    sent: Any,
    reports: Any,
    go: Any,
    stop: Any,
    seconds: float,
) -> None:
    """Allocate, bind a channel to `sink`, then send ChannelData until told to stop."""
    try:
        client = target.client()
        client.allocate()
        client.channel_bind(CHANNEL, sink)
    except (OSError, TurnClientError) as exc:
        reports.put(f"sender {index}: {exc}")
        return
    with client:
        reports.put("ready")
        if not go.wait(_START_TIMEOUT):
            return
        packet = client.channel_data(CHANNEL, bytes(payload_size))
        client.sock.setblocking(False)
        send = client.sock.send
        count = 0
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(_BATCH):
                try:
                    send(packet)
                except OSError:  # a full send buffer or an ICMP error: skip this one
                    count -= 1
            count += _BATCH
            sent[index] = count
        client.sock.settimeout(client.timeout)
        with contextlib.suppress(OSError, TurnClientError):
            client.refresh(0)  # leave the server as we found it


def saturate(
    target: Target,
    *,
    senders: int,
    payload_size: int,
    warmup: float,
    duration: float,
    server_cpu: Callable[[], float],
) -> Window:
    """Blast ChannelData from `senders` processes; measure one window after `warmup`."""
    stop, go = _CTX.Event(), _CTX.Event()
    ports: Any = _CTX.Queue()
    reports: Any = _CTX.Queue()
    count = _CTX.Value("q", 0, lock=False)
    sent = _CTX.Array("q", senders, lock=False)
    limit = warmup + duration + 30.0
    sink_process = _CTX.Process(target=_sink, args=(ports, count, stop, limit), daemon=True)
    try:
        with _started([sink_process]):
            port = _get(ports, "sink")
            sink = ("127.0.0.1", port)
            workers: list[BaseProcess] = [
                _CTX.Process(
                    target=_sender,
                    args=(target, sink, payload_size, i, sent, reports, go, stop, limit),
                    daemon=True,
                )
                for i in range(senders)
            ]
            with _started(workers):
                for _ in workers:
                    report = _get(reports, "sender")
                    if report != "ready":
                        raise RuntimeError(report)
                go.set()
                time.sleep(warmup)
                start = (time.monotonic(), server_cpu(), sum(sent), count.value, sink_drops(port))
                time.sleep(duration)
                end = (time.monotonic(), server_cpu(), sum(sent), count.value, sink_drops(port))
                stop.set()
    finally:
        stop.set()
    return Window(
        seconds=end[0] - start[0],
        server_cpu=end[1] - start[1],
        offered=end[2] - start[2],
        received=end[3] - start[3],
        sink_dropped=end[4] - start[4],
    )


# --- ping-pong ---------------------------------------------------------------------------


def _echo(ports: Any, stop: Any, seconds: float) -> None:
    """Send every datagram back where it came from, until `stop` (or `seconds`)."""
    with _udp_socket() as sock:
        sock.settimeout(0.2)
        ports.put(sock.getsockname()[1])
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                data, source = sock.recvfrom(65535)
            except TimeoutError:
                continue
            sock.sendto(data, source)


def ping_pong(
    target: Target, *, rounds: int, warmup: int = 200, payload_size: int = 100
) -> tuple[list[float], int]:
    """Round-trip times in microseconds through the relay, and the number lost.

    One message in flight: ChannelData to the server, relayed to the echo peer, sent back
    to the relayed address, relayed to us as ChannelData on the same channel.
    """
    stop = _CTX.Event()
    ports: Any = _CTX.Queue()
    echo = _CTX.Process(target=_echo, args=(ports, stop, 120.0), daemon=True)
    times: list[float] = []
    lost = 0
    try:
        with _started([echo]), target.client() as client:
            peer = ("127.0.0.1", _get(ports, "echo"))
            client.allocate()
            client.channel_bind(CHANNEL, peer)
            packet = client.channel_data(CHANNEL, bytes(payload_size))
            client.sock.settimeout(1.0)
            for i in range(warmup + rounds):
                began = time.perf_counter_ns()
                client.sock.send(packet)
                if not _await_channel_data(client.sock, len(packet)):
                    lost += 1
                    continue
                if i >= warmup:
                    times.append((time.perf_counter_ns() - began) / 1000)
            stop.set()
            with contextlib.suppress(OSError, TurnClientError):
                client.refresh(0)
    finally:
        stop.set()
    return times, lost


def _await_channel_data(sock: socket.socket, size: int) -> bool:
    """Read until our ChannelData comes back (True) or the socket times out (False)."""
    for _ in range(16):  # a stray STUN answer or two may come first; never loop forever
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return False
        if len(data) >= size and data[0] == CHANNEL >> 8:
            return True
    return False


# --- allocations per second -----------------------------------------------------------


def _source(worker: int, index: int) -> str:
    """Worker `worker`'s `index`-th source IP: 127.(10+worker).(hi).(lo), 4000 of them."""
    slot = index % 4000
    return f"127.{10 + worker}.{slot // 250}.{slot % 250 + 1}"


def _allocator(target: Target, worker: int, reports: Any, go: Any, seconds: float) -> None:
    """Allocate (401, then signed) and Refresh(0) on fresh 5-tuples for `seconds`."""
    reports.put("ready")
    if not go.wait(_START_TIMEOUT):
        return
    done = failed = 0
    cpu = _own_cpu()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with target.client(bind=(_source(worker, done + failed), 0)) as client:
                client.allocate()
                client.refresh(0)
            done += 1
        except (OSError, TurnClientError):
            failed += 1
    reports.put((done, failed, _own_cpu() - cpu))


def _own_cpu() -> float:
    """This process's CPU seconds (user + system)."""
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True, slots=True)
class AllocationWindow:
    seconds: float
    server_cpu: float
    allocations: int
    failures: int
    client_cpu: float = 0.0  # CPU seconds the allocating processes used, all together


def allocation_rate(
    target: Target, *, workers: int, duration: float, server_cpu: Callable[[], float]
) -> AllocationWindow:
    """Run `workers` allocator processes for `duration` seconds; count what succeeded."""
    go = _CTX.Event()
    reports: Any = _CTX.Queue()
    processes: list[BaseProcess] = [
        _CTX.Process(target=_allocator, args=(target, w, reports, go, duration), daemon=True)
        for w in range(workers)
    ]
    try:
        with _started(processes):
            for _ in processes:
                _get(reports, "allocator")
            began, cpu = time.monotonic(), server_cpu()
            go.set()
            results = [_get(reports, "allocator", duration + _START_TIMEOUT) for _ in processes]
            seconds, used = time.monotonic() - began, server_cpu() - cpu
    finally:
        go.set()
    return AllocationWindow(
        seconds,
        used,
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        sum(r[2] for r in results),
    )
