"""Following shared state in Redis: a full load, then a stream's pushes (design §9).

Owns the two loops a node's fleet tasks run: `run_steps`, a step then a sleep, for the
tasks that look at the fleet every interval (`trelay.fleet.overflow`,
`trelay.fleet.quotas`: each step handles a lost Redis itself), and `follow`, the loop
every follower of fleet-wide state runs (`trelay.fleet.revocations`,
`trelay.fleet.secrets`): the state lives in a Redis structure (a sorted set, a hash) that
its writers change first, then announce on a stream (`XADD … MAXLEN ~`). A follower

1. waits until the store is connected;
2. notes the stream's last id, then loads the whole structure (`Followed.reload`):
   whatever is written after the note is announced after it, so nothing falls between
   the load and the pushes;
3. reads the stream from that id with `XREAD BLOCK` (`BLOCK_MS`, well under the store's
   call timeout), handing each batch of entries to `Followed.apply`: a change reaches
   the node as soon as Redis delivers it;
4. loads the whole structure again every `reload_seconds` (the safety net: a stream
   trimmed past a slow reader, a writer that died between its two steps), and from
   step 1 whenever Redis is lost (a restarted Redis, a node that was cut off).

Invariants: a follower never raises for a lost Redis (it waits, then catches up) and
never blocks the data path: it only swaps what the node's synchronous checks read.
Every loop is bounded per pass (`BATCH` entries per read); nothing is cancelled in the
middle of a Redis call except by the store's own timeout.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import trio

from trelay.fleet.store import RedisStore, StoreUnavailable

logger = logging.getLogger(__name__)

BLOCK_MS = 1000  # under `store.CALL_TIMEOUT` (2 s): an idle read is not a failure
BATCH = 1000
RELOAD_SECONDS = 300.0
# The id before any stream entry: read from the start when the stream is empty.
START_ID = "0-0"


class Followed(Protocol):
    """One piece of shared state a node keeps a copy of."""

    @property
    def log_key(self) -> str:
        """The stream its writers announce changes on."""
        ...

    async def reload(self) -> None:
        """Load the whole state from Redis (raises `StoreUnavailable`)."""
        ...

    async def apply(self, entries: Sequence[Mapping[str, str]]) -> None:
        """Take the announced changes (each entry's fields) into account."""
        ...


class Stepped(Protocol):
    """A task that brings the node up to date with the fleet one step at a time."""

    @property
    def interval(self) -> float:
        """Seconds between the end of one step and the next."""
        ...

    async def step(self) -> None:
        """One look at the fleet; never raises for a lost Redis."""
        ...


async def run_steps(
    stepped: Stepped, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """`stepped.step()` every `stepped.interval` until cancelled (inside `store.opened()`)."""
    task_status.started()
    while True:
        await stepped.step()
        await trio.sleep(stepped.interval)


async def last_log_id(store: RedisStore, log_key: str) -> str:
    """The id of the stream's newest entry (`START_ID` when it has none)."""
    newest = await store.call(lambda c: c.xrevrange(log_key, "+", "-", count=1))
    return str(newest[0].identifier) if newest else START_ID


async def follow(
    store: RedisStore,
    followed: Followed,
    *,
    reload_seconds: float = RELOAD_SECONDS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep `followed` current until cancelled (the store must be held open meanwhile)."""
    task_status.started()
    while True:
        await store.wait_connected()
        try:
            position = await last_log_id(store, followed.log_key)
            await followed.reload()
            while True:
                deadline = trio.current_time() + reload_seconds
                while trio.current_time() < deadline:
                    position = await _read(store, followed, position)
                await followed.reload()
        except StoreUnavailable:
            # The store logged the loss once and probes; catch up once it answers.
            continue


async def _read(store: RedisStore, followed: Followed, position: str) -> str:
    """One blocking read from `position`; the id to read from next."""
    key = followed.log_key
    reply = await store.call(lambda c: c.xread({key: position}, count=BATCH, block=BLOCK_MS))
    if not reply:
        return position
    entries = reply.get(key, ())
    if not entries:
        return position
    fields = [{str(k): str(v) for k, v in entry.field_values.items()} for entry in entries]
    await followed.apply(fields)
    return str(entries[-1].identifier)


def parse_float(fields: Mapping[str, str], name: str) -> float | None:
    """A finite number from an entry's field, or None (a bad entry is skipped, not fatal)."""
    try:
        value = float(fields[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def log_skipped(what: str, fields: Mapping[str, str]) -> None:
    logger.warning("fleet: skipped a malformed %s entry (fields %s)", what, sorted(fields))
