"""Per-identity allocation quotas across the fleet, best effort (`[quotas] user`, design §9).

Owns the sync between the core's per-identity counts and Redis, per TURN-serving process
(the single process, or each worker: each has its own core and publishes its own field).
TURN authentication and the Allocate never await Redis: the core checks
`local count + remote count >= quota` (RFC 8656 §7.2 step 8, 486) against a bounded
cache of remote counts (`TurnServer.use_remote_counts`) that this task keeps current.

Redis layout, prefix `trelay:fleet:`:

- `trelay:fleet:quota:<identity>`: a hash, one field per process holding allocations
  of the identity (`<node_id>:<pid>`), its value `"<count> <expires>"` (wall-clock
  seconds, `ttl_seconds` ahead: Redis 7.0 has no per-field TTL, so readers skip expired
  fields and a dead process's count lapses within the TTL, like its registry entry).
  The key itself gets `PEXPIRE ttl` at each write, so an identity nobody holds leaves
  no key behind. A count that drops to 0 is an HDEL.

What one process sends (`QuotaSync.step`, every `sync_seconds`, 1 s or the heartbeat
if shorter), pipelined in chunks of `CHUNK` identities, each chunk one bounded call:
- each identity whose count here changed since the last step: HSET + PEXPIRE (or HDEL),
  and HGETALL to learn the others' counts;
- every `heartbeat_seconds`, every identity held here: the same three commands (the
  fields stay alive, and the remote counts are re-read).
So with H identities held (at most one per allocation) and C changes per second, a
process sends about `3 H / heartbeat_seconds + 3 C` commands per second in
`1 / sync_seconds + H / (CHUNK heartbeat_seconds)` round trips. Measured on this
machine (`benchmarks/quota_sync.py`; Redis's own command count agrees): 3 commands per
held identity per heartbeat, so at the 5 s default 1000 held identities are 600
commands/s (a full step: ~45 ms of this process's loop, in chunks of ~10 ms), 10 000
are 6000 commands/s (~0.6 s per heartbeat, ~12% of a core); 1% of them changing in a
second add 300 commands/s (3 per change). The node's CPU, not Redis, is the first limit.
With no user quota in force (`[quotas] user = 0`, the default) the sync sends nothing.

The overshoot, honestly: a node learns the other nodes' counts only for identities it
holds (anything else would mean reading every identity of the fleet). So
- a node that holds none of an identity's allocations admits by its local count: its
  first allocation always, and, in the sync interval before its next step, up to the
  local quota;
- a count made elsewhere is seen here at most `sync_seconds` (its publication) plus
  `heartbeat_seconds` (our re-read) later;
so a burst spread over N nodes within that window can hold up to N x quota allocations
(1 per node for an identity new to each node, quota per node at worst); in steady state
the quota holds across the fleet within `sync_seconds + heartbeat_seconds`. A count
that ends elsewhere is also seen late: the quota may refuse for that long (never longer
than the field's TTL after a node dies). The quota never ends an existing allocation.

Redis lost: the remote counts stand for up to `ttl_seconds` after the last successful
step, then they are forgotten and the quota is local again (logged once each way); when
Redis answers again, the next step re-publishes every held identity.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import trio

from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.store import Client, RedisStore, StoreUnavailable
from trelay.turn.server import TurnServer

logger = logging.getLogger(__name__)

KEY_PREFIX = "trelay:fleet:quota:"
SYNC_SECONDS = 1.0
CHUNK = 200  # identities per pipelined call (3 commands each): ~10 ms of the loop


class QuotaCore(Protocol):
    """What the sync uses of the core (`trelay.turn.server.TurnServer`)."""

    def identity_counts(self) -> Mapping[str, int]: ...

    def use_remote_counts(self, counts: Mapping[str, int]) -> None: ...


def quota_key(identity: str) -> str:
    return KEY_PREFIX + identity


def process_field(node_id: str) -> str:
    """This process's field: the node's id and the pid (a node's workers share the id)."""
    return f"{node_id}:{os.getpid()}"


def remote_total(fields: Mapping[str, str], own: str, now: float) -> int:
    """The counts of the other processes' unexpired fields (a malformed one counts 0)."""
    total = 0
    for name, value in fields.items():
        if name == own:
            continue
        count_text, _, expires_text = value.partition(" ")
        try:
            count, expires = int(count_text), float(expires_text)
        except ValueError:
            continue
        if expires > now and count > 0:
            total += count
    return total


class QuotaSync:
    """Publishes this process's counts and learns the others' (`trelay.fleet.follow.run_steps`)."""

    def __init__(
        self,
        store: RedisStore,
        settings: FleetSettings,
        core: QuotaCore,
        field: str,
        *,
        clock: Callable[[], float] = trio.current_time,
        enabled: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store, self.settings, self.core, self.field = store, settings, core, field
        self.clock, self.enabled = clock, enabled
        self.sync_seconds = min(SYNC_SECONDS, settings.heartbeat_seconds)
        self.published: dict[str, int] = {}  # what Redis holds of ours, as far as we know
        self.remote: dict[str, int] = {}  # identity -> the others' count, held ones only
        self.refreshed_at = -math.inf  # the last full refresh (clock)
        self.synced_at = -math.inf  # the last step Redis answered entirely (clock)
        self.commands = 0  # sent so far, for the capacity figures
        self.local_only = True  # no remote counts: never synced, or Redis gone for a TTL

    @property
    def interval(self) -> float:
        return self.sync_seconds

    async def step(self) -> None:
        """Publish what changed (everything, once per heartbeat), read the others' counts."""
        if not self.enabled():
            # No quota in force: nothing to send; our fields lapse within the TTL.
            self.published, self.refreshed_at = {}, -math.inf
            return
        now = self.clock()
        held = dict(self.core.identity_counts())
        changed = [
            i for i in held.keys() | self.published.keys()
            if held.get(i, 0) != self.published.get(i, 0)
        ]  # fmt: skip
        full = now - self.refreshed_at >= self.settings.heartbeat_seconds
        batch = sorted(set(changed) | (held.keys() if full else set()))
        try:
            for start in range(0, len(batch), CHUNK):
                await self._send(batch[start : start + CHUNK], held)
        except StoreUnavailable:
            self.refreshed_at = -math.inf  # once back: everything again (Redis may be new)
            if not self.local_only and now - self.synced_at > self.settings.ttl_seconds:
                logger.warning("quotas: Redis unanswered for a TTL; the user quota is local")
                self.local_only, self.remote = True, {}
                self.core.use_remote_counts({})
            return
        if self.local_only:
            logger.info("quotas: the user quota counts the fleet's allocations")
            self.local_only = False
        if full:
            self.refreshed_at = now
        self.synced_at = now
        # Identities no longer held here need no remote count (the cache stays bounded).
        self.remote = {i: c for i, c in self.remote.items() if i in held}
        self.core.use_remote_counts(self.remote)

    async def _send(self, identities: Sequence[str], held: Mapping[str, int]) -> None:
        ttl = self.settings.ttl_seconds
        wall = self.store.wall_clock()
        value_expires = f"{wall + ttl:.3f}"
        field = self.field

        async def pipelined(client: Client) -> dict[str, dict[str, str]]:
            reads = {}
            async with client.pipeline(transaction=False) as pipe:
                for identity in identities:
                    key, count = quota_key(identity), held.get(identity, 0)
                    if count > 0:
                        pipe.hset(key, {field: f"{count} {value_expires}"})
                        pipe.pexpire(key, int(ttl * 1000))
                        reads[identity] = pipe.hgetall(key)
                    else:
                        pipe.hdel(key, [field])
            return {identity: dict(await read) for identity, read in reads.items()}

        answers = await self.store.call(pipelined)
        self.commands += sum(3 if held.get(i, 0) > 0 else 1 for i in identities)
        for identity in identities:
            count = held.get(identity, 0)
            if count > 0:
                self.published[identity] = count
                self.remote[identity] = remote_total(answers[identity], field, wall)
            else:
                self.published.pop(identity, None)
                self.remote.pop(identity, None)


def quota_sync_for(
    store: RedisStore, settings: FleetSettings, server: TurnServer, node_id: str
) -> QuotaSync:
    """The sync of `server`'s counts (run by `trelay.fleet.follow.run_steps`, inside
    `store.opened()`), in force while its user quota is (a reload may change it)."""
    return QuotaSync(
        store, settings, server, process_field(node_id),
        enabled=lambda: server.config.user_quota > 0,
    )  # fmt: skip
