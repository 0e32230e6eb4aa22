"""Commands that run one operation on the fleet's Redis, with no relay running (design §9).

Owns what `trelay fleet api-key ...` (`trelay.process.commands.fleet`) and `trelay fleet
revoke|revocations|secret ...` (`trelay.process.commands.fleet_state`) share:

- `add_redis_arguments`: where the fleet's Redis is, `--redis-url URL` or the `[fleet]`
  of `--config FILE` (one of them, required); `fleet_settings_from` reads them, a
  `SettingsError` naming the flag or key when they cannot be used;
- `run_on_redis`: opens a command's store (`RedisStore(logged=False)`: none of a node's
  "relaying goes on, retrying" lines), waits at most `CONNECT_TIMEOUT` for Redis to
  answer, runs the operation, and ends as every client command does
  (`trelay.process.commands.outcome`): 0 done; 1 with "trelay: fleet: cannot reach Redis
  at HOST:PORT: <why>" when Redis does not answer, or "trelay: <name>: <why>" when the
  operation has nothing to do (`CommandFailed`); 2 for a bad flag, file or value.

The URL's password is never printed (the store names host and port only).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

import trio

from trelay.config.api_keys import ApiKeyError
from trelay.config.fleet_settings import FleetSettings, check_redis_url
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError
from trelay.fleet.store import RedisStore, StoreUnavailable
from trelay.process.commands.outcome import CommandFailed, fail
from trelay.process.exit_codes import ExitStatus

CONNECT_TIMEOUT = 5.0
Operation = Callable[[RedisStore], Awaitable[None]]


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


def run_on_redis(
    name: str, arguments: argparse.Namespace, operation: Operation, stderr: TextIO
) -> int:
    """Run `operation` on the Redis `arguments` name; the exit status (`name` starts the
    operation's own error lines: "fleet api-key", "fleet revoke", ...)."""
    try:
        fleet = fleet_settings_from(arguments)
    except SettingsError as exc:
        return fail(name, exc, stderr)
    status: int = trio.run(_on_store, name, fleet, operation, stderr)
    return status


async def _on_store(name: str, fleet: FleetSettings, operation: Operation, stderr: TextIO) -> int:
    store = RedisStore(fleet, logged=False)
    async with store.opened():
        with trio.move_on_after(CONNECT_TIMEOUT):
            await store.wait_connected()
        # Caught here: leaving the store's nursery would wrap them in an ExceptionGroup.
        try:
            if not store.connected:
                raise StoreUnavailable(store.where)
            await operation(store)
        except StoreUnavailable:
            return fail("fleet", CommandFailed(unreachable(store)), stderr)
        except (SettingsError, ApiKeyError, CommandFailed) as exc:
            return fail(name, exc, stderr)
    return ExitStatus.OK


def unreachable(store: RedisStore) -> str:
    """Why a command could not use `store`, in one line."""
    why = store.last_failure or f"no answer within {CONNECT_TIMEOUT:g} s"
    return f"cannot reach Redis at {store.where}: {why}"
