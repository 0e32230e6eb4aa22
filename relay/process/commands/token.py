"""`trelay keys create` and `trelay token`: API keys and access tokens from the shell.

Owns the two subcommands (argparse) that `trelay.process.cli` wires in:

- `trelay keys create --keys FILE [--account AC...]` appends a new API key to the keys
  file (created 0600) and prints it once as a JSON line: {"sid", "secret", "account"}.
- `trelay token --keys FILE --identity alice [--ttl 3600] [--key SK...]` prints an
  access token (`trelay.credentials.access_tokens`) for back-ends with no JWT library and for tests.
  Without `--key`, the newest key still usable is used.

A bad file or flag is one line on stderr, "trelay: <key>: <problem>", and status 2,
as for `trelay serve`. Nothing here prints a secret except the new key, once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO, TypeVar

from trelay.config.api_keys import ApiKeyError, create_key, load_keys
from trelay.credentials.access_tokens import DEFAULT_TOKEN_TTL, mint_token
from trelay.process.exit_codes import PROG, ExitStatus

MAX_TOKEN_TTL = 24 * 3600
TOKEN_COMMANDS = frozenset({"keys", "token"})
# Generic so that `trelay.process.cli`'s own ArgumentParser subclass (its error handling) is kept.
Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_token_commands(subparsers: argparse._SubParsersAction[Parser]) -> None:
    """Add `keys create` and `token` to the `command` subparsers of `trelay`."""
    keys = subparsers.add_parser("keys", help="manage API keys", description="API keys.")
    actions = keys.add_subparsers(dest="keys_command", metavar="action", required=True)
    create = actions.add_parser(
        "create",
        help="append a new API key to the keys file and print it once",
        description="Append a new API key (SID, secret, account) and print it once as JSON.",
    )
    create.add_argument("--keys", type=Path, required=True, metavar="FILE", help="keys file")
    create.add_argument(
        "--account", metavar="AC...", help="account SID (default: the file's, or a new one)"
    )
    token = subparsers.add_parser(
        "token",
        help="print an access token (HS256 JWT, Twilio format)",
        description="Mint an access token for an identity under an API key.",
    )
    token.add_argument("--keys", type=Path, required=True, metavar="FILE", help="keys file")
    token.add_argument("--identity", required=True, help="grants.identity of the token")
    token.add_argument(
        "--ttl", type=int, default=DEFAULT_TOKEN_TTL, metavar="SECONDS", help="lifetime"
    )
    token.add_argument("--key", metavar="SK...", help="API key SID (default: newest usable)")


def run_token_command(
    arguments: argparse.Namespace,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    now: float | None = None,
) -> int:
    """Run `keys create` or `token`; the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        if arguments.command == "keys":
            key = create_key(arguments.keys, arguments.account)
            line = {"sid": key.sid, "secret": key.secret, "account": key.account}
            stdout.write(json.dumps(line) + "\n")
            stderr.write(f"{PROG}: key {key.sid} added to {arguments.keys}; ")
            stderr.write("the secret is shown only this once\n")
            return ExitStatus.OK
        if arguments.command == "token":
            stdout.write(_token(arguments, time.time() if now is None else now) + "\n")
            return ExitStatus.OK
    except ApiKeyError as exc:
        stderr.write(f"{PROG}: {exc}\n")
        return ExitStatus.BAD_SETTINGS
    stderr.write(f"{PROG}: command: {arguments.command!r} is not a token command\n")
    return ExitStatus.BAD_SETTINGS


def _token(arguments: argparse.Namespace, now: float) -> str:
    if not 1 <= arguments.ttl <= MAX_TOKEN_TTL:
        raise ApiKeyError("--ttl", f"must be from 1 to {MAX_TOKEN_TTL} seconds")
    keys = load_keys(arguments.keys)
    if arguments.key is None:
        key = keys.newest_usable(now)
        if key is None:
            raise ApiKeyError(str(arguments.keys), "every key is past its not_after")
    else:
        found = keys.by_sid(arguments.key)
        if found is None:
            raise ApiKeyError("--key", f"no key {arguments.key} in {arguments.keys}")
        if not found.usable_at(now):
            raise ApiKeyError("--key", f"{found.sid} is past its not_after")
        key = found
    try:
        return mint_token(key, arguments.identity, now, arguments.ttl)
    except ValueError as exc:
        raise ApiKeyError("--identity", str(exc)) from None
