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
- `api-key` talks to Redis directly (`trelay.fleet.api_keys`): `add` stores a new key
  with a generated secret and prints it once as a JSON line {"sid", "secret",
  "account"} (as `trelay keys create` does for the keys file); `list` prints SIDs,
  accounts and dates, never a secret; `remove` deletes a key, which every API node stops
  accepting within its refresh (3 s).

`add_fleet_command` returns the actions' subparsers so that other fleet actions can
join the same `trelay fleet` (each module adds its own and runs them in `run_fleet_command`'s
place when `fleet_command` is theirs).

Exit status: 0 done; 1 refused or unreachable (one line); 2 a bad flag or file (one line
naming it, "trelay: <key>: <problem>").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, TextIO, TypeVar

import trio

from trelay.config.api_keys import ACCOUNT_PATTERN, ApiKeyError
from trelay.config.fleet_settings import FleetSettings, check_redis_url
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError
from trelay.fleet.api_keys import add_key, read_stored, remove_key
from trelay.fleet.store import RedisStore, StoreUnavailable
from trelay.process.commands.admin import _add_admin_arguments, _admin_request, _ask
from trelay.process.exit_codes import PROG, ExitStatus

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)
CONNECT_TIMEOUT = 5.0
FLEET_ACTIONS = frozenset({"nodes", "api-key"})
NODE_COLUMNS = ("NODE", "REGION", "STATE", "ALLOCS", "CPU", "MBIT/S", "URIS")


class NoSuchKey(Exception):
    """`remove` of a SID Redis does not hold: exit status 1."""


def add_fleet_command(
    subparsers: argparse._SubParsersAction[Parser],
) -> argparse._SubParsersAction[Parser]:
    """Add `fleet` (with `nodes` and `api-key`) to `trelay`'s subparsers; return its actions."""
    fleet = subparsers.add_parser(
        "fleet", help="the fleet: its live nodes, its API keys", description="The fleet (Redis)."
    )
    actions = fleet.add_subparsers(dest="fleet_command", metavar="action", required=True)
    nodes = actions.add_parser(
        "nodes",
        help="list the fleet's live nodes (through a node's operator port)",
        description="The live nodes as a running node's registry listing shows them.",
    )
    _add_admin_arguments(nodes)
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


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the fleet's Redis is: a URL, or the [fleet] of a settings file."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--redis-url", metavar="URL", help="redis:// or rediss://")
    where.add_argument("--config", type=Path, metavar="FILE", help="a settings file with [fleet]")


def fleet_settings_from(arguments: argparse.Namespace) -> FleetSettings:
    """The Redis to use (`SettingsError` naming the flag or key)."""
    if arguments.redis_url is not None:
        return FleetSettings(redis_url=check_redis_url("--redis-url", arguments.redis_url))
    fleet = load_settings(arguments.config).fleet
    if fleet is None:
        raise SettingsError("--config", f"{arguments.config} has no [fleet] redis_url")
    return fleet


def run_fleet_command(
    arguments: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run `trelay fleet nodes` or `trelay fleet api-key ...`; the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if arguments.fleet_command == "nodes":
        return _nodes(arguments, stdout, stderr)
    try:
        account = getattr(arguments, "account", None)
        if account is not None and not ACCOUNT_PATTERN.fullmatch(account):
            raise SettingsError("--account", f"{account!r} is not 'AC' followed by 32 hex digits")
        fleet = fleet_settings_from(arguments)
        not_after = _not_after(getattr(arguments, "not_after", None))
        return trio.run(_api_key, arguments, fleet, not_after, stdout, stderr)
    except (SettingsError, ApiKeyError) as exc:
        stderr.write(f"{PROG}: {exc}\n")
        return ExitStatus.BAD_SETTINGS
    except (StoreUnavailable, NoSuchKey) as exc:
        stderr.write(f"{PROG}: fleet api-key: {exc}\n")
        return ExitStatus.FAILED


def _nodes(arguments: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    answer = _ask(
        "fleet nodes", lambda: _admin_request(arguments, "/v1/fleet/nodes", "GET"), stderr
    )
    if isinstance(answer, int):
        return answer
    if arguments.json:
        stdout.write(json.dumps(answer, indent=2) + "\n")
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
    return _columns(rows)


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


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
    fleet: FleetSettings,
    not_after: dt.datetime | None,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    store = RedisStore(fleet)
    async with store.opened():
        with trio.move_on_after(CONNECT_TIMEOUT):
            await store.wait_connected()
        if arguments.api_key_command == "add":
            key = await add_key(store, arguments.account, not_after=not_after)
            # The only time the secret is shown.
            printed = {"sid": key.sid, "secret": key.secret, "account": key.account}
            stdout.write(json.dumps(printed) + "\n")
        elif arguments.api_key_command == "remove":
            if not await remove_key(store, arguments.sid):
                raise NoSuchKey(f"no API key {arguments.sid} in the fleet")
            stdout.write(f"removed {arguments.sid}\n")
        else:
            stored, problems = await read_stored(store)
            keys = [_listed(entry.key.sid, entry.key.account, entry.key.not_after,
                            entry.created_at) for entry in stored]  # fmt: skip
            if arguments.json:
                stdout.write(json.dumps({"keys": keys}, indent=2) + "\n")
            else:
                rows = [["SID", "ACCOUNT", "NOT_AFTER", "CREATED"]]
                rows += [[k["sid"], k["account"], k["not_after"] or "-", k["created"] or "-"]
                         for k in keys]  # fmt: skip
                stdout.write(_columns(rows))
            for problem in problems:
                stderr.write(f"{PROG}: fleet api-key: ignored: {problem}\n")
    return ExitStatus.OK


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
