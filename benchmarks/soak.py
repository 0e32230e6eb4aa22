"""Soak: many UDP allocations relaying ChannelData through a real `trelay serve` for minutes.

Owns the long reliability run of issue 15 (Deliver 5; `make soak`): `--clients` clients
(default 100), each with its own source IP (127.0.1.N, so no per-source bound is what
holds them back), allocate over UDP, bind channel 0x4000 to one echo peer and send
`--rate` ChannelData datagrams per second (default 50, 20 ms apart, as a voice call does)
for `--minutes` (default 10). The peer echoes every datagram back through the relay, so
each one crosses the server twice; the report counts datagrams sent by the clients,
echoed by the peer and received back by the clients (on loopback nothing should be lost:
a shortfall is reported with where it happened).

Every two minutes each client refreshes its allocation and its channel (RFC 8656 §7.3,
§11.1; staggered over the period), as a long call does: the Refresh path is the one that
once grew the server by ~200 bytes per request.

Variants that tell causes of growth apart: `--refresh-period S` (0: never refresh; the
allocations then expire after their 600 s, so keep such a run under 10 minutes),
`--no-data` (allocations and refreshes only), `--serve-args` (more `trelay serve`
arguments, e.g. a `--config` with a shorter `[usage] interval_seconds`), and
`--tracemalloc 2,8`: the server runs under `benchmarks.traced_trelay` and a tracemalloc
snapshot is taken at each of those minutes; the report then lists what grew in the
Python heap between the first and the last (by traceback), so growth is either placed on
a line of code or shown to lie outside the Python heap (allocator, C libraries).

The server's resident set (VmRSS) is sampled every `--sample` seconds; the report gives
start, end, maximum, and the least-squares slope after the first minute (warm-up: the
allocations, caches and allocator arenas fill then). CPU of the server (all its threads,
from /proc) and of the load generator (this process: clients and peer) are reported as a
share of one core, with the load generator's latest tick, so that a load generator at its
limit is visible rather than read as a server that fell behind.

One process, non-blocking sockets and one epoll: at 5,000 datagrams/s each way this costs
a fraction of a core. Every wait is bounded (epoll timeouts, a hard deadline, client
transactions with retries), and the server is killed in a `finally`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.relay_bench import cpu_seconds
from benchmarks.report import README, machine_lines, write_marked_section
from benchmarks.traced_trelay import diff
from benchmarks.turn_client import Address, TurnClient
from trelay.stun.errors import StunDecodeError
from trelay.turn.client_events import RequestFailed, Retrying, TransactionEnded

USER, PASSWORD, REALM = "u", "p", "bench"
CHANNEL = 0x4000
START, END = "<!-- soak:start -->", "<!-- soak:end -->"
HEADING = "## Reliability: soak"
REFRESH_PERIOD = 120.0  # seconds between two refreshes of one client
WARMUP = 60.0  # seconds of samples left out of the slope
_REQUEST_TIMEOUT = 2.0  # seconds before a refresh transaction is sent again
_REQUEST_SENDS = 3


# --- the server --------------------------------------------------------------------------


@dataclass
class Server:
    """A `trelay serve` process: its UDP and operator HTTP addresses; with `snapshots`,
    it runs under `benchmarks.traced_trelay`, which dumps tracemalloc snapshots there."""

    process: subprocess.Popen[bytes]
    udp: Address
    http: Address
    log: Path
    snapshots: Path | None = None
    taken: list[Path] = field(default_factory=list)

    def snapshot(self) -> None:
        """Have the traced server dump a snapshot; wait (bounded) until it is written."""
        assert self.snapshots is not None
        path = self.snapshots / f"snapshot-{len(self.taken)}.bin"
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 120.0
        while not path.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no tracemalloc snapshot {path}; see {self.log}")
            time.sleep(0.05)
        self.taken.append(path)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu(self) -> float:
        if self.process.poll() is not None:
            raise RuntimeError(f"trelay exited ({self.process.returncode}); see {self.log}")
        return cpu_seconds(self.process.pid)

    def metrics(self, prefix: str) -> dict[str, float]:
        """The samples of /metrics whose name starts with `prefix`."""
        url = f"http://{self.http[0]}:{self.http[1]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(prefix):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


def _address(text: str) -> Address:
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _read_ready(stream: object, timeout: float) -> dict[str, list[str]]:
    assert hasattr(stream, "readline")
    with contextlib.closing(select.epoll()) as poll:
        poll.register(stream.fileno(), select.EPOLLIN)  # type: ignore[attr-defined]
        if not poll.poll(timeout):
            raise RuntimeError(f"no ready line within {timeout} s")
    ready = json.loads(stream.readline())
    assert isinstance(ready, dict)
    return ready


@contextlib.contextmanager
def running_server(workdir: Path, *extra: str, trace_frames: int = 0) -> Iterator[Server]:
    """`trelay serve` of this environment on loopback UDP, with /metrics; killed after.
    `trace_frames` > 0: under tracemalloc (`benchmarks.traced_trelay`), that many frames."""
    if trace_frames:
        snapshots: Path | None = workdir / "snapshots"
        assert snapshots is not None
        snapshots.mkdir()
        launcher = [sys.executable, "-m", "benchmarks.traced_trelay"]
        launcher += [str(snapshots), str(trace_frames)]
    else:
        snapshots = None
        launcher = [str(Path(sys.executable).with_name("trelay"))]
    command = [
        *launcher,
        "serve",
        "--listen-udp", "127.0.0.1:0",
        "--listen-http", "127.0.0.1:0",
        "--user", f"{USER}:{PASSWORD}",
        "--realm", REALM,
        "--allow-loopback-peers",
        "--relay-address", "127.0.0.1",
        *extra,
    ]  # fmt: skip
    log = workdir / "trelay.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    try:
        ready = _read_ready(process.stdout, 300.0 if trace_frames else 15.0)
        udp, http = _address(ready["udp"][0]), _address(ready["http"][0])
        yield Server(process, udp, http, log, snapshots)
    finally:
        process.kill()
        process.wait(10)


# --- RSS and CPU ----------------------------------------------------------------------------


def slope_per_minute(samples: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) samples, in KiB per minute (0 if < 2)."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_v = sum(v for _, v in samples) / len(samples)
    num = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    den = sum((t - mean_t) ** 2 for t, _ in samples)
    return 0.0 if den == 0 else num / den * 60.0


def own_cpu() -> float:
    """CPU seconds of this process (user + system)."""
    times = os.times()
    return times.user + times.system


# --- the clients and the peer --------------------------------------------------------------


@dataclass
class Pending:
    """A refresh transaction in flight: what to resend, until when, how often."""

    data: bytes
    deadline: float
    sends: int = 1


@dataclass
class Client:
    turn: TurnClient
    frame: bytes
    pending: dict[bytes, Pending] = field(default_factory=dict)
    next_refresh: float = 0.0


@dataclass
class Counts:
    sent: int = 0
    send_blocked: int = 0  # the client's socket buffer was full (EAGAIN): not sent
    echoed: int = 0
    received: int = 0
    refreshes: int = 0
    refresh_failures: int = 0
    max_late: float = 0.0  # seconds the load generator's latest tick ran behind
    idle: float = 0.0  # seconds spent waiting in epoll


def _peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def allocate_clients(server: Address, peer: Address, count: int, payload: int) -> list[Client]:
    """`count` clients, each from 127.0.1.(i+1) (then 127.0.2.x...), with a bound channel."""
    clients: list[Client] = []
    try:
        for index in range(count):
            source = f"127.0.{1 + index // 250}.{1 + index % 250}"
            turn = TurnClient(server, USER, PASSWORD, bind=(source, 0), timeout=1.0)
            clients.append(Client(turn, b""))
            turn.allocate(lifetime=600)
            turn.channel_bind(CHANNEL, peer)
            body = struct.pack("!I", index).ljust(payload, b"\0")
            clients[-1].frame = turn.channel_data(CHANNEL, body)
            turn.sock.setblocking(False)
            turn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    except BaseException:
        for client in clients:
            client.turn.close()
        raise
    return clients


def _start_refresh(client: Client, peer: Address, now: float) -> None:
    session = client.turn.session
    for request in (session.refresh(600), session.channel_bind(CHANNEL, peer)):
        client.turn.sock.send(request.data)
        client.pending[request.transaction_id] = Pending(request.data, now + _REQUEST_TIMEOUT)


def _control(client: Client, data: bytes, counts: Counts, now: float) -> None:
    """A datagram from the server that is not ChannelData: a refresh's response."""
    try:
        events = client.turn.session.receive_datagram(data)
    except StunDecodeError:
        return
    for event in events:
        if isinstance(event, Retrying):  # 438 Stale Nonce: signed again with the new one
            client.pending.pop(event.transaction_id, None)
            client.turn.sock.send(event.request.data)
            client.pending[event.request.transaction_id] = Pending(
                event.request.data, now + _REQUEST_TIMEOUT
            )
        elif isinstance(event, (TransactionEnded, RequestFailed)):
            if client.pending.pop(event.transaction_id, None) is None:
                continue  # a late duplicate
            if isinstance(event, RequestFailed):
                counts.refresh_failures += 1
            else:
                counts.refreshes += 1


def _retransmit(client: Client, counts: Counts, now: float) -> None:
    for tid, pending in list(client.pending.items()):
        if pending.deadline > now:
            continue
        if pending.sends >= _REQUEST_SENDS:
            del client.pending[tid]
            client.turn.session.cancel(tid)
            counts.refresh_failures += 1
            continue
        client.turn.sock.send(pending.data)
        pending.sends += 1
        pending.deadline = now + _REQUEST_TIMEOUT


@dataclass
class Run:
    seconds: float
    counts: Counts
    rss: list[tuple[float, int]]
    server_cpu: float
    load_cpu: float
    drops: dict[str, float]
    clients: int
    rate: float
    payload: int
    refresh_period: float = REFRESH_PERIOD
    data: bool = True


def soak(
    server: Server,
    clients_wanted: int,
    rate: float,
    seconds: float,
    sample: float,
    payload: int,
    *,
    refresh_period: float = REFRESH_PERIOD,
    data: bool = True,
    snapshot_at: Sequence[float] = (),
) -> Run:
    """Run the load for `seconds`; `refresh_period` 0 never refreshes, `data` False sends
    no ChannelData, and a tracemalloc snapshot is taken `snapshot_at` seconds in."""
    peer_sock = _peer()
    peer = peer_sock.getsockname()
    clients = allocate_clients(server.udp, peer, clients_wanted, payload)
    counts = Counts()
    by_fd = {client.turn.sock.fileno(): client for client in clients}
    poll = select.epoll()
    try:
        poll.register(peer_sock.fileno(), select.EPOLLIN)
        for fd in by_fd:
            poll.register(fd, select.EPOLLIN)
        start = time.monotonic()
        period = refresh_period or math.inf
        for index, client in enumerate(clients):
            client.next_refresh = start + period * (index + 1) / len(clients)
        snapshots = sorted(start + at for at in snapshot_at)
        rss = [(0.0, server.rss_kib())]
        cpu0, own0 = server.cpu(), own_cpu()
        interval = 1.0 / rate
        next_tick, next_sample, end = start, start + sample, start + seconds
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_tick:
                counts.max_late = max(counts.max_late, now - next_tick)
                for client in clients if data else ():
                    try:
                        client.turn.sock.send(client.frame)
                        counts.sent += 1
                    except BlockingIOError:
                        counts.send_blocked += 1
                next_tick += interval
                for client in clients:
                    if client.next_refresh <= now:
                        client.next_refresh += period
                        _start_refresh(client, peer, now)
                    if client.pending:
                        _retransmit(client, counts, now)
            if now >= next_sample:
                rss.append((now - start, server.rss_kib()))
                next_sample += sample
            if snapshots and now >= snapshots[0]:
                snapshots.pop(0)
                server.snapshot()
            wait = max(0.0, min(next_tick, next_sample, end) - time.monotonic())
            before = time.monotonic()
            ready = poll.poll(wait)
            counts.idle += time.monotonic() - before
            for fd, _ in ready:
                if fd == peer_sock.fileno():
                    _echo(peer_sock, counts)
                else:
                    _drain(by_fd[fd], counts, now)
        # Let the last datagrams come back (bounded), then read the totals.
        settle = time.monotonic() + 1.0
        while (remaining := settle - time.monotonic()) > 0:
            for fd, _ in poll.poll(remaining):
                if fd == peer_sock.fileno():
                    _echo(peer_sock, counts)
                else:
                    _drain(by_fd[fd], counts, time.monotonic())
        elapsed = time.monotonic() - start
        server_cpu, load_cpu = server.cpu() - cpu0, own_cpu() - own0
        rss.append((elapsed, server.rss_kib()))
        drops = server.metrics("trelay_dropped_datagrams_total")
    finally:
        poll.close()
        peer_sock.close()
        for client in clients:
            client.turn.close()
    return Run(
        elapsed,
        counts,
        rss,
        server_cpu,
        load_cpu,
        drops,
        len(clients),
        rate,
        payload,
        refresh_period,
        data,
    )


def _echo(sock: socket.socket, counts: Counts) -> None:
    for _ in range(4096):  # bounded: the rest waits for the next poll
        try:
            data, source = sock.recvfrom(2048)
        except BlockingIOError:
            return
        counts.echoed += 1
        with contextlib.suppress(BlockingIOError):
            sock.sendto(data, source)


def _drain(client: Client, counts: Counts, now: float) -> None:
    sock = client.turn.sock
    for _ in range(4096):
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return
        except ConnectionRefusedError:
            continue
        if data and 0x40 <= data[0] <= 0x4F:
            counts.received += 1
        else:
            _control(client, data, counts, now)


# --- the report ---------------------------------------------------------------------------


def report(run: Run, command: str) -> str:
    counts = run.counts
    values = [kib for _, kib in run.rss]
    after_warmup = [(t, kib) for t, kib in run.rss if t >= WARMUP] or run.rss
    lost_to_peer = counts.sent - counts.echoed
    lost_back = counts.echoed - counts.received
    drops = ", ".join(f"{name} {value:g}" for name, value in sorted(run.drops.items()) if value)
    traffic = (
        f"{run.rate:g} ChannelData/s each of {run.payload} bytes, echoed by one peer"
        if run.data
        else "no ChannelData"
    )
    refreshes = (
        f"each client refreshes its allocation and channel every {run.refresh_period:g} s"
        if run.refresh_period
        else "no refreshes"
    )
    loss = (
        "none"
        if lost_to_peer == 0 and lost_back == 0
        else f"{lost_to_peer} on the way to the peer, {lost_back} on the way back"
    )
    return "\n".join(
        [
            f"Command: `{command}` ({run.clients} clients over UDP, {traffic}; {refreshes}).",
            "",
            *machine_lines(),
            "",
            "| | |",
            "|---|--:|",
            f"| duration | {run.seconds:.0f} s |",
            f"| server RSS start / end / max | {values[0] / 1024:.1f} / {values[-1] / 1024:.1f} "
            f"/ {max(values) / 1024:.1f} MiB |",
            f"| RSS slope after {WARMUP:g} s | {slope_per_minute(after_warmup):+.1f} KiB/min |",
            f"| RSS samples | {len(values)} |",
            f"| datagrams sent by the clients | {counts.sent:,} |",
            f"| echoed by the peer | {counts.echoed:,} |",
            f"| received back by the clients | {counts.received:,} |",
            f"| lost | {loss} |",
            f"| not sent (client socket full) | {counts.send_blocked:,} |",
            f"| refreshes answered / failed | {counts.refreshes:,} / {counts.refresh_failures} |",
            f"| server dropped (trelay_dropped_datagrams_total) | {drops or 'none'} |",
            f"| server CPU | {run.server_cpu / run.seconds:.0%} of a core |",
            f"| load generator CPU | {run.load_cpu / run.seconds:.0%} of a core "
            f"(idle in epoll {counts.idle / run.seconds:.0%} of the time; latest tick "
            f"{counts.max_late * 1000:.1f} ms) |",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="datagrams/s per client")
    parser.add_argument("--payload", type=int, default=160, help="bytes per datagram")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--write", action="store_true", help="write the report to README.md")
    parser.add_argument(
        "--refresh-period", type=float, default=REFRESH_PERIOD, help="seconds; 0: never"
    )
    parser.add_argument("--no-data", action="store_true", help="send no ChannelData")
    parser.add_argument(
        "--tracemalloc",
        metavar="MINUTES",
        help="comma-separated minutes at which the traced server dumps a snapshot",
    )
    parser.add_argument("--trace-frames", type=int, default=8, help="frames per trace")
    parser.add_argument(
        "--serve-args", default="", help="more `trelay serve` arguments (shell words)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 250 * 250 or args.rate <= 0 or args.minutes <= 0:
        parser.error("--clients 1..62500, --rate and --minutes > 0")
    if args.refresh_period < 0:
        parser.error("--refresh-period >= 0")
    snapshot_at = [float(m) * 60 for m in args.tracemalloc.split(",")] if args.tracemalloc else []
    if any(not 0 < at < args.minutes * 60 for at in snapshot_at):
        parser.error("--tracemalloc minutes within the run")
    frames = args.trace_frames if snapshot_at else 0
    extra = shlex.split(args.serve_args)
    with (
        tempfile.TemporaryDirectory() as workdir,
        running_server(Path(workdir), *extra, trace_frames=frames) as server,
    ):
        run = soak(
            server,
            args.clients,
            args.rate,
            args.minutes * 60,
            args.sample,
            args.payload,
            refresh_period=args.refresh_period,
            data=not args.no_data,
            snapshot_at=snapshot_at,
        )
        tracebacks = server.log.read_text(errors="replace").count("Traceback")
        grown = diff(server.taken[0], server.taken[-1]) if len(server.taken) > 1 else []
    command = " ".join(["python -m benchmarks.soak", *(argv or sys.argv[1:])]).strip()
    text = report(run, command) + f"\n\nTracebacks in the server's log: {tracebacks}."
    print(text)
    print("\nRSS samples (s, KiB):", " ".join(f"{t:.0f}:{kib}" for t, kib in run.rss))
    if grown:
        print(f"\nPython heap growth between the snapshots at {args.tracemalloc} min:")
        print("\n".join(grown))
    if args.write:
        write_marked_section(README, START, END, text, HEADING)
        print(f"\nwritten to {README}")


if __name__ == "__main__":
    main()
