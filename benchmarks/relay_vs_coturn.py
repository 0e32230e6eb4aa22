"""trelay beside coturn under the load users run: a C load generator and an echo peer.

Run as `python -m benchmarks.relay_vs_coturn [--quick] [--commit REV | --worktree]
[--baseline REV]` (or `make bench-coturn`); never run by the tests (tests/benchmarks_smoke/
only checks that the C helper builds and relays a few datagrams). Issue 13, Deliver 1:
what a relay costs is server CPU per relayed datagram and per allocation, measured so that
the load is not the limit.

- The load: `benchmarks/loadgen.c`, compiled here with the machine's C compiler into a
  temporary directory. This driver allocates the flows with `benchmarks.turn_client`
  (401, signed Allocate, ChannelBind 0x4000 to the echo peer; one source IP per flow,
  spread over 127.0.0.0/8 so no per-source limit is reached) and hands the client
  sockets to `loadgen client` (pass_fds), which sends ChannelData with sendmmsg and
  reads with recvmmsg. The peer (`loadgen peer`) echoes every datagram to the relayed
  address it came from, so both directions are relayed.
- Modes (`MODES`): saturated (8 flows x 16 in flight) and light (8 x 1) at 100 B and
  1200 B; "audio" (1000 flows x 50 datagrams/s of 160 B, paced, and 200 x 50/s, a fleet
  that a busy shared machine still carries); ping-pong (1 x 1, RTT p50/p99); burst (1 x 64
  in flight of 1200 B: coalesced load) and burst-gro (the same burst as a NIC with GRO
  presents it: `Mode.gso`, below). Per mode and server, the median of 3 alternating
  windows; `--only` runs a part (modes by name, allocations, memory).
- `Mode.gso` (burst-gro): the load generator and the echo peer send each flow's run of
  equal-size datagrams in one `sendmsg` with UDP_SEGMENT (`loadgen --gso`). On a real
  network a NIC with GRO coalesces a burst of one flow; on loopback nothing coalesces
  unless the sender used GSO, and then a socket with UDP_GRO receives the burst as one
  buffer while any other socket (coturn's) gets it cut into datagrams: the same load
  for both servers, as each would meet it behind such a NIC. Its own echo peer, so the
  other modes' load is unchanged.
- Allocations per server CPU-second: `load_generator.allocation_rate` (401 + Allocate +
  Refresh 0, sources over 127.10-11.x.y). RSS per allocation: VmRSS before and after
  10,000 more allocations held open (one source IP each).
- Server CPU: /proc/PID/task/*/schedstat (`relay_bench.cpu_seconds`), all threads. The
  load generator's and the echo peer's own CPU (getrusage) are reported per mode: how
  close to a core each ran. With 2+ CPUs each server is pinned to the first CPU and the
  load (this driver, the load generator, the peer, the allocators) to the others.
- trelay measured: by default the committed tree at `--commit` (HEAD), exported with
  `git archive` and run with this environment's Python, so uncommitted edits in a shared
  working tree are not measured by accident; `--worktree` measures the checkout as it is.
  `--baseline REV` adds a second trelay build (`baseline`) to the same alternating rounds,
  so a change is measured before and after, beside coturn, in one run.
- `--workers N` (issue 13 part 5): no coturn; trelay with 1 worker and with `--workers N`
  in the same alternating rounds, unpinned, the flows' sources picked with
  `trelay.process.reuseport_steering.worker_for` so each worker holds its share; per
  window each process's CPU (schedstat: the supervisor and every worker, pids from its
  "worker I bound (pid P)" log lines) and relayed datagrams per worker CPU-second, and
  each process's RSS after start. Printed only (the README's marked table stays).

It prints the tables and rewrites the marked part of the "Relay vs coturn: the load users
run" section of benchmarks/README.md (`--no-write` keeps it). Every process it starts is
killed in a `finally`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks.load_generator import CHANNEL, Target, allocation_rate
from benchmarks.relay_bench import (
    BASELINE,
    QUIET,
    Server,
    coturn_version,
    cpu_seconds,
    read_line,
    running_servers,
    split_cpus,
    start_trelay,
)
from benchmarks.report import README, machine_lines, write_marked_section
from benchmarks.turn_client import Address, TurnClient, TurnClientError
from trelay.process.reuseport_steering import worker_for

SOURCE = Path(__file__).with_name("loadgen.c")
REPO = Path(__file__).resolve().parent.parent
START = "<!-- relay-vs-coturn:start -->"
END = "<!-- relay-vs-coturn:end -->"
HEADING = "## Relay vs coturn: the load users run"
NOFILE = 65536  # open files wanted for the servers (see raise_nofile)
RTT_CAP_US = 200_000  # loadgen.c's HIST: its last histogram bucket holds all longer round trips
_LINE_TIMEOUT = 15.0  # seconds for a helper process to print its next expected line


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    size: int  # payload bytes
    flows: int
    inflight: int = 0  # closed loop: datagrams in flight per flow
    rate: float = 0.0  # paced: datagrams per second per flow
    gso: bool = False  # a flow's runs sent with GSO both ways: what a GRO NIC delivers

    @property
    def label(self) -> str:
        shape = (
            f"{self.flows} x {self.inflight}"
            if self.inflight
            else f"{self.flows} x {self.rate:g}/s"
        )
        if self.gso:
            shape += ", coalesced as by a NIC with GRO"
        return f"{self.name}, {self.size} B ({shape})"


MODES = (
    Mode("saturated", 100, 8, inflight=16),
    Mode("saturated", 1200, 8, inflight=16),
    Mode("light", 100, 8, inflight=1),
    Mode("light", 1200, 8, inflight=1),
    Mode("audio", 160, 1000, rate=50.0),
    Mode("audio", 160, 200, rate=50.0),  # a fleet a busy shared machine can still carry
    Mode("ping-pong", 100, 1, inflight=1),
    # Coalesced load: one flow's datagrams back to back (a video frame's packets), what
    # batched sends (GSO) can group; issue 13 asks for it beside the rest.
    Mode("burst", 1200, 1, inflight=64),
    # The same burst as a NIC with GRO presents it to the server: the load generator and
    # the echo peer send each run with GSO, so a socket with UDP_GRO receives it as one
    # buffer and any other socket as separate datagrams (see `Mode.gso`).
    Mode("burst-gro", 1200, 1, inflight=64, gso=True),
)
PHASES = ("allocations", "memory")  # besides the modes, what `--only` can name


# --- building the helpers --------------------------------------------------------------


def compiler() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def compile_loadgen(directory: Path) -> Path:
    """`benchmarks/loadgen.c` built with the machine's C compiler into `directory`."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (gcc or cc) on PATH: apt-get install gcc")
    binary = directory / "loadgen"
    done = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(binary), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{cc} failed on {SOURCE}:\n{done.stderr}")
    return binary


def trelay_at(commit: str, directory: Path) -> tuple[str, str]:
    """A `trelay` executable running `commit`'s tree (from `git archive`) with this
    environment's Python and packages; and the full commit id."""
    full = _git("rev-parse", "--verify", f"{commit}^{{commit}}").decode().strip()
    source = directory / f"trelay-{full[:12]}"
    source.mkdir()
    with tarfile.open(fileobj=io.BytesIO(_git("archive", "--format=tar", full))) as archive:
        archive.extractall(source, filter="data")
    executable = directory / f"trelay-{full[:12]}.sh"
    executable.write_text(
        "#!/bin/sh\n"
        # -P: no current directory on sys.path, or a run from the checkout would import
        # the checkout's trelay instead of `commit`'s.
        f"PYTHONPATH='{source}' exec '{sys.executable}' -P -c "
        "'import sys; from trelay.process.cli import main; sys.exit(main())' \"$@\"\n"
    )
    executable.chmod(0o755)
    return str(executable), full


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True).stdout


def worktree_state() -> str:
    """HEAD and, when the checkout differs from it under the server's code, which files."""
    head = _git("rev-parse", "--short=12", "HEAD").decode().strip()
    changed = _git("status", "--porcelain", "--", "relay", "stun", "turn").decode().split("\n")
    files = [line[3:] for line in changed if line.strip()]
    if not files:
        return f"working tree at {head} (clean under relay/, stun/, turn/)"
    return f"working tree at {head} with uncommitted changes in {', '.join(sorted(files))}"


# --- the echo peer ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerStats:
    received: int
    echoed: int
    dropped: int
    cpu: float  # user + system seconds
    gso_runs: int = 0  # echoes sent as one GSO message per run (`--gso`)


class EchoPeer:
    """`loadgen peer`: one UDP socket on 127.0.0.1 echoing what it receives (with `gso`,
    each run of one batch to one address in one GSO send)."""

    def __init__(self, binary: Path, seconds: float, gso: bool = False) -> None:
        self.process = subprocess.Popen(
            [str(binary), "peer", "--seconds", str(seconds), *(["--gso"] if gso else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert self.process.stdout is not None
            port = json.loads(read_line(self.process.stdout, _LINE_TIMEOUT))["port"]
        except BaseException:
            self.close()
            raise
        self.address: Address = ("127.0.0.1", int(port))

    def stats(self) -> PeerStats:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"stats\n")
        self.process.stdin.flush()
        line = json.loads(read_line(self.process.stdout, _LINE_TIMEOUT))
        return PeerStats(
            line["received"],
            line["echoed"],
            line["dropped"],
            line["user"] + line["sys"],
            line.get("gso_runs", 0),
        )

    def cpu(self) -> float:
        return self.stats().cpu

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()  # its cue to end
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextlib.contextmanager
def echo_peer(binary: Path, seconds: float, gso: bool = False) -> Iterator[EchoPeer]:
    peer = EchoPeer(binary, seconds, gso)
    try:
        yield peer
    finally:
        peer.close()


@contextlib.contextmanager
def echo_peers(binary: Path, seconds: float) -> Iterator[Callable[[Mode], EchoPeer]]:
    """The echo peer a mode uses (one with `--gso` for `Mode.gso`), each started when a
    mode first asks for it and stopped at the end."""
    with contextlib.ExitStack() as stack:
        peers: dict[bool, EchoPeer] = {}

        def peer_for(mode: Mode) -> EchoPeer:
            if mode.gso not in peers:
                peers[mode.gso] = stack.enter_context(echo_peer(binary, seconds, mode.gso))
            return peers[mode.gso]

        yield peer_for


# --- flows -----------------------------------------------------------------------------


def spread_source(index: int, base: int) -> str:
    """The `index`-th of 62,500 source IPs from 127.`base`.0.1 on (250 per /24)."""
    return f"127.{base + index // 62500}.{(index // 250) % 250}.{index % 250 + 1}"


def open_flows(target: Target, count: int, peer: Address, base: int) -> list[TurnClient]:
    """`count` clients, each allocated from its own source IP with channel 0x4000 bound
    to `peer`. On failure the ones already open are released."""
    clients: list[TurnClient] = []
    try:
        for index in range(count):
            client = target.client(bind=(spread_source(index, base), 0))
            clients.append(client)
            client.allocate()
            client.channel_bind(CHANNEL, peer)
    except BaseException:
        close_flows(clients)
        raise
    return clients


def close_flows(clients: list[TurnClient]) -> None:
    """Refresh 0 (the server frees the allocation at once) and close each client."""
    for client in clients:
        drain_socket(client.sock)
        with contextlib.suppress(OSError, TurnClientError):
            if client.relayed is not None:
                client.refresh(0)
        client.close()


def drain_socket(sock: socket.socket, limit: int = 100_000) -> None:
    """Read and drop what is queued (late echoes of an earlier window), bounded."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        for _ in range(limit):
            sock.recv(65535)
    except (BlockingIOError, ConnectionRefusedError):
        pass
    finally:
        sock.settimeout(timeout)


# --- one window ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadWindow:
    """What one load-generator run measured in its window (and lost in all of it)."""

    seconds: float
    server_cpu: float
    sent: int  # ChannelData the clients sent
    received: int  # ChannelData back at the clients: relayed peer -> client
    peer_received: int  # datagrams at the echo peer: relayed client -> peer
    peer_dropped: int  # the peer could not echo them (its send buffer was full)
    lost: int  # the whole run, after a drain: sent - received by the clients
    run_sent: int  # the whole run (warm-up, window, drain)
    timeouts: int  # closed-loop flows restarted after hearing nothing for 250 ms
    rtt_p50: float  # µs
    rtt_p99: float
    client_cpu: float  # the load generator's CPU seconds in the window
    peer_cpu: float
    client_gso_runs: int = 0  # the whole run: GSO sends of the load generator (`Mode.gso`)
    peer_gso_runs: int = 0  # in the window: GSO sends of the echo peer

    @property
    def relayed(self) -> int:
        return self.peer_received + self.received

    def per_cpu(self) -> float:
        return self.relayed / self.server_cpu if self.server_cpu > 0 else 0.0

    def cpu_share(self) -> float:
        """Server CPU seconds per second (1.00: one core)."""
        return self.server_cpu / self.seconds


def run_window(
    binary: Path,
    clients: list[TurnClient],
    mode: Mode,
    peer: EchoPeer,
    server_cpu: Any,
    *,
    warmup: float,
    duration: float,
    drain: float = 0.5,
) -> LoadWindow:
    """`loadgen client` on `clients`' sockets; the server's and the peer's counters are
    read when it reports the window's start and end."""
    for client in clients:
        drain_socket(client.sock)
    fds = [client.sock.fileno() for client in clients]
    command = [str(binary), "client", "--fds", ",".join(map(str, fds)), "--size", str(mode.size)]
    command += ["--inflight", str(mode.inflight)] if mode.inflight else ["--rate", str(mode.rate)]
    command += ["--warmup", str(warmup), "--duration", str(duration), "--drain", str(drain)]
    command += ["--gso"] if mode.gso else []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, pass_fds=fds)
    try:
        assert process.stdout is not None
        _expect(process.stdout, "start", warmup + _LINE_TIMEOUT)
        cpu0, peer0 = server_cpu(), peer.stats()
        end = _expect(process.stdout, "end", duration + _LINE_TIMEOUT)
        cpu1, peer1 = server_cpu(), peer.stats()
        done = _expect(process.stdout, "done", drain + _LINE_TIMEOUT)
        process.wait(_LINE_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    return LoadWindow(
        seconds=end["seconds"],
        server_cpu=cpu1 - cpu0,
        sent=end["sent"],
        received=end["received"],
        peer_received=peer1.received - peer0.received,
        peer_dropped=peer1.dropped - peer0.dropped,
        lost=done["lost"],
        run_sent=done["sent"],
        timeouts=end["timeouts"],
        rtt_p50=end["rtt_p50"],
        rtt_p99=end["rtt_p99"],
        client_cpu=end["user"] + end["sys"],
        peer_cpu=peer1.cpu - peer0.cpu,
        client_gso_runs=done.get("gso_runs", 0),
        peer_gso_runs=peer1.gso_runs - peer0.gso_runs,
    )


def _expect(stream: IO[bytes], event: str, timeout: float) -> dict[str, Any]:
    line = read_line(stream, timeout)
    if not line:
        raise RuntimeError(f"the load generator ended before its {event!r} line")
    report: dict[str, Any] = json.loads(line)
    if report.get("event") != event:
        raise RuntimeError(f"load generator: expected {event!r}, got {line!r}")
    return report


# --- allocations and memory --------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass(frozen=True, slots=True)
class Held:
    allocations: int
    failures: int
    rss_before: int  # KiB
    rss_after: int
    seconds: float

    @property
    def per_allocation(self) -> float:
        """KiB of RSS per allocation held."""
        return (self.rss_after - self.rss_before) / self.allocations if self.allocations else 0.0


def hold_allocations(server: Server, count: int, base: int) -> Held:
    """Allocate `count` times (one source IP each) and keep the allocations: the client
    sockets close, the server holds each for its lifetime (600 s), longer than the run."""
    time.sleep(1.0)  # let the server settle after what ran before
    before = rss_kib(server.process.pid)
    began = time.monotonic()
    failures = 0
    for index in range(count):
        try:
            with server.target.client(bind=(spread_source(index, base), 0)) as client:
                client.allocate()
        except (OSError, TurnClientError):
            failures += 1
    seconds = time.monotonic() - began
    time.sleep(1.0)
    return Held(count - failures, failures, before, rss_kib(server.process.pid), seconds)


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    warmup: float
    duration: float
    rounds: int
    audio_flows: int
    alloc_seconds: float
    alloc_workers: int
    hold: int


@dataclass
class Results:
    windows: dict[tuple[str, Mode], list[LoadWindow]] = field(default_factory=dict)
    allocations: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)
    coturn_files: str = ""


def _ordered(servers: list[Server], round_: int) -> list[Server]:
    """Alternate who goes first, so drift on a shared machine hits both alike."""
    return servers if round_ % 2 == 0 else servers[::-1]


def measure(
    binary: Path,
    servers: list[Server],
    settings: Settings,
    modes: list[Mode],
    allocations: bool = True,
) -> Results:
    results = Results()
    relays = [s for s in servers if s.name != QUIET]  # `QUIET` differs in allocations only
    with echo_peers(binary, seconds=3600.0) as peers:
        for mode in modes:
            peer = peers(mode)
            flows = {
                s.name: open_flows(s.target, mode.flows, peer.address, base=40) for s in relays
            }
            try:
                for round_ in range(settings.rounds):
                    for server in _ordered(relays, round_):
                        window = run_window(
                            binary,
                            flows[server.name],
                            mode,
                            peer,
                            server.cpu,
                            warmup=settings.warmup,
                            duration=settings.duration,
                        )
                        results.windows.setdefault((server.name, mode), []).append(window)
                        print(
                            f"  {server.name:7} {mode.label:34} round {round_ + 1}: {_line(window)}"
                        )
            finally:
                for clients in flows.values():
                    close_flows(clients)
    for round_ in range(settings.rounds if allocations else 0):
        for server in _ordered(servers, round_):
            a = allocation_rate(
                server.target,
                workers=settings.alloc_workers,
                duration=settings.alloc_seconds,
                server_cpu=server.cpu,
            )
            rate = a.allocations / a.server_cpu if a.server_cpu > 0 else 0.0
            results.allocations.setdefault(server.name, []).append(
                (rate, a.client_cpu / a.seconds, a.failures)
            )
            print(
                f"  {server.name:7} allocations round {round_ + 1}: {rate:,.0f} per CPU-s, "
                f"server CPU {a.server_cpu / a.seconds:.2f}, "
                f"allocators {a.client_cpu / a.seconds:.2f}, failed {a.failures}"
            )
    return results


def measure_memory(servers: list[Server], settings: Settings, results: Results) -> None:
    """RSS per allocation on servers that have done nothing else yet: memory freed by
    earlier phases and kept by the allocator would hide what allocations cost."""
    for index, server in enumerate(servers):
        held = hold_allocations(server, settings.hold, base=60 + index)
        results.held[server.name] = held
        print(
            f"  {server.name:7} {held.allocations:,} held ({held.failures} failed, "
            f"{held.seconds:.0f} s): {held.per_allocation:.1f} KiB each"
        )
    coturn = next((s for s in servers if s.name == "coturn"), None)
    if coturn is not None:
        results.coturn_files = _coturn_files(coturn.log)


@contextlib.contextmanager
def logs_on_failure(servers: list[Server]) -> Iterator[None]:
    """When a phase fails, print the end of each server's log (the temporary directory
    holding them goes with the servers)."""
    try:
        yield
    except BaseException:
        for server in servers:
            with contextlib.suppress(OSError):
                tail = server.log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {server.name} log (end) ---", *tail, sep="\n", file=sys.stderr)
        raise


def _coturn_files(log: Path) -> str:
    """coturn's own statement of its socket limit and the sessions it allows, from its
    log ("Max number of open files/sockets allowed for this process: N", "max supported
    number of TURN Sessions possible is: M (approximately)")."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            lower = line.lower()
            if "open files/sockets allowed" in lower or "max supported number" in lower:
                found.append(line.split(":", 1)[-1].strip())
    if len(found) < 2:
        return "not logged"
    return f"{found[0]} open files, so about {found[1].split()[0]} sessions"


def _line(w: LoadWindow) -> str:
    gso = (
        f", GSO sends: loadgen {w.client_gso_runs:,} peer {w.peer_gso_runs:,}"
        if w.client_gso_runs or w.peer_gso_runs
        else ""
    )
    return (
        f"{w.per_cpu():,.0f} relayed/CPU-s, server CPU {w.server_cpu / w.seconds:.2f}, "
        f"{w.relayed / w.seconds:,.0f}/s, rtt p50 {w.rtt_p50:.0f} µs, lost {w.lost}, "
        f"loadgen {w.client_cpu / w.seconds:.2f} peer {w.peer_cpu / w.seconds:.2f}{gso}"
    )


# --- the report --------------------------------------------------------------------------


def median_window(windows: list[LoadWindow], mode: Mode) -> LoadWindow:
    """The median window: by relayed per server CPU-s (a paced mode: by server CPU)."""
    if mode.rate:
        return sorted(windows, key=lambda w: w.server_cpu / w.seconds)[len(windows) // 2]
    return sorted(windows, key=LoadWindow.per_cpu)[len(windows) // 2]


def _loss(windows: list[LoadWindow]) -> float:
    """Datagrams lost over the runs, as a fraction of those sent."""
    sent = sum(w.run_sent for w in windows)
    return sum(w.lost for w in windows) / sent if sent else 0.0


def _lost(windows: list[LoadWindow]) -> str:
    lost = sum(w.lost for w in windows)
    return f"{lost:,} ({_loss(windows):.1%})" if lost else "0"


def _spread(windows: list[LoadWindow]) -> str:
    """Every round's relayed per server CPU-s, in thousands, in order."""
    return ", ".join(f"{w.per_cpu() / 1000:.0f}k" for w in windows)


def _micros(value: float) -> str:
    """A round trip from the load generator's histogram, which ends at 200 ms."""
    return f">= {RTT_CAP_US:,} µs" if value >= RTT_CAP_US else f"{value:,.0f} µs"


def _ratio(ours: float, theirs: float) -> str:
    """ours/theirs; "n/a" where either was not measured (0)."""
    return f"{ours / theirs:.2f}x" if theirs > 0 and ours > 0 else "n/a"


@dataclass(frozen=True, slots=True)
class Measure:
    """One row of the ratio table: a value per server and which way is better."""

    label: str
    values: dict[str, float]
    higher_is_better: bool


def measures(results: Results, names: list[str], modes: list[Mode]) -> list[Measure]:
    rows: list[Measure] = []
    for mode in modes:
        runs = {n: results.windows[(n, mode)] for n in names}
        best = {n: median_window(runs[n], mode) for n in names}
        if mode.rate:
            losses = {n: _loss(runs[n]) for n in names}
            if max(losses.values()) < 0.01:
                shares = {n: best[n].cpu_share() for n in names}
                rows.append(Measure(f"{mode.label}: server CPU for the load", shares, False))
            else:  # not the same load: what each relayed differs, so compare per datagram
                lost = ", ".join(f"{n} lost {losses[n]:.0%}" for n in names)
                micros = {n: 1e6 / best[n].per_cpu() if best[n].per_cpu() else 0.0 for n in names}
                label = f"{mode.label}: server CPU per relayed datagram (not sustained: {lost})"
                rows.append(Measure(label, micros, False))
        elif mode.name == "ping-pong":
            for name, pick in (("p50", "rtt_p50"), ("p99", "rtt_p99")):
                values = {n: statistics.median(getattr(w, pick) for w in runs[n]) for n in names}
                rows.append(Measure(f"ping-pong {name}", values, False))
        else:
            per_cpu = {n: best[n].per_cpu() for n in names}
            rows.append(Measure(f"{mode.label}: relayed per server CPU-s", per_cpu, True))
    if results.allocations:
        rates = {n: statistics.median(r[0] for r in results.allocations[n]) for n in names}
        micros = {n: 1e6 / rates[n] if rates[n] else 0.0 for n in names}
        rows.append(Measure("server CPU per allocation", micros, False))
        quiet = results.allocations.get(QUIET)
        if quiet:  # the same build writing no line per allocation, as coturn writes none
            rate = statistics.median(r[0] for r in quiet)
            like = {n: 0.0 for n in names} | {"coturn": micros["coturn"]}  # 0: "n/a"
            like[names[0]] = 1e6 / rate if rate else 0.0
            label = f"server CPU per allocation, {names[0]} at log level warning ({QUIET})"
            rows.append(Measure(label, like, False))
    if results.held:
        per_alloc = {n: results.held[n].per_allocation for n in names}
        rows.append(Measure("RSS per allocation held", per_alloc, False))
    return rows


def tables(results: Results, names: list[str], modes: list[Mode]) -> str:
    """Per mode and server, the median window; allocations and memory; then the ratios:
    each trelay build to coturn, and (with a baseline) the build under test to it."""
    lines = [
        "| mode | server | relayed per server CPU-s (all rounds) | server CPU | relayed/s "
        "| RTT p50 | p99 "
        "| lost | load generator CPU | echo peer CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for mode in modes:
        for name in names:
            runs = results.windows[(name, mode)]
            w = median_window(runs, mode)
            lines.append(
                f"| {mode.label} | {name} | {w.per_cpu():,.0f} ({_spread(runs)}) "
                f"| {w.cpu_share():.2f} "
                f"| {w.relayed / w.seconds:,.0f} | {_micros(w.rtt_p50)} | {_micros(w.rtt_p99)} "
                f"| {_lost(runs)} | {w.client_cpu / w.seconds:.2f} | {w.peer_cpu / w.seconds:.2f} |"
            )
    if results.allocations:
        lines += [
            "",
            "| server | allocations per server CPU-s | server CPU µs per allocation "
            "| allocators' CPU | failed |",
            "|---|--:|--:|--:|--:|",
        ]
        for name, runs_a in results.allocations.items():
            rate = statistics.median(r[0] for r in runs_a)
            lines.append(
                f"| {name} | {rate:,.0f} | {1e6 / rate if rate else 0:,.0f} "
                f"| {statistics.median(r[1] for r in runs_a):.2f} | {sum(r[2] for r in runs_a)} |"
            )
    if results.held:
        lines += ["", "| server | RSS per allocation held | RSS before -> after |", "|---|--:|--:|"]
        for name in names:
            held = results.held[name]
            lines.append(
                f"| {name} | {held.per_allocation:.1f} KiB | {held.rss_before / 1024:.1f} -> "
                f"{held.rss_after / 1024:.1f} MiB ({held.allocations:,} held, "
                f"{held.failures} failed) |"
            )
    trelay, coturn, *others = names
    pairs = [(trelay, coturn), *((o, coturn) for o in others), *((trelay, o) for o in others)]
    heading = " | ".join(f"{a}/{b}" for a, b in pairs)
    lines += ["", f"| measure | {heading} |", "|---|" + "--:|" * len(pairs)]
    for row in measures(results, names, modes):
        better = "higher" if row.higher_is_better else "lower"
        cells = " | ".join(_ratio(row.values[a], row.values[b]) for a, b in pairs)
        lines.append(f"| {row.label} ({better} is better) | {cells} |")
    return "\n".join(lines)


def report(
    results: Results,
    names: list[str],
    modes: list[Mode],
    command: str,
    settings: Settings,
    cpus: tuple[set[int], set[int]] | None,
    measured: str,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    minutes: float,
) -> str:
    placement = (
        "servers and load share all CPUs"
        if cpus is None
        else f"each server pinned to CPU {sorted(cpus[0])}; the load generator, the echo peer "
        f"and the driver to {sorted(cpus[1])}"
    )
    before, after = (", ".join(f"{x:.2f}" for x in avg) for avg in load)
    return "\n".join(
        [
            f"Command: `{command}` ({settings.warmup:g} s warm-up, {settings.duration:g} s "
            f"windows, median of {settings.rounds} alternating rounds per mode; "
            f"{settings.alloc_workers} allocating processes for {settings.alloc_seconds:g} s "
            f"per round; {settings.hold:,} allocations held for RSS). Took {minutes:.1f} min.",
            "",
            *machine_lines(),
            f"- trelay: {measured}",
            f"- coturn: {coturn_version()} (`turnserver`, Debian package, one relay thread); "
            f"its open-files limit: {results.coturn_files}",
            f"- Placement: {placement}",
            f"- Machine load average (1, 5, 15 min) before: {before}; after: {after}",
            f"- ulimit -n: {_nofile()}",
            f"- Scheduler: {_autogroup()}",
            "",
            tables(results, names, modes),
        ]
    )


# --- several workers (issue 13 part 5) -------------------------------------------------

_BOUND = re.compile(r"worker (\d+) bound \(pid (\d+)\)")


def with_workers(executable: str | None, workers: int, directory: Path) -> str:
    """An executable running `executable` (default: this environment's `trelay`) as
    `trelay serve ... --workers N`."""
    if executable is None:
        ours = Path(sys.executable).with_name("trelay")
        executable = str(ours) if ours.exists() else shutil.which("trelay") or "trelay"
    wrapper = directory / f"trelay-workers-{workers}.sh"
    wrapper.write_text(f"#!/bin/sh\nexec '{executable}' \"$@\" --workers {workers}\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def worker_pids(server: Server, workers: int, timeout: float = _LINE_TIMEOUT) -> dict[str, int]:
    """ "supervisor" and "worker I" -> pid, from the supervisor's log lines "worker I bound
    (pid P)" (worker indexes do not follow pid order); one worker: the process itself."""
    if workers == 1:
        return {"worker 0": server.process.pid}
    deadline = time.monotonic() + timeout
    while True:
        bound = dict(_BOUND.findall(server.log.read_text(errors="replace")))
        if len(bound) == workers:
            pids = {f"worker {i}": int(bound[str(i)]) for i in range(workers)}
            return {"supervisor": server.process.pid, **pids}
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: {len(bound)} of {workers} workers bound")
        time.sleep(0.1)


@dataclass
class ProcessCpu:
    """The server's CPU (`run_window`'s `server_cpu`: all its processes) that also keeps
    each process's reading, so a window splits into supervisor and workers."""

    server: Server
    pids: dict[str, int]
    readings: list[dict[str, float]] = field(default_factory=list)

    def __call__(self) -> float:
        if self.server.process.poll() is not None:
            raise RuntimeError(f"{self.server.name} exited; see {self.server.log}")
        reading = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.readings.append(reading)
        return sum(reading.values())

    def last_window(self) -> dict[str, float]:
        """CPU seconds per process between the last two readings (one window)."""
        before, after = self.readings[-2:]
        return {name: after[name] - before[name] for name in after}


def open_steered_flows(
    target: Target, count: int, peer: Address, base: int, workers: int
) -> list[TurnClient]:
    """`open_flows`, with sources picked so that each worker gets its share: the
    supervisor's BPF program hands a source address+port to `worker_for` of it."""
    share = [count // workers + (1 if w < count % workers else 0) for w in range(workers)]
    clients: list[TurnClient] = []
    try:
        for index in range(64 * count):  # bounded: each try lands on a given worker ~1/N
            if len(clients) == count:
                break
            client = target.client(bind=(spread_source(index, base), 0))
            worker = worker_for(client.sock.getsockname(), workers)
            if share[worker] == 0:
                client.close()
                continue
            share[worker] -= 1
            clients.append(client)
            client.allocate()
            client.channel_bind(CHANNEL, peer)
        if len(clients) < count:
            raise RuntimeError(f"could not spread {count} flows over {workers} workers")
    except BaseException:
        close_flows(clients)
        raise
    return clients


@dataclass(frozen=True, slots=True)
class WorkersWindow:
    window: LoadWindow
    cpu: dict[str, float]  # CPU seconds per process in the window

    @property
    def worker_cpu(self) -> float:
        return sum(v for k, v in self.cpu.items() if k.startswith("worker"))

    def per_worker_cpu(self) -> float:
        """Relayed datagrams per CPU-second of the workers (the supervisor left out)."""
        return self.window.relayed / self.worker_cpu if self.worker_cpu > 0 else 0.0


def measure_workers(
    binary: Path, servers: list[tuple[Server, int]], settings: Settings, modes: list[Mode]
) -> tuple[dict[tuple[int, Mode], list[WorkersWindow]], dict[int, dict[str, int]]]:
    """Each mode's windows for each (server, workers) in alternating rounds; and each
    server's RSS per process (KiB) after its start, before any flow."""
    meters = {n: ProcessCpu(s, worker_pids(s, n)) for s, n in servers}
    rss = {n: {name: rss_kib(pid) for name, pid in meters[n].pids.items()} for _, n in servers}
    found: dict[tuple[int, Mode], list[WorkersWindow]] = {}
    with echo_peers(binary, seconds=3600.0) as peers:
        for mode in modes:
            peer = peers(mode)
            flows = {
                n: open_steered_flows(s.target, mode.flows, peer.address, 40 + n, n)
                for s, n in servers
            }
            try:
                for round_ in range(settings.rounds):
                    for _, n in servers if round_ % 2 == 0 else servers[::-1]:
                        window = run_window(
                            binary, flows[n], mode, peer, meters[n],
                            warmup=settings.warmup, duration=settings.duration,
                        )  # fmt: skip
                        seen = WorkersWindow(window, meters[n].last_window())
                        found.setdefault((n, mode), []).append(seen)
                        split = ", ".join(
                            f"{k} {v / window.seconds:.2f}" for k, v in seen.cpu.items()
                        )
                        print(
                            f"  {n} worker(s) {mode.label:30} round {round_ + 1}: "
                            f"{seen.per_worker_cpu():,.0f} relayed/worker CPU-s; {split}; "
                            f"{_line(window)}"
                        )
            finally:
                for clients in flows.values():
                    close_flows(clients)
    return found, rss


def workers_table(
    found: dict[tuple[int, Mode], list[WorkersWindow]], rss: dict[int, dict[str, int]]
) -> str:
    """Per mode and worker count, the median window (by relayed per worker CPU-s)."""
    lines = [
        "| mode | workers | relayed per worker CPU-s (all rounds) | µs worker CPU per datagram "
        "| CPU per process (cores) | relayed/s | load generator CPU | echo peer CPU |",
        "|---|--:|--:|--:|---|--:|--:|--:|",
    ]
    for (n, mode), runs in found.items():
        best = sorted(runs, key=WorkersWindow.per_worker_cpu)[len(runs) // 2]
        w = best.window
        spread = ", ".join(f"{r.per_worker_cpu() / 1000:.0f}k" for r in runs)
        split = ", ".join(f"{k} {v / w.seconds:.2f}" for k, v in best.cpu.items())
        micros = 1e6 / best.per_worker_cpu() if best.per_worker_cpu() else 0.0
        lines.append(
            f"| {mode.label} | {n} | {best.per_worker_cpu():,.0f} ({spread}) | {micros:.2f} "
            f"| {split} | {w.relayed / w.seconds:,.0f} | {w.client_cpu / w.seconds:.2f} "
            f"| {w.peer_cpu / w.seconds:.2f} |"
        )
    lines += ["", "| workers | RSS per process after start (MiB) |", "|--:|---|"]
    for n, per in rss.items():
        cells = ", ".join(f"{k} {v / 1024:.1f}" for k, v in per.items())
        lines.append(f"| {n} | {cells} |")
    return "\n".join(lines)


def run_workers(workers: int, commit: str | None, settings: Settings, modes: list[Mode]) -> None:
    """`--workers N`: trelay (`commit`'s tree, None: the checkout) with 1 and with N
    workers, no coturn, unpinned (a worker per core is the point, so the load shares the
    CPUs with them); printed, not written to the README."""
    with tempfile.TemporaryDirectory(prefix="relay-workers-") as workdir:
        binary = compile_loadgen(Path(workdir))
        executable, measured = None, worktree_state()
        if commit is not None:
            executable, full = trelay_at(commit, Path(workdir))
            measured = f"commit {full[:12]}"
        print(f"trelay: {measured}; {workers} workers beside 1, unpinned")
        servers: list[tuple[Server, int]] = []
        try:
            servers.append((start_trelay(Path(workdir), executable, "trelay-1"), 1))
            many = with_workers(executable, workers, Path(workdir))
            servers.append((start_trelay(Path(workdir), many, f"trelay-{workers}"), workers))
            with logs_on_failure([s for s, _ in servers]):
                found, rss = measure_workers(binary, servers, settings, modes)
        finally:
            for server, _ in servers:
                server.process.kill()  # the workers end with their supervisor's channel
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.process.wait(5)
    print()
    print(workers_table(found, rss))


def raise_nofile(wanted: int = NOFILE) -> None:
    """Let the servers (which inherit it) hold `wanted` sockets: 10,000 allocations are
    10,000 relay sockets, and coturn sizes its session table from this limit (it logs
    "max supported number of TURN Sessions"). The hard limit rises only for root."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _autogroup() -> str:
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return "unknown"
    if enabled:
        return (
            "autogroup on (each session's processes share the CPUs as one group, so a "
            "busy machine gives this run a share, whatever its nice value)"
        )
    return "autogroup off"


def _nofile() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"{soft} (hard {hard})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~2 minute version")
    parser.add_argument("--rounds", type=int, default=3, help="windows per server and mode")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--no-write", action="store_true", help="print only, keep README.md")
    parser.add_argument("--no-pin", action="store_true", help="let servers and load share all CPUs")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--commit", default="HEAD", help="the trelay commit to measure (HEAD)")
    which.add_argument("--worktree", action="store_true", help="measure the checkout as it is")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="another trelay commit, measured in the same alternating rounds (before/after)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated parts to run: mode names (saturated, light, audio, ping-pong, "
        "burst, burst-gro), allocations, memory; default all",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="instead of coturn: trelay with 1 and with N workers in alternating rounds, "
        "CPU per process and relayed per worker CPU-s (printed only; a build's modes only)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        settings = Settings(0.5, 1.5, 1, 200, 1.5, 2, 1000)
    else:
        settings = Settings(1.0, args.duration, args.rounds, 1000, 5.0, 2, 10_000)
    only = None if args.only is None else set(args.only.split(","))
    unknown = (only or set()) - {m.name for m in MODES} - set(PHASES)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    modes: list[Mode] = []
    for mode in MODES:
        if only is not None and mode.name not in only:
            continue
        flows = min(mode.flows, settings.audio_flows) if mode.rate else mode.flows
        sized = dataclasses.replace(mode, flows=flows)
        if sized not in modes:
            modes.append(sized)
    raise_nofile()
    if args.workers is not None:
        if args.workers < 2:
            parser.error("--workers: N must be 2 or more (it is compared with 1)")
        if args.baseline is not None:
            parser.error("--workers measures one build: leave out --baseline")
        run_workers(args.workers, None if args.worktree else args.commit, settings, modes)
        return
    cpus = None if args.no_pin else split_cpus()
    began = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="relay-vs-coturn-") as workdir:
        binary = compile_loadgen(Path(workdir))
        if args.worktree:
            executable, measured = None, worktree_state()
        else:
            executable, full = trelay_at(args.commit, Path(workdir))
            measured = f"commit {full[:12]} (`git archive`, run with this environment's Python)"
        baseline = None
        if args.baseline is not None:
            baseline, before = trelay_at(args.baseline, Path(workdir))
            measured += f"; `{BASELINE}`: commit {before[:12]}, the same way"
        print(f"trelay: {measured}")
        allocations = only is None or "allocations" in only
        with (
            running_servers(cpus, baseline, executable, quiet=allocations) as servers,
            logs_on_failure(servers),
        ):
            names = [server.name for server in servers if server.name != QUIET]
            results = measure(binary, servers, settings, modes, allocations)
        if only is None or "memory" in only:
            with running_servers(cpus, baseline, executable) as servers, logs_on_failure(servers):
                measure_memory(servers, settings, results)
    minutes = (time.monotonic() - began) / 60
    load = (load_before, os.getloadavg())
    print()
    print(tables(results, names, modes))
    if not args.no_write:
        command = " ".join(["python -m benchmarks.relay_vs_coturn", *sys.argv[1:]]).strip()
        body = report(results, names, modes, command, settings, cpus, measured, load, minutes)
        write_marked_section(README, START, END, body, HEADING)
        print(f"\nwritten to {README}")


if __name__ == "__main__":
    main()
