"""Fairness under a flood: other calls' round trips while a peer floods one relayed address.

Owns the measurement of issue 15, Deliver 7. A real `trelay serve` (`benchmarks.soak.
running_server`); a victim client allocates and permits the flooding peer's address, so
the node must relay every flooded datagram to the victim (the costly case: unpermitted
datagrams are dropped cheaply); `--calls` other clients each bind a channel to an echo
peer and ping-pong ChannelData (one in flight per call, in turn). The round trips
(client -> relay -> peer -> relay -> client) are measured first without the flood, then
while one flooder process sends to the victim's relayed address at `--rate` datagrams/s
(paced in batches of 500; the achieved rate is reported, it is what one Python process
managed), and `trelay_dropped_datagrams_total` is read before and after, by reason.

Every receive has a timeout (a ping without an answer in 1 s counts as lost); the
flooder stops on an event and a hard deadline and is terminated in a `finally`.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from benchmarks.relay_bench import percentile
from benchmarks.report import README, machine_lines, write_marked_section
from benchmarks.soak import PASSWORD, USER, Server, running_server
from benchmarks.turn_client import Address, TurnClient

CHANNEL = 0x4000
START, END = "<!-- flood:start -->", "<!-- flood:end -->"
HEADING = "## Reliability: fairness under a flood"
_CTX = mp.get_context("fork")
_BATCH = 500


def _flooder(
    target: Address, rate: float, seconds: float, sent: Synchronized[int], stop: Any
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    payload = b"f" * 100
    start = time.monotonic()
    count = 0
    while not stop.is_set() and time.monotonic() - start < seconds:
        for _ in range(_BATCH):
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                sock.sendto(payload, target)
                count += 1
        ahead = count / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        sent.value = count


@dataclass
class Pings:
    rtts: list[float]
    lost: int

    def line(self, name: str) -> str:
        p50 = percentile(self.rtts, 0.5) * 1e6 if self.rtts else float("nan")
        p99 = percentile(self.rtts, 0.99) * 1e6 if self.rtts else float("nan")
        return f"| {name} | {p50:,.0f} µs | {p99:,.0f} µs | {len(self.rtts):,} | {self.lost} |"


def ping_pong(calls: list[TurnClient], echo: socket.socket, count: int) -> Pings:
    rtts: list[float] = []
    lost = 0
    frames = [call.channel_data(CHANNEL, b"p" * 100) for call in calls]
    for index in range(count):
        which = index % len(calls)
        call = calls[which]
        start = time.perf_counter()
        call.sock.send(frames[which])
        try:
            data, source = echo.recvfrom(2048)
            echo.sendto(data, source)
            for _ in range(100):  # skip anything that is not our echo (bounded)
                answer = call.sock.recv(2048)
                if answer[:2] == frames[which][:2]:
                    break
            rtts.append(time.perf_counter() - start)
        except TimeoutError:
            lost += 1
    return Pings(rtts, lost)


def drops(server: Server) -> dict[str, float]:
    return server.metrics("trelay_dropped_datagrams_total")


def measure(server: Server, n_calls: int, pings: int, rate: float) -> str:
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(1.0)
    victim = TurnClient(server.udp, USER, PASSWORD, bind=("127.0.0.3", 0))
    calls = [
        TurnClient(server.udp, USER, PASSWORD, bind=(f"127.0.4.{i + 1}", 0), timeout=1.0)
        for i in range(n_calls)
    ]
    try:
        relayed = victim.allocate(lifetime=600)
        victim.create_permission(("127.0.0.2", 9))  # the flooder's IP (port ignored)
        for call in calls:
            call.allocate(lifetime=600)
            call.channel_bind(CHANNEL, echo.getsockname())
        ping_pong(calls, echo, 200)  # warm-up
        quiet = ping_pong(calls, echo, pings)
        before = drops(server)
        cpu0 = server.cpu()
        sent: Synchronized[int] = _CTX.Value("q", 0)
        stop = _CTX.Event()
        flooder = _CTX.Process(target=_flooder, args=(relayed, rate, 120.0, sent, stop))
        flooder.start()
        try:
            time.sleep(1.0)  # let the flood reach its rate before measuring
            t0, sent0 = time.monotonic(), sent.value
            flooded = ping_pong(calls, echo, pings)
            seconds, flood_sent = time.monotonic() - t0, sent.value - sent0
            server_cpu = (server.cpu() - cpu0) / (seconds + 1.0)
        finally:
            stop.set()
            flooder.join(5)
            if flooder.is_alive():
                flooder.terminate()
                flooder.join(5)
        after = drops(server)
    finally:
        echo.close()
        victim.close()
        for call in calls:
            call.close()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    dropped = ", ".join(f"`{n}` {v:,.0f}" for n, v in sorted(delta.items()) if v) or "none"
    return "\n".join(
        [
            f"| flood | {flood_sent / seconds:,.0f} datagrams/s offered to one relayed "
            f"address (100 B, permitted: relayed to the victim) for {seconds:.1f} s |",
            f"| server CPU during the flood | {server_cpu:.0%} of a core |",
            f"| node drops during the flood (by reason) | {dropped} |",
            "",
            "| other calls | round trip p50 | p99 | pings | lost |",
            "|---|--:|--:|--:|--:|",
            quiet.line("without the flood"),
            flooded.line("during the flood"),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100_000.0, help="flood datagrams/s")
    parser.add_argument("--calls", type=int, default=4, help="other calls ping-ponging")
    parser.add_argument("--pings", type=int, default=5000, help="round trips per phase")
    parser.add_argument("--write", action="store_true", help="write the report to README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir, running_server(Path(workdir)) as server:
        table = measure(server, args.calls, args.pings, args.rate)
    command = " ".join(["python -m benchmarks.flood", *(argv or sys.argv[1:])]).strip()
    text = "\n".join(
        [
            f"Command: `{command}` ({args.calls} calls ping-ponging 100-byte ChannelData "
            f"through an echo peer, one in flight; {args.pings} round trips per phase; "
            "server, flooder and pinger unpinned on the same machine).",
            "",
            *machine_lines(),
            "",
            "| | |",
            "|---|---|",
            table,
        ]
    )
    print(text)
    if args.write:
        write_marked_section(README, START, END, text, HEADING)
        print(f"\nwritten to {README}")


if __name__ == "__main__":
    main()
