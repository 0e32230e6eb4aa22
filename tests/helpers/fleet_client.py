"""What a client of a fleet does, from inside a network namespace: HTTP calls and Allocates.

Run as `python -m tests.helpers.fleet_client ...` in a namespace (`ip netns exec c1 ...`,
`NatLab.run`); each command prints one JSON line on stdout and exits 0, so the test reads
what the client saw, through the client's own NAT:

    http METHOD URL [--body JSON] [--form K=V ...]    {"status": 200, "body": {...}}
        Authorization from $TRELAY_TEST_AUTHORIZATION when set ("Bearer ..." or
        "Basic ..."), so no credential appears on a command line.
    allocate --username U HOST:PORT ...               {"results": {"HOST:PORT": "ok" | 401 ...}}
        One UDP Allocate per server (the password in $TRELAY_TEST_TURN_PASSWORD), each
        released at once (Refresh 0) when it succeeds; "timeout" when a server is silent.

Every call is bounded (`TIMEOUT`); a failure to reach the server at all is a JSON line
with "error" (exit 1), so the test shows why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import trio

from tests.helpers.turn_client import TurnError, udp_client

TIMEOUT = 10.0
AUTHORIZATION_VARIABLE = "TRELAY_TEST_AUTHORIZATION"
PASSWORD_VARIABLE = "TRELAY_TEST_TURN_PASSWORD"


def http(method: str, url: str, body: str | None, form: list[str]) -> dict[str, Any]:
    headers = {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = body.encode(), "application/json"
    elif form:
        pairs = [item.partition("=")[::2] for item in form]
        data = urllib.parse.urlencode(pairs).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    authorization = os.environ.get(AUTHORIZATION_VARIABLE)
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        parsed: object = json.loads(text) if text else None
    except json.JSONDecodeError:
        parsed = text
    return {"status": status, "body": parsed}


async def allocate(username: str, servers: list[str]) -> dict[str, Any]:
    password = os.environ[PASSWORD_VARIABLE]
    results: dict[str, object] = {}
    for server in servers:
        host, _, port = server.rpartition(":")
        async with udp_client((host, int(port)), host="0.0.0.0", time_limit=5.0) as client:
            client.username, client.password = username, password
            try:
                await client.allocate()
            except TurnError as exc:
                results[server] = exc.code
            except trio.TooSlowError:
                results[server] = "timeout"
            else:
                results[server] = "ok"
                await client.refresh(0)
    return {"results": results}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.fleet_client")
    commands = parser.add_subparsers(dest="command", required=True)
    call = commands.add_parser("http")
    call.add_argument("method")
    call.add_argument("url")
    call.add_argument("--body", help="a JSON body")
    call.add_argument("--form", action="append", default=[], metavar="KEY=VALUE")
    probe = commands.add_parser("allocate")
    probe.add_argument("--username", required=True)
    probe.add_argument("servers", nargs="+", metavar="HOST:PORT")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        if options.command == "http":
            result = http(options.method, options.url, options.body, options.form)
        else:
            result = trio.run(allocate, options.username, options.servers)
    except (OSError, urllib.error.URLError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
