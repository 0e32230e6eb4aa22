"""Relay throughput, latency and allocation rate: trelay and coturn side by side.

Run as `python -m benchmarks.relay_bench [--duration S] [--senders N] [--quick]`; never
run by the tests. It starts both servers as subprocesses on loopback (trelay with
`trelay serve`, coturn's `turnserver` with one relay thread), then, alternating between
them in the same run, measures with `benchmarks.load_generator`:

- ChannelData relayed per second of the server's own CPU time (summed over all of its
  threads from /proc/<pid>/task/*/schedstat), at saturation, for 100 B and 1200 B
  payloads; also the server's CPU use (1.00 = one core busy) and datagrams per second;
- ping-pong round trips through each (p50, p99 in microseconds);
- Allocate (401, then signed) + Refresh(0) per second, and per server CPU-second.

It prints the tables and the trelay/coturn ratios and rewrites the marked part of the
"Relay throughput vs coturn" section of benchmarks/README.md (`--no-write` keeps it).
Both servers are killed in a `finally`, whatever happens. `--baseline PATH` adds a third
server, another trelay build's `trelay` executable (say, the last release installed in
its own venv), measured in the same alternating rounds: before/after figures from one run.
`--bandwidth-limited` adds this build once more, with every `[bandwidth]` limit (per
allocation, per identity, node total) set far above the load, so each relayed datagram
spends from three buckets and none is dropped: the token buckets' cost is the
`trelay/limited` ratio of relayed per CPU-s (issue 14 part 7).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchmarks.load_generator import (
    AllocationWindow,
    Target,
    Window,
    allocation_rate,
    ping_pong,
    saturate,
)
from benchmarks.report import README, machine_lines, write_marked_section
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, new_transaction_id

START = "<!-- relay-bench:start -->"
END = "<!-- relay-bench:end -->"
HEADING = "## Relay throughput vs coturn"
PAYLOADS = (100, 1200)
USER, PASSWORD, REALM = "u", "p", "bench"
BASELINE = "baseline"  # the name of a second trelay build measured in the same run
LIMITED = "limited"  # this build with bandwidth limits far above the load
QUIET = "trelay-quiet"  # this build at log level warning: no line per allocation, as coturn
# 1 TB/s, bursts as big: every level spends, nothing is ever refused.
LIMITS = "\n".join(
    f"{level} = 1e12\n{level}_burst = 1e12"
    for level in ("per_allocation", "per_identity", "node_total")
)


# --- the servers under test ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of `pid`, from schedstat (ns), else stat (ticks)."""
    total_ns = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total_ns += int(stat.read().split()[0])
        return total_ns / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as stat:
        # Fields 14 and 15 (utime, stime) follow the parenthesised command name.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    address: tuple[str, int]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        return Target(self.address, USER, PASSWORD)

    def cpu(self) -> float:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}); see {self.log}")
        return cpu_seconds(self.process.pid)

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    def pin(self, cpus: set[int]) -> None:
        """Restrict every thread of the server (and those it starts later) to `cpus`."""
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(int(task), cpus)


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(server CPUs, load CPUs): the first CPU we may use for the server, the rest for
    the load generator; None on a single CPU, where both must share it."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None
    return {available[0]}, set(available[1:])


def read_line(stream: IO[bytes], timeout: float) -> bytes:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"no ready line within {timeout} s")
    return stream.readline()


def start_trelay(
    workdir: Path,
    executable: str | None = None,
    name: str = "trelay",
    limited: bool = False,
    log_level: str | None = None,
) -> Server:
    """`trelay serve` from this environment, or `executable` (another build, to compare);
    `limited`: with the `[bandwidth]` limits of `LIMITS`; `log_level`: its `--log-level`."""
    if executable is None:
        ours = Path(sys.executable).with_name("trelay")
        executable = str(ours) if ours.exists() else shutil.which("trelay") or "trelay"
    command = [
        executable,
        "serve",
        "--listen-udp", "127.0.0.1:0",
        "--user", f"{USER}:{PASSWORD}",
        "--realm", REALM,
        "--allow-loopback-peers",
        "--relay-address", "127.0.0.1",
    ]  # fmt: skip
    if log_level is not None:
        command += ["--log-level", log_level]
    if limited:
        config = workdir / f"{name}.toml"
        config.write_text(f"[bandwidth]\n{LIMITS}\n")
        command += ["--config", str(config)]
    log = workdir / f"{name}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert process.stdout is not None
        ready = json.loads(read_line(process.stdout, 15.0))
        host, port = ready["udp"][0].rsplit(":", 1)
    except BaseException:
        process.kill()
        process.wait(5)
        raise
    return Server(name, process, (host, int(port)), log)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def coturn_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["turnserver", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        return (done.stdout or done.stderr).strip().splitlines()[-1]
    return "unknown"


# coturn's relay ports: below the kernel's ephemeral range (32768-60999 here), and room
# for relay_vs_coturn's 10,000 held allocations.
COTURN_PORTS = (20000, 31999)


def start_coturn(workdir: Path) -> Server:
    port = free_udp_port()
    log = workdir / "turnserver.log"
    command = [
        "turnserver",
        "-n",  # no configuration file: the command line only
        "--listening-ip", "127.0.0.1",
        "--relay-ip", "127.0.0.1",
        "--listening-port", str(port),
        "--relay-threads", "1",
        "--lt-cred-mech",
        "--user", f"{USER}:{PASSWORD}",
        "--realm", REALM,
        "--allow-loopback-peers",
        "--no-tcp", "--no-tls", "--no-dtls", "--no-tcp-relay",
        "--no-cli",
        "--min-port", str(COTURN_PORTS[0]), "--max-port", str(COTURN_PORTS[1]),
        "--log-file", str(log), "--simple-log", "--no-stdout-log",
        "--pidfile", str(workdir / "turnserver.pid"),
        "--userdb", str(workdir / "turndb"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server("coturn", process, ("127.0.0.1", port), log)
    try:
        _await_binding(server.address, 15.0)
    except BaseException:
        process.kill()
        process.wait(5)
        raise
    return server


def _await_binding(address: tuple[str, int], timeout: float) -> None:
    """Poll with Binding requests until the server answers (it has bound its port)."""
    request = Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
    data = encode_signed(request)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                sock.sendto(data, address)
                if sock.recv(2048)[8:20] == request.transaction_id:
                    return
            time.sleep(0.05)
    raise RuntimeError(f"no Binding response from {address} within {timeout} s")


@contextlib.contextmanager
def running_servers(
    cpus: tuple[set[int], set[int]] | None,
    baseline: str | None = None,
    trelay: str | None = None,
    limited: bool = False,
    quiet: bool = False,
) -> Iterator[list[Server]]:
    """Both servers (and a `baseline` trelay build, if given; `trelay` is the executable of
    the build under test, default this environment's; `quiet`: that build once more, at
    log level warning, named `QUIET`); with `cpus`, pinned to the server CPU and this
    process to the rest (the load generator's processes are started from it and inherit
    that)."""
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir:
        try:
            servers.append(start_trelay(Path(workdir), trelay))
            servers.append(start_coturn(Path(workdir)))
            if baseline is not None:
                servers.append(start_trelay(Path(workdir), baseline, BASELINE))
            if limited:
                servers.append(start_trelay(Path(workdir), trelay, LIMITED, limited=True))
            if quiet:
                servers.append(start_trelay(Path(workdir), trelay, QUIET, log_level="warning"))
            if cpus is not None:
                for server in servers:
                    server.pin(cpus[0])
                os.sched_setaffinity(0, cpus[1])
            yield servers
        finally:
            for server in servers:
                server.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.process.wait(5)


# --- measurements ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float
    warmup: float
    senders: int
    rounds: int
    pings: int
    alloc_seconds: float
    alloc_workers: int


@dataclass
class Results:
    throughput: dict[tuple[str, int], list[Window]] = field(default_factory=dict)
    latency: dict[str, tuple[list[float], int]] = field(default_factory=dict)
    allocations: dict[str, AllocationWindow] = field(default_factory=dict)
    threads: dict[str, int] = field(default_factory=dict)


def measure(servers: list[Server], settings: Settings) -> Results:
    results = Results()
    for payload in PAYLOADS:
        for round_ in range(settings.rounds):
            # Alternate who goes first, so drift on a shared machine hits both alike.
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                window = saturate(
                    server.target,
                    senders=settings.senders,
                    payload_size=payload,
                    warmup=settings.warmup,
                    duration=settings.duration,
                    server_cpu=server.cpu,
                )
                results.throughput.setdefault((server.name, payload), []).append(window)
                results.threads[server.name] = server.threads()
                print(f"  {server.name:7} {payload:5} B round {round_ + 1}: {_line(window)}")
    for server in servers:
        results.latency[server.name] = ping_pong(server.target, rounds=settings.pings)
    for server in servers:
        results.allocations[server.name] = allocation_rate(
            server.target,
            workers=settings.alloc_workers,
            duration=settings.alloc_seconds,
            server_cpu=server.cpu,
        )
    return results


def _line(window: Window) -> str:
    seconds = window.seconds
    return (
        f"{per_cpu(window):,.0f} relayed/CPU-s, CPU {window.server_cpu / seconds:.2f}, "
        f"{window.relayed / seconds:,.0f}/s relayed of {window.offered / seconds:,.0f}/s"
    )


def per_cpu(window: Window) -> float:
    return window.relayed / window.server_cpu if window.server_cpu > 0 else 0.0


def median_window(windows: list[Window]) -> Window:
    """The window with the median relayed/CPU-s (the upper one of an even count)."""
    return sorted(windows, key=per_cpu)[len(windows) // 2]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the report ------------------------------------------------------------------------


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "n/a"


def tables(results: Results, names: list[str]) -> str:
    """The tables, then trelay's ratios to coturn (and to the baseline build, if run)."""
    trelay, coturn, *others = names
    against = [coturn, *others]
    lines = [
        "| server | payload | relayed per server CPU-s | server CPU | relayed/s | offered/s |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    ratios: list[str] = []
    for payload in PAYLOADS:
        best = {n: median_window(results.throughput[(n, payload)]) for n in names}
        for name in names:
            w = best[name]
            lines.append(
                f"| {name} | {payload} B | {per_cpu(w):,.0f} | {w.server_cpu / w.seconds:.2f} "
                f"| {w.relayed / w.seconds:,.0f} | {w.offered / w.seconds:,.0f} |"
            )
        ratio = " | ".join(_ratio(per_cpu(best[trelay]), per_cpu(best[n])) for n in against)
        ratios.append(f"| relayed per CPU-s, {payload} B | {ratio} |")
    lines += ["", "| server | ping-pong p50 | p99 | lost |", "|---|--:|--:|--:|"]
    for name in names:
        times, lost = results.latency[name]
        p50, p99 = percentile(times, 0.50), percentile(times, 0.99)
        lines.append(f"| {name} | {p50:.0f} µs | {p99:.0f} µs | {lost} |")
    p50s = {n: percentile(results.latency[n][0], 0.5) for n in names}
    ratio = " | ".join(_ratio(p50s[trelay], p50s[n]) for n in against)
    ratios.append(f"| ping-pong p50 (lower is better) | {ratio} |")
    lines += [
        "",
        "| server | allocations/s | per server CPU-s | server CPU | failed |",
        "|---|--:|--:|--:|--:|",
    ]
    rates: dict[str, float] = {}
    for name in names:
        a = results.allocations[name]
        rates[name] = a.allocations / a.server_cpu if a.server_cpu > 0 else 0.0
        lines.append(
            f"| {name} | {a.allocations / a.seconds:,.0f} | {rates[name]:,.0f} "
            f"| {a.server_cpu / a.seconds:.2f} | {a.failures} |"
        )
    ratio = " | ".join(_ratio(rates[trelay], rates[n]) for n in against)
    ratios.append(f"| allocations per CPU-s | {ratio} |")
    heading = " | ".join(f"{trelay}/{n}" for n in against)
    lines += ["", f"| ratio | {heading} |", "|---|" + "--:|" * len(against), *ratios]
    return "\n".join(lines)


def report(
    results: Results,
    names: list[str],
    command: str,
    settings: Settings,
    cpus: tuple[set[int], set[int]] | None,
) -> str:
    threads = ", ".join(f"{n} {results.threads.get(n, 0)}" for n in names)
    placement = (
        "servers and load share all CPUs"
        if cpus is None
        else f"each server pinned to CPU {sorted(cpus[0])}, load generator to {sorted(cpus[1])}"
    )
    return "\n".join(
        [
            f"Command: `{command}` ({settings.senders} senders, {settings.warmup:g} s warm-up, "
            f"{settings.duration:g} s windows, median of {settings.rounds} alternating rounds; "
            f"{settings.pings} ping-pongs; {settings.alloc_workers} allocating processes for "
            f"{settings.alloc_seconds:g} s).",
            "",
            *machine_lines(),
            f"- coturn: {coturn_version()} (`turnserver`, Debian package); threads: {threads}",
            f"- Placement: {placement}",
            "",
            tables(results, names),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--senders", type=int, default=3, help="sender processes")
    parser.add_argument("--rounds", type=int, default=3, help="windows per server and size")
    parser.add_argument("--quick", action="store_true", help="a ~20 s version")
    parser.add_argument("--no-write", action="store_true", help="print only, keep README.md")
    parser.add_argument("--no-pin", action="store_true", help="let servers and load share all CPUs")
    parser.add_argument(
        "--baseline",
        metavar="TRELAY",
        help="the `trelay` executable of another build, measured in the same run (before/after)",
    )
    parser.add_argument(
        "--bandwidth-limited",
        action="store_true",
        help="this build once more with every bandwidth limit far above the load (its cost)",
    )
    args = parser.parse_args(argv)
    cpus = None if args.no_pin else split_cpus()
    if args.quick:
        settings = Settings(1.5, 0.5, args.senders, 1, 1000, 1.5, 2)
    else:
        settings = Settings(args.duration, 1.0, args.senders, args.rounds, 5000, 5.0, 2)
    with running_servers(cpus, args.baseline, limited=args.bandwidth_limited) as servers:
        names = [server.name for server in servers]
        results = measure(servers, settings)
    print()
    print(tables(results, names))
    if not args.no_write:
        command = " ".join(["python -m benchmarks.relay_bench", *sys.argv[1:]]).strip()
        write_marked_section(
            README, START, END, report(results, names, command, settings, cpus), HEADING
        )
        print(f"\nwritten to {README}")


if __name__ == "__main__":
    main()
