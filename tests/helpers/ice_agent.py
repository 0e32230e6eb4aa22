"""An aioice agent in its own process (for a network namespace), driven over JSON lines.

Run as `python -m tests.helpers.ice_agent call ...` (in a namespace: `ip netns exec c1
...`); the test is the signalling channel. The agent writes one JSON object per line on
stdout, each with an "event", and reads one per line on stdin:

    out {"event": "gathered", "candidates": [SDP a= values], "username", "password"}
    in  {"candidates": [...], "username": ..., "password": ...}      the other agent's
    out {"event": "connected", "pair": {local_type, local_address, remote_type,
         remote_address}, "seconds"}  or  {"event": "failed", "error", "seconds"}
    in  {"op": "send", "data": TEXT}   out {"event": "sent"}
    in  {"op": "receive"}              out {"event": "received", "data": TEXT}
    in  {"op": "close"} or end of input: the agent closes and exits 0

An unexpected exception is one last line {"event": "error", "error": ...} (exit 1).
Every wait is bounded: gathering by aioice (5 s), `connect` by --connect-timeout, a
receive by --receive-timeout. aioice's STUN transactions retransmit `--retransmissions`
times (RFC 8489 §6.2.1 Rc - 1; aioice's default 6 waits 63.5 s before a check fails):
with 3, a connectivity check that gets no answer fails after 7.5 s, so an agent that can
reach nothing reports aioice's own "ICE negotiation failed" well within the test's time.

`python -m tests.helpers.ice_agent mapping HOST:PORT HOST:PORT` sends a STUN Binding
from ONE socket to each server and prints {"event": "mapped", "addresses": [[ip, port],
...]}: what a NAT maps that socket to towards each destination.

`AgentProcess` is the test's side: start one in a namespace, send and read its lines
(each read bounded), and stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import aioice
import aioice.stun

PASSWORD_VARIABLE = "TRELAY_TEST_TURN_PASSWORD"
CONNECT_TIMEOUT = 15.0
RECEIVE_TIMEOUT = 10.0
LINE_TIMEOUT = 20.0


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _read_command() -> dict[str, Any] | None:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        return None
    command = json.loads(line)
    assert isinstance(command, dict), line
    return command


def _agent(options: argparse.Namespace) -> aioice.Connection:
    turn: dict[str, Any] = {}
    if options.turn is not None:
        turn = {
            "turn_server": _address(options.turn),
            "turn_username": options.username,
            "turn_password": os.environ[PASSWORD_VARIABLE],
            "turn_transport": "udp",
        }
    return aioice.Connection(
        ice_controlling=options.controlling,
        components=1,
        stun_server=None if options.stun is None else _address(options.stun),
        transport_policy=aioice.TransportPolicy.ALL,
        use_ipv6=False,
        **turn,
    )


def _selected(connection: aioice.Connection) -> dict[str, object]:
    # aioice 0.13 keeps the nominated pair per component in the private `_nominated`
    # (as trelay.icekit.ice_shim does); the remote address is where checks went.
    pair = connection._nominated[1]
    return {
        "local_type": pair.local_candidate.type,
        "local_address": [pair.local_candidate.host, pair.local_candidate.port],
        "remote_type": pair.remote_candidate.type,
        "remote_address": list(pair.remote_addr),
    }


async def _signal(connection: aioice.Connection) -> bool:
    """Gather, hand over and take the candidates; False if the input ended."""
    await connection.gather_candidates()
    _emit(
        "gathered",
        candidates=[candidate.to_sdp() for candidate in connection.local_candidates],
        username=connection.local_username,
        password=connection.local_password,
    )
    remote = await _read_command()
    if remote is None:
        return False
    for sdp in remote["candidates"]:
        await connection.add_remote_candidate(aioice.Candidate.from_sdp(sdp))
    await connection.add_remote_candidate(None)
    connection.remote_username = remote["username"]
    connection.remote_password = remote["password"]
    return True


async def _serve_commands(connection: aioice.Connection, receive_timeout: float) -> None:
    while (command := await _read_command()) is not None and command["op"] != "close":
        if command["op"] == "send":
            await connection.send(command["data"].encode())
            _emit("sent")
        elif command["op"] == "receive":
            data = await asyncio.wait_for(connection.recv(), receive_timeout)
            _emit("received", data=data.decode())
        else:
            raise ValueError(f"unknown op {command['op']!r}")


async def call(options: argparse.Namespace) -> None:
    aioice.stun.RETRY_MAX = options.retransmissions
    connection = _agent(options)
    try:
        if not await _signal(connection):
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(options.connect_timeout):
                await connection.connect()
        except (ConnectionError, TimeoutError) as exc:
            seconds = round(time.monotonic() - started, 2)
            _emit("failed", error=f"{type(exc).__name__}: {exc}", seconds=seconds)
            return
        seconds = round(time.monotonic() - started, 2)
        _emit("connected", pair=_selected(connection), seconds=seconds)
        await _serve_commands(connection, options.receive_timeout)
    finally:
        await connection.close()


def mapping(servers: list[str], timeout: float = 2.0, attempts: int = 3) -> None:
    """One socket, a Binding to each server: the XOR-MAPPED-ADDRESS each one saw."""
    seen: list[list[object]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.settimeout(timeout)
        for server in map(_address, servers):
            request = aioice.stun.Message(
                message_method=aioice.stun.Method.BINDING,
                message_class=aioice.stun.Class.REQUEST,
            )
            for _ in range(attempts):
                sock.sendto(bytes(request), server)
                try:
                    data, _ = sock.recvfrom(2048)
                except TimeoutError:
                    continue
                response = aioice.stun.parse_message(data)
                if response.transaction_id == request.transaction_id:
                    host, port = response.attributes["XOR-MAPPED-ADDRESS"]
                    seen.append([host, port])
                    break
            else:
                raise TimeoutError(f"no Binding response from {server}")
    _emit("mapped", addresses=seen)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.ice_agent")
    commands = parser.add_subparsers(dest="command", required=True)
    agent = commands.add_parser("call", help="an ICE agent signalled over stdin/stdout")
    agent.add_argument("--controlling", action="store_true")
    agent.add_argument("--stun", metavar="HOST:PORT", help="STUN server (srflx candidates)")
    agent.add_argument("--turn", metavar="HOST:PORT", help="TURN server over UDP (relay)")
    agent.add_argument("--username", help=f"TURN username; the password in ${PASSWORD_VARIABLE}")
    agent.add_argument("--retransmissions", type=int, default=3)
    agent.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT)
    agent.add_argument("--receive-timeout", type=float, default=RECEIVE_TIMEOUT)
    probe = commands.add_parser("mapping", help="the NAT mapping of one socket per server")
    probe.add_argument("servers", nargs="+", metavar="HOST:PORT")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        if options.command == "mapping":
            mapping(options.servers)
        else:
            asyncio.run(call(options))
    except Exception as exc:
        _emit("error", error=f"{type(exc).__name__}: {exc}")
        raise
    return 0


class JsonLines:
    """JSON lines read from a process's stdout, each read bounded by a timeout."""

    def __init__(self, process: subprocess.Popen[bytes], name: str, log_path: Path) -> None:
        assert process.stdout is not None
        self.process, self.name, self.log_path = process, name, log_path
        self._stdout = process.stdout.fileno()
        self._buffer = b""

    def read(self, timeout: float = LINE_TIMEOUT) -> dict[str, Any]:
        """The next line as a dict; AssertionError (with the process's log) if none comes."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self._stdout], [], [], max(left, 0))
            chunk = os.read(self._stdout, 65536) if readable else b""
            if not chunk:
                why = "ended its output" if readable else f"wrote no line within {timeout} s"
                raise AssertionError(f"{self.name} {why}; its log:\n{self.log_tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        assert isinstance(message, dict), line
        return message

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class AgentProcess(JsonLines):
    """The test's handle on an agent process (module docstring): commands in, events out."""

    def __init__(self, process: subprocess.Popen[bytes], name: str, log_path: Path) -> None:
        super().__init__(process, name, log_path)
        assert process.stdin is not None
        self._stdin: IO[bytes] = process.stdin

    def send(self, message: dict[str, object]) -> None:
        self._stdin.write(json.dumps(message).encode() + b"\n")
        self._stdin.flush()

    def expect(self, event: str, timeout: float = LINE_TIMEOUT) -> dict[str, Any]:
        """The next event, which must be `event` (an "error" event fails with its text)."""
        message = self.read(timeout)
        if message["event"] == "error":
            raise AssertionError(f"{self.name}: {message['error']}\n{self.log_tail()}")
        assert message["event"] == event, f"{self.name}: wanted {event}, got {message}"
        return message

    def close(self, timeout: float = 5.0) -> int | None:
        """Ask the agent to close and exit (bounded); its exit status, None if killed."""
        if self.process.poll() is None:
            try:
                self.send({"op": "close"})
                self._stdin.close()
            except BrokenPipeError:
                pass
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
                return None
        return self.process.returncode


if __name__ == "__main__":
    sys.exit(main())
