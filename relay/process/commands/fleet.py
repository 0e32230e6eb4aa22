"""`trelay fleet`: the operator's view of the fleet, and the fleet's API keys.

Owns the `fleet` subcommand (argparse) that `trelay.process.cli` wires in, and two of
its actions (design §9):

    trelay fleet nodes --http HOST:PORT --token-file FILE [--json]
    trelay fleet api-key add --account AC... [--not-after DATE] (--redis-url URL | --config FILE)
    trelay fleet api-key remove SID (--redis-url URL | --config FILE)
    trelay fleet api-key list [--json] (--redis-url URL | --config FILE)

- `nodes` asks a running node's operator port (`GET /v1/fleet/nodes`,
  `trelay.ops.fleet_routes`, with the admin token) and prints one line per live node:
  id, region, state (available, draining, overloaded, not ready), allocations, CPU
  share, relayed Mbit/s and URIs; exit 1 when that node cannot reach Redis.
- `api-key` talks to Redis directly (`trelay.fleet.api_keys`, through
  `trelay.process.commands.redis_command`): `add` stores a new key
  with a generated secret and prints it once as a JSON line {"sid", "secret",
  "account"} (as `trelay keys create` does for the keys file); `list` prints SIDs,
  accounts and dates, never a secret; `remove` deletes a key, which every API node stops
  accepting within its refresh (3 s).

`add_fleet_command` returns the actions' subparsers so that other fleet actions can
join the same `trelay fleet` (each module adds its own and runs them in `run_fleet_command`'s
place when `fleet_command` is theirs).

Exit status (`trelay.process.commands.outcome`): 0 done; 1 refused or unreachable, or no
such key (one line); 2 a bad flag or file (one line naming it, "trelay: <key>: <problem>").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any, TextIO

from trelay.config.api_keys import ApiKeyError
from trelay.config.values import SettingsError
from trelay.fleet.api_keys import add_key, check_account, read_stored, remove_key
from trelay.fleet.store import RedisStore
from trelay.process.commands.admin_client import Parser, add_admin_command, admin_request, ask
from trelay.process.commands.outcome import CommandFailed, aligned, fail, write_json
from trelay.process.commands.redis_command import add_redis_arguments, run_on_redis
from trelay.process.exit_codes import PROG, ExitStatus

NODE_COLUMNS = ("NODE", "REGION", "STATE", "ALLOCS", "CPU", "MBIT/S", "URIS")


def add_fleet_command(
    subparsers: argparse._SubParsersAction[Parser],
) -> argparse._SubParsersAction[Parser]:
    """Add `fleet` (with `nodes` and `api-key`) to `trelay`'s subparsers; return its actions."""
    fleet = subparsers.add_parser(
        "fleet", help="the fleet: its live nodes, its API keys", description="The fleet (Redis)."
    )
    actions = fleet.add_subparsers(dest="fleet_command", metavar="action", required=True)
    add_admin_command(
        actions,
        "nodes",
        "list the fleet's live nodes (through a node's operator port)",
        "The live nodes as a running node's registry listing shows them.",
    )
    api_key = actions.add_parser(
        "api-key", help="API keys every API node accepts (in Redis)", description="Fleet API keys."
    )
    key_actions = api_key.add_subparsers(dest="api_key_command", metavar="action", required=True)
    add = key_actions.add_parser("add", help="store a new API key and print it once")
    add.add_argument("--account", required=True, metavar="AC...", help="the key's account SID")
    add.add_argument(
        "--not-after", metavar="DATE", help="refused after this ISO 8601 date or time (UTC)"
    )
    remove = key_actions.add_parser("remove", help="remove an API key (every API node forgets it)")
    remove.add_argument("sid", metavar="SK...", help="the key's SID")
    listing = key_actions.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    for parser in (add, remove, listing):
        add_redis_arguments(parser)
    return actions


def run_fleet_command(
    arguments: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run `trelay fleet nodes` or `trelay fleet api-key ...`; the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if arguments.fleet_command == "nodes":
        return _nodes(arguments, stdout, stderr)
    name = "fleet api-key"
    try:
        if arguments.api_key_command == "add":
            check_account(arguments.account)
        not_after = _not_after(getattr(arguments, "not_after", None))
    except (SettingsError, ApiKeyError) as exc:
        return fail(name, exc, stderr)

    async def operation(store: RedisStore) -> None:
        await _api_key(arguments, store, not_after, stdout, stderr)

    return run_on_redis(name, arguments, operation, stderr)


def _nodes(arguments: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    answer = ask("fleet nodes", lambda: admin_request(arguments, "/v1/fleet/nodes", "GET"), stderr)
    if isinstance(answer, int):
        return answer
    if arguments.json:
        write_json(stdout, answer)
    else:
        stdout.write(nodes_table(answer.get("nodes") or []))
    if answer.get("error"):
        stderr.write(f"{PROG}: fleet nodes: Redis is {answer.get('store')}: {answer['error']}\n")
        return ExitStatus.FAILED
    return ExitStatus.OK


def node_state(node: dict[str, Any]) -> str:
    if node.get("draining"):
        return "draining"
    if not node.get("ready"):
        return "not ready"
    if node.get("overloaded"):
        return "overloaded"
    return "available"


def nodes_table(nodes: list[dict[str, Any]]) -> str:
    """The nodes as aligned columns."""
    rows = [list(NODE_COLUMNS)]
    for node in nodes:
        rows.append([
            str(node.get("node_id", "-")), str(node.get("region", "-")), node_state(node),
            str(node.get("allocations", 0)), f"{float(node.get('cpu_share', 0.0)):.2f}",
            f"{float(node.get('relayed_bps', 0.0)) / 1e6:.1f}",
            " ".join(node.get("public_uris") or []) or "-",
        ])  # fmt: skip
    return aligned(rows)


def _not_after(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SettingsError("--not-after", f"not an ISO 8601 date or time: {text!r}") from None
    if len(text) == 10:  # a date: usable through that whole day, as in the keys file
        when += dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


async def _api_key(
    arguments: argparse.Namespace,
    store: RedisStore,
    not_after: dt.datetime | None,
    stdout: TextIO,
    stderr: TextIO,
) -> None:
    if arguments.api_key_command == "add":
        key = await add_key(store, arguments.account, not_after=not_after)
        # The only time the secret is shown.
        printed = {"sid": key.sid, "secret": key.secret, "account": key.account}
        stdout.write(json.dumps(printed) + "\n")
    elif arguments.api_key_command == "remove":
        if not await remove_key(store, arguments.sid):
            raise CommandFailed(f"no API key {arguments.sid} in the fleet")
        stdout.write(f"removed {arguments.sid}\n")
    else:
        stored, problems = await read_stored(store)
        keys = [_listed(entry.key.sid, entry.key.account, entry.key.not_after,
                        entry.created_at) for entry in stored]  # fmt: skip
        if arguments.json:
            write_json(stdout, {"keys": keys})
        else:
            rows = [["SID", "ACCOUNT", "NOT_AFTER", "CREATED"]]
            rows += [[k["sid"], k["account"], k["not_after"] or "-", k["created"] or "-"]
                     for k in keys]  # fmt: skip
            stdout.write(aligned(rows))
        for problem in problems:
            stderr.write(f"{PROG}: fleet api-key: ignored: {problem}\n")


def _listed(
    sid: str, account: str, not_after: dt.datetime | None, created: float | None
) -> dict[str, Any]:
    return {
        "sid": sid,
        "account": account,
        "not_after": None if not_after is None else not_after.isoformat(),
        "created": None
        if created is None
        else dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="seconds"),
    }
