"""`trelay usage`: the fleet's usage records summed, through a relay's operator port.

Owns the subcommand (argparse) that `trelay.process.cli` wires in, a client of
`GET /v1/usage` (`trelay.ops.usage_routes`) built on the admin commands' request and
error handling (`trelay.process.commands.admin_client`):

    trelay usage --http HOST:PORT --token-file FILE [--identity ID] [--since T]
                 [--until T] [--by identity,node,region,transport] [--json]

T is Unix seconds or ISO 8601 (UTC unless it says otherwise). It prints one line per
group (a table: the group's fields, records, allocations ended, allocation-seconds,
bytes and datagrams each way), or the route's JSON with `--json`; a truncated sum is
said on stderr. Exit status as `trelay sessions`: 0 done, 1 refused or unreachable (a
node without a fleet answers 404, and the line says the route's message), 2 a bad flag
or token file.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from trelay.process.commands import outcome
from trelay.process.commands.admin_client import Parser, add_admin_command, admin_request, ask
from trelay.process.commands.outcome import write_json
from trelay.process.exit_codes import PROG, ExitStatus

TOTALS = (
    ("RECORDS", "records"), ("ENDED", "allocations_ended"), ("ALLOC_S", "allocation_seconds"),
    ("TO_PEER", "client_to_peer_bytes"), ("TO_CLIENT", "peer_to_client_bytes"),
    ("DGRAMS_TO_PEER", "client_to_peer_datagrams"),
    ("DGRAMS_TO_CLIENT", "peer_to_client_datagrams"),
)  # fmt: skip


def add_usage_command(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Add `usage` to the `command` subparsers of `trelay`."""
    usage = add_admin_command(
        subparsers,
        "usage",
        "sum the fleet's usage records by identity over a time window",
        "Sum the usage records of the fleet's nodes (bytes and datagrams each "
        "way, allocation-seconds) by identity, and optionally node, region and transport, "
        "over a window of when they were written, through a relay's operator HTTP port "
        "and admin token.",
    )
    usage.add_argument("--identity", metavar="ID", help="only this identity's records")
    usage.add_argument("--since", metavar="T", help="from T (Unix seconds or ISO 8601)")
    usage.add_argument("--until", metavar="T", help="until T, excluded (default: now)")
    usage.add_argument(
        "--by",
        metavar="FIELDS",
        default="identity",
        help="group by these, comma-separated: identity, node, region, transport",
    )


def run_usage_command(
    arguments: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run `trelay usage`; the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    query = {"by": arguments.by}
    for name in ("identity", "since", "until"):
        value = getattr(arguments, name)
        if value is not None:
            query[name] = value
    answer = ask("usage", lambda: admin_request(arguments, "/v1/usage", "GET", query), stderr)
    if isinstance(answer, int):
        return answer
    if answer.get("truncated"):
        stderr.write(
            f"{PROG}: usage: the sum stopped at {answer.get('entries_read')} records: "
            "narrow the window (--since, --until)\n"
        )
    if arguments.json:
        write_json(stdout, answer)
    else:
        stdout.write(table(answer.get("by") or ["identity"], answer.get("groups") or []))
    return ExitStatus.OK


def table(by: list[str], groups: list[dict[str, Any]]) -> str:
    """The groups as aligned columns: the grouping fields, then the totals."""
    return outcome.table([(name.upper(), name) for name in by] + list(TOTALS), groups)
