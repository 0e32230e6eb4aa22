"""`trelay fleet revoke|revocations|secret`: the fleet's revocations and TURN secrets, in Redis.

Owns these actions of `trelay fleet` (design §9); each talks to Redis directly (no relay
need be running), found with `--redis-url URL` or the `[fleet]` of `--config FILE`
(`trelay.process.commands.redis_command`):

    trelay fleet revoke IDENTITY (--ttl SECONDS | --until DATE) (--redis-url URL | --config FILE)
    trelay fleet revocations [--json] (--redis-url URL | --config FILE)
    trelay fleet secret add (--redis-url URL | --config FILE)
    trelay fleet secret retire FINGERPRINT (--redis-url URL | --config FILE)
    trelay fleet secret list [--json] (--redis-url URL | --config FILE)

- `revoke` writes through `trelay.fleet.revocations.RedisRevocationWriter` (as the token
  API's `POST /v1/revocations` does in a fleet): every node refuses the identity within a
  second and ends its allocations. It prints {"identity", "until", "until_rfc3339"} (the
  later `until` wins when one is already in force).
- `revocations` lists those in force: identity and until.
- `secret add` generates a secret (`trelay.fleet.secrets`), stores it and prints it
  once as {"fingerprint", "secret", "added_at", "minted_from"}: every node accepts it
  within a second; token APIs mint under it once it is `ACTIVATION_SECONDS` old.
  `retire` removes one by fingerprint (nodes stop accepting it: retire a secret only once
  the credentials minted under it have expired); `list` shows fingerprints and dates,
  never a secret.

Exit status (`trelay.process.commands.outcome`): 0 done; 1 Redis unreachable or nothing
to retire (one line); 2 a bad flag or file (one line naming it, "trelay: <key>: <problem>").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import TextIO, TypeVar

from trelay.config.revocations import parse_until
from trelay.config.values import SettingsError
from trelay.fleet.revocations import RedisRevocationWriter, current_revocations
from trelay.fleet.secrets import (
    ACTIVATION_SECONDS,
    FleetSecret,
    add_secret,
    list_secrets,
    retire_secret,
)
from trelay.fleet.store import RedisStore
from trelay.process.commands.outcome import CommandFailed, aligned, fail, write_json
from trelay.process.commands.redis_command import add_redis_arguments, run_on_redis
from trelay.process.exit_codes import PROG

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)
MAX_TTL = 10 * 365 * 86400  # as the token API's revocations
FLEET_STATE_ACTIONS = frozenset({"revoke", "revocations", "secret"})


def add_fleet_state_commands(actions: argparse._SubParsersAction[Parser]) -> None:
    """Add `revoke`, `revocations` and `secret` to the actions of `trelay fleet`."""
    revoke = actions.add_parser(
        "revoke",
        help="refuse an identity on every node (in Redis)",
        description="Revoke an identity fleet-wide: Allocate and Refresh get 401 on every "
        "node, and its allocations end.",
    )
    revoke.add_argument("identity", help="the identity (a TURN REST user, an API key SID)")
    until = revoke.add_mutually_exclusive_group(required=True)
    until.add_argument("--ttl", type=int, metavar="SECONDS", help="revoked for this long")
    until.add_argument("--until", metavar="DATE", help="revoked until this RFC 3339 time")
    listing = actions.add_parser("revocations", help="list the fleet's revocations in force")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    secret = actions.add_parser(
        "secret", help="TURN REST secrets every node accepts (in Redis)", description="Secrets."
    )
    secret_actions = secret.add_subparsers(dest="secret_command", metavar="action", required=True)
    secret_actions.add_parser("add", help="generate a secret, store it and print it once")
    retire = secret_actions.add_parser("retire", help="remove a secret (nodes stop accepting it)")
    retire.add_argument("fingerprint", help="as `secret list` shows it")
    secrets_list = secret_actions.add_parser("list", help="fingerprints and dates, no secret")
    secrets_list.add_argument("--json", action="store_true", help="one JSON document")
    for parser in (revoke, listing, *secret_actions.choices.values()):
        add_redis_arguments(parser)


def run_fleet_state_command(
    arguments: argparse.Namespace,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    now: float | None = None,
) -> int:
    """Run `trelay fleet revoke|revocations|secret ...`; the exit status."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    when = time.time() if now is None else now
    name = f"fleet {arguments.fleet_command}"
    try:
        until = _until(arguments, when) if arguments.fleet_command == "revoke" else 0.0
    except SettingsError as exc:
        return fail(name, exc, stderr)

    async def operation(store: RedisStore) -> None:
        await _act(arguments, store, until, when, stdout, stderr)

    return run_on_redis(name, arguments, operation, stderr)


def _until(arguments: argparse.Namespace, now: float) -> float:
    if arguments.ttl is not None:
        if not 0 < arguments.ttl <= MAX_TTL:
            raise SettingsError("--ttl", f"expected 1 to {MAX_TTL} seconds, got {arguments.ttl}")
        return now + float(arguments.ttl)
    try:
        until = parse_until(arguments.until, "--until")
    except ValueError as exc:
        raise SettingsError("--until", str(exc).removeprefix("--until: ")) from None
    if not now < until <= now + MAX_TTL:
        raise SettingsError("--until", "must be in the future, at most ten years away")
    return until


async def _act(
    arguments: argparse.Namespace,
    store: RedisStore,
    until: float,
    now: float,
    stdout: TextIO,
    stderr: TextIO,
) -> None:
    if arguments.fleet_command == "revoke":
        try:
            entry = await RedisRevocationWriter(store).revoke(arguments.identity, until, now)
        except ValueError as exc:
            raise SettingsError("identity", str(exc)) from None
        line = {"identity": entry.identity, "until": int(entry.until)}
        stdout.write(json.dumps({**line, "until_rfc3339": _date(entry.until)}) + "\n")
    elif arguments.fleet_command == "revocations":
        entries, more = await current_revocations(store, now)
        listed = [{"identity": e.identity, "until": _date(e.until)} for e in entries]
        if arguments.json:
            write_json(stdout, {"revocations": listed})
        else:
            rows = [["IDENTITY", "UNTIL"], *([e["identity"], e["until"]] for e in listed)]
            stdout.write(aligned(rows))
        if more:
            stderr.write(f"{PROG}: fleet revocations: more than {len(entries)}; listed those\n")
    else:
        await _secret(arguments, store, now, stdout, stderr)


async def _secret(
    arguments: argparse.Namespace, store: RedisStore, now: float, stdout: TextIO, stderr: TextIO
) -> None:
    action: str = arguments.secret_command
    if action == "add":
        try:
            entry = await add_secret(store, now)
        except ValueError as exc:
            raise CommandFailed(str(exc)) from None
        printed = {**_listed(entry), "secret": entry.secret}  # the only time it is shown
        stdout.write(json.dumps(printed) + "\n")
        stderr.write(f"{PROG}: secret {entry.fingerprint} added; it is shown only this once\n")
    elif action == "retire":
        if not await retire_secret(store, arguments.fingerprint):
            raise CommandFailed(f"no secret with fingerprint {arguments.fingerprint}")
        stdout.write(f"retired {arguments.fingerprint}\n")
    else:
        listed = [_listed(entry) for entry in await list_secrets(store)]
        if arguments.json:
            write_json(stdout, {"secrets": listed})
        else:
            rows = [["FINGERPRINT", "ADDED", "MINTED_FROM"]]
            rows += [[s["fingerprint"], s["added_at"], s["minted_from"]] for s in listed]
            stdout.write(aligned(rows))


def _listed(entry: FleetSecret) -> dict[str, str]:
    return {
        "fingerprint": entry.fingerprint,
        "added_at": _date(entry.added_at),
        "minted_from": _date(entry.added_at + ACTIVATION_SECONDS),
    }


def _date(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="seconds")
