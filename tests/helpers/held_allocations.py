"""TURN allocations held, or probed, from inside a network namespace (to load a node).

Run as `python -m tests.helpers.held_allocations ...` in a namespace (`NatLab.popen`,
`NatLab.command`); the password comes from $TRELAY_TEST_TURN_PASSWORD, so no credential
is on a command line. Output is JSON lines on stdout:

    hold --count N --username U [--limit S] HOST:PORT
        N UDP allocations, each from its own socket (a node counts allocations, not
        clients), then {"event": "held", "relayed": ["ip:port", ...]}; they are kept
        until a line or the end of stdin (at most --limit seconds, so a forgotten
        holder ends by itself), then each is released (Refresh LIFETIME 0) and
        {"event": "released"}. An Allocate refused: {"event": "refused", "code"} (exit 1).
    probe --username U HOST:PORT
        One UDP Allocate: {"code": 200, "relayed": "ip:port"} (released at once), or the
        error code with the ALTERNATE-SERVER of a 300 ({"code": 300, "alternate":
        "ip:port"}), or {"code": "timeout"}.

Every transaction is bounded (`TIMEOUT`) and the hold by --limit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import AsyncExitStack
from typing import Any

import trio

from tests.helpers.turn_client import TurnError, udp_client
from trelay.stun.address_attributes import AlternateServer, XorRelayedAddress
from trelay.stun.attributes import Lifetime, RequestedTransport
from trelay.stun.codes import Method
from trelay.stun.error_attributes import ErrorCodeAttribute

TIMEOUT = 5.0
PASSWORD_VARIABLE = "TRELAY_TEST_TURN_PASSWORD"
UDP = 17


def _emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _server(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def hold(server: tuple[str, int], username: str, count: int, limit: float) -> int:
    password = os.environ[PASSWORD_VARIABLE]
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            client = await stack.enter_async_context(
                udp_client(server, host="0.0.0.0", time_limit=TIMEOUT)
            )
            client.username, client.password = username, password
            try:
                relayed = await client.allocate()
            except TurnError as exc:
                _emit(event="refused", code=exc.code)
                return 1
            clients.append((client, f"{relayed[0]}:{relayed[1]}"))
        _emit(event="held", relayed=[relayed for _, relayed in clients])
        with trio.move_on_after(limit):
            await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        for client, _ in clients:
            await client.refresh(0)
        _emit(event="released")
    return 0


async def probe(server: tuple[str, int], username: str) -> dict[str, Any]:
    async with udp_client(server, host="0.0.0.0", time_limit=TIMEOUT) as client:
        client.username, client.password = username, os.environ[PASSWORD_VARIABLE]
        try:
            reply = await client.request(Method.ALLOCATE, RequestedTransport(UDP))
        except trio.TooSlowError:
            return {"code": "timeout"}
        error = reply.get(ErrorCodeAttribute)
        if error is None:
            relayed = reply.get(XorRelayedAddress)
            assert relayed is not None, reply
            await client.request(Method.REFRESH, Lifetime(0))
            return {"code": 200, "relayed": f"{relayed.host}:{relayed.port}"}
        alternate = reply.get(AlternateServer)
        found = None if alternate is None else f"{alternate.host}:{alternate.port}"
        return {"code": error.code, "alternate": found}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.held_allocations")
    commands = parser.add_subparsers(dest="command", required=True)
    held = commands.add_parser("hold")
    held.add_argument("--count", type=int, default=1)
    held.add_argument("--username", required=True)
    held.add_argument("--limit", type=float, default=120.0, help="seconds at most")
    held.add_argument("server", metavar="HOST:PORT")
    probed = commands.add_parser("probe")
    probed.add_argument("--username", required=True)
    probed.add_argument("server", metavar="HOST:PORT")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    server = _server(options.server)
    if options.command == "hold":
        return trio.run(hold, server, options.username, options.count, options.limit)
    _emit(**trio.run(probe, server, options.username))
    return 0


if __name__ == "__main__":
    sys.exit(main())
