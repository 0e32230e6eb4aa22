"""`trelay sessions` and `trelay reload`: a running relay's admin, through its operator port.

Owns the subcommands (argparse) that `trelay.process.cli` wires in, clients of the admin
routes of `trelay.ops.admin_routes` written with the standard library only (urllib):

    trelay sessions --http HOST:PORT --token-file FILE [--identity ID] [--json]
    trelay sessions --http HOST:PORT --token-file FILE --end (--identity ID | --relayed ADDR)
    trelay reload --http HOST:PORT --token-file FILE [--json]

`trelay reload` asks for the SIGHUP reload and prints what was applied and what waits for
a restart (or, status 1, why the settings file was refused).

Without `--end` it prints one line per live allocation (a table, or the routes' JSON
with `--json`); with `--end` it ends the identity's allocations or the one relaying on
ADDR and prints how many ended. Workers that did not answer are named on stderr.

Exit status: 0 done; 1 the relay refused or could not be reached (one line: "trelay:
sessions: <why>", with the route's reason for a 401); 2 a bad flag or token file (one
line naming it, as for `trelay serve`). The token is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from trelay.config.admin_token import read_admin_token
from trelay.config.values import SettingsError, format_host_port, parse_host_port
from trelay.process.exit_codes import PROG, ExitStatus

TIMEOUT = 10.0
Parser = TypeVar("Parser", bound=argparse.ArgumentParser)
COLUMNS = (
    ("WORKER", "worker"), ("TRANSPORT", "transport"), ("CLIENT", "client"),
    ("RELAYED", "relayed"), ("IDENTITY", "identity"), ("AGE", "age_seconds"),
    ("LEFT", "lifetime_left_seconds"), ("PERMS", "permissions"), ("CHANS", "channels"),
    ("TO_PEER", "client_to_peer_bytes"), ("TO_CLIENT", "peer_to_client_bytes"),
)  # fmt: skip


class CommandFailed(Exception):
    """The relay refused or could not be reached: exit status 1."""


def add_sessions_command(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Add `sessions` to the `command` subparsers of `trelay`."""
    sessions = subparsers.add_parser(
        "sessions",
        help="list or end a running relay's sessions (its operator port's admin routes)",
        description="List the live allocations of a running relay, or end an identity's "
        "(or one relayed address's), through its operator HTTP port and admin token.",
    )
    _add_admin_arguments(sessions)
    sessions.add_argument("--identity", metavar="ID", help="only this identity's sessions")
    sessions.add_argument(
        "--relayed", metavar="HOST:PORT", help="with --end: the session relaying there"
    )
    sessions.add_argument(
        "--end", action="store_true", help="end the sessions of --identity (or --relayed)"
    )


def _add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    """What every admin command takes: the operator port, the token, JSON output."""
    parser.add_argument(
        "--http", required=True, metavar="HOST:PORT", help="the relay's operator HTTP port"
    )
    parser.add_argument(
        "--token-file", required=True, type=Path, metavar="FILE", help="the admin token"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON the relay sent")


def _ask(
    name: str, build: Callable[[], urllib.request.Request], stderr: TextIO
) -> dict[str, Any] | int:
    """The relay's JSON answer to the request `build` makes, or the exit status of a
    one-line error (2: a bad flag or token file; 1: refused or unreachable)."""
    try:
        return _send(build())
    except SettingsError as exc:
        stderr.write(f"{PROG}: {exc}\n")
        return ExitStatus.BAD_SETTINGS
    except CommandFailed as exc:
        stderr.write(f"{PROG}: {name}: {exc}\n")
        return ExitStatus.FAILED


def run_sessions_command(
    arguments: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run `trelay sessions`; the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    answer = _ask("sessions", lambda: _request(arguments), stderr)
    if isinstance(answer, int):
        return answer
    unanswered = answer.get("unanswered_workers") or []
    if unanswered:
        workers = ", ".join(str(w) for w in unanswered)
        stderr.write(f"{PROG}: sessions: no answer from worker {workers}; not included\n")
    if arguments.json:
        stdout.write(json.dumps(answer, indent=2) + "\n")
    elif arguments.end:
        count = answer.get("ended", 0)
        stdout.write(f"ended {count} session{'' if count == 1 else 's'}\n")
    else:
        stdout.write(table(answer.get("sessions", [])))
    return ExitStatus.OK


def table(sessions: list[dict[str, Any]]) -> str:
    """The sessions as aligned columns (WORKER only when the relay has workers)."""
    columns = [c for c in COLUMNS if c[1] != "worker" or any("worker" in s for s in sessions)]
    rows = [[title for title, _ in columns]]
    rows += [[_cell(session.get(field)) for _, field in columns] for session in sessions]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.0f}s"
    return "-" if value is None else str(value)


def _request(arguments: argparse.Namespace) -> urllib.request.Request:
    """The sessions route `arguments` ask for: list, or end an identity's or one."""
    path, method = "/v1/sessions", "GET"
    query = {} if arguments.identity is None else {"identity": arguments.identity}
    if arguments.end:
        method = "DELETE"
        if (arguments.identity is None) == (arguments.relayed is None):
            raise SettingsError("--end", "give --identity or --relayed (one of them)")
        if arguments.relayed is not None:
            relayed = parse_host_port("--relayed", arguments.relayed)
            quoted = urllib.parse.quote(format_host_port(relayed.host, relayed.port), safe=":")
            path, query = f"{path}/{quoted}", {}
    elif arguments.relayed is not None:
        raise SettingsError("--relayed", "only with --end")
    return _admin_request(arguments, path, method, query)


def _admin_request(
    arguments: argparse.Namespace, path: str, method: str, query: dict[str, str] | None = None
) -> urllib.request.Request:
    """`method path?query` on the relay's operator port, with its admin token."""
    address = parse_host_port("--http", arguments.http)
    token = read_admin_token("--token-file", arguments.token_file)
    url = f"http://{format_host_port(address.host, address.port)}{path}"
    if query:
        url = f"{url}?{urllib.parse.urlencode(query)}"
    headers = {"Authorization": f"Bearer {token}"}
    return urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - http:// built here


def _send(request: urllib.request.Request) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise CommandFailed(_refusal(exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandFailed(f"cannot reach {request.full_url}: {reason}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise CommandFailed(f"{request.full_url} answered no JSON") from None
    if not isinstance(answer, dict):
        raise CommandFailed(f"{request.full_url} answered unexpected JSON")
    return answer


def _refusal(error: urllib.error.HTTPError) -> str:
    """One line from an HTTP error: its status and the JSON reason or error, if any."""
    try:
        body = json.loads(error.read())
    except ValueError:
        body = {}
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("reason") or body.get("error") or "")
    if error.code == 404 and detail == "not found":
        detail = "no admin routes there (is http.admin_token_file set?)"
    return f"HTTP {error.code}" + (f": {detail}" if detail else "")


def add_reload_command(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Add `reload` to the `command` subparsers of `trelay`."""
    reload = subparsers.add_parser(
        "reload",
        help="reload a running relay's settings file (as SIGHUP; its operator port's admin route)",
        description="Re-read the settings file of a running relay and apply what can change "
        "without a restart, through its operator HTTP port and admin token. Under systemd, "
        "`systemctl reload trelay` does the same with a signal.",
    )
    _add_admin_arguments(reload)


def run_reload_command(
    arguments: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run `trelay reload`; the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    answer = _ask("reload", lambda: _admin_request(arguments, "/v1/reload", "POST"), stderr)
    if isinstance(answer, int):
        return answer
    if arguments.json:
        stdout.write(json.dumps(answer, indent=2) + "\n")
        return ExitStatus.OK
    applied = answer.get("applied") or []
    stdout.write("reloaded: " + ("; ".join(applied) if applied else "nothing changed") + "\n")
    for waiting in answer.get("waiting_for_restart") or []:
        stdout.write(f"waiting for a restart: {waiting}\n")
    return ExitStatus.OK
