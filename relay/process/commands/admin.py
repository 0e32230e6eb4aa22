"""`trelay sessions` and `trelay reload`: a running relay's admin, through its operator port.

Owns the subcommands (argparse) that `trelay.process.cli` wires in, clients of the admin
routes of `trelay.ops.admin_routes` (through `trelay.process.commands.admin_client`):

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
import sys
import urllib.parse
import urllib.request
from typing import Any, TextIO

from trelay.config.values import SettingsError, format_host_port, parse_host_port
from trelay.process.commands import outcome
from trelay.process.commands.admin_client import Parser, add_admin_command, admin_request, ask
from trelay.process.commands.outcome import write_json
from trelay.process.exit_codes import PROG, ExitStatus

COLUMNS = (
    ("WORKER", "worker"), ("TRANSPORT", "transport"), ("CLIENT", "client"),
    ("RELAYED", "relayed"), ("IDENTITY", "identity"), ("AGE", "age_seconds"),
    ("LEFT", "lifetime_left_seconds"), ("PERMS", "permissions"), ("CHANS", "channels"),
    ("TO_PEER", "client_to_peer_bytes"), ("TO_CLIENT", "peer_to_client_bytes"),
)  # fmt: skip


def add_sessions_command(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Add `sessions` to the `command` subparsers of `trelay`."""
    sessions = add_admin_command(
        subparsers,
        "sessions",
        "list or end a running relay's sessions (its operator port's admin routes)",
        "List the live allocations of a running relay, or end an identity's "
        "(or one relayed address's), through its operator HTTP port and admin token.",
    )
    sessions.add_argument("--identity", metavar="ID", help="only this identity's sessions")
    sessions.add_argument(
        "--relayed", metavar="HOST:PORT", help="with --end: the session relaying there"
    )
    sessions.add_argument(
        "--end", action="store_true", help="end the sessions of --identity (or --relayed)"
    )


def run_sessions_command(
    arguments: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run `trelay sessions`; the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    answer = ask("sessions", lambda: _request(arguments), stderr)
    if isinstance(answer, int):
        return answer
    unanswered = answer.get("unanswered_workers") or []
    if unanswered:
        workers = ", ".join(str(w) for w in unanswered)
        stderr.write(f"{PROG}: sessions: no answer from worker {workers}; not included\n")
    if arguments.json:
        write_json(stdout, answer)
    elif arguments.end:
        count = answer.get("ended", 0)
        stdout.write(f"ended {count} session{'' if count == 1 else 's'}\n")
    else:
        stdout.write(table(answer.get("sessions", [])))
    return ExitStatus.OK


def table(sessions: list[dict[str, Any]]) -> str:
    """The sessions as aligned columns (WORKER only when the relay has workers)."""
    columns = [c for c in COLUMNS if c[1] != "worker" or any("worker" in s for s in sessions)]
    # A dual allocation's RELAYED shows both addresses (relays older than the field: one).
    shown = [
        {**s, "relayed": ",".join(s["relayed_addresses"])} if s.get("relayed_addresses") else s
        for s in sessions
    ]
    return outcome.table(columns, shown, unit="s")


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
    return admin_request(arguments, path, method, query)


def add_reload_command(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Add `reload` to the `command` subparsers of `trelay`."""
    add_admin_command(
        subparsers,
        "reload",
        "reload a running relay's settings file (as SIGHUP; its operator port's admin route)",
        "Re-read the settings file of a running relay and apply what can change "
        "without a restart, through its operator HTTP port and admin token. Under systemd, "
        "`systemctl reload trelay` does the same with a signal.",
    )


def run_reload_command(
    arguments: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run `trelay reload`; the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    answer = ask("reload", lambda: admin_request(arguments, "/v1/reload", "POST"), stderr)
    if isinstance(answer, int):
        return answer
    if arguments.json:
        write_json(stdout, answer)
        return ExitStatus.OK
    applied = answer.get("applied") or []
    stdout.write("reloaded: " + ("; ".join(applied) if applied else "nothing changed") + "\n")
    for waiting in answer.get("waiting_for_restart") or []:
        stdout.write(f"waiting for a restart: {waiting}\n")
    return ExitStatus.OK
