"""Fleet-wide revocations: written once to Redis, refused by every node within a second.

Owns the Redis layout of revocations (design §9), their writer and their follower.

- `trelay:fleet:revocations`: a sorted set, identity -> until (Unix seconds). Written
  with `ZADD GT`, so a later `until` wins and an earlier one never shortens a
  revocation; entries already over are pruned by the writer (`ZREMRANGEBYSCORE`) and
  skipped by readers. It is the truth a node loads at start, at every reconnection, and
  every `RELOAD_SECONDS` (`trelay.fleet.follow`), so a node that joins later or was cut
  off refuses what was revoked meanwhile.
- `trelay:fleet:revocations:log`: a stream (`XADD … MAXLEN ~ LOG_LENGTH`), one entry
  per revocation (`identity`, `until`: the set's value after the write), written after
  the set; followers `XREAD BLOCK` it and apply each entry as it comes.

The writer (`RedisRevocationWriter.revoke(identity, until, now)`) has the shape of the
token API's revocation writer (`POST /v1/revocations`); `trelay fleet revoke` uses it too.

On a node (`RevocationFollower`), the entries are the `FLEET` source of the node's
`trelay.config.revocations.Revocations` (the file's entries are another source: neither
reload wipes the other). The TURN core refuses a revoked identity's Allocate and Refresh
(401, `trelay.turn.auth` step 6); its live allocations on the node are ended as the
revocation arrives (`on_revoked`, the node's `end_sessions`), so a revoked identity's
calls stop on every node rather than run on until their lifetime is over.

Invariants: a node holds at most `max_entries` Redis revocations (logged once when the
cap is hit; the rest wait for a reload after entries expire); nothing here is awaited by
TURN authentication, which reads the in-memory copy.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from coredis.response.types import ScoredMember
from coredis.tokens import PureToken

from trelay.config.revocations import FLEET, MAX_IDENTITY_BYTES, Revocation, Revocations
from trelay.fleet.follow import log_skipped, parse_float
from trelay.fleet.store import Client, RedisStore

logger = logging.getLogger(__name__)

REVOCATIONS_KEY = "trelay:fleet:revocations"
LOG_KEY = "trelay:fleet:revocations:log"
LOG_LENGTH = 100_000  # approximate (MAXLEN ~): far more than followers fall behind by
MAX_ENTRIES = 1_000_000  # per node; a million identities is ~100 MB of Python dict
PAGE = 10_000  # entries per ZRANGE of a full load


def check_identity(identity: str) -> str:
    if not identity or len(identity.encode("utf-8")) > MAX_IDENTITY_BYTES:
        raise ValueError(f"identity must be 1 to {MAX_IDENTITY_BYTES} bytes")
    return identity


class RedisRevocationWriter:
    """Writes revocations for the whole fleet (raises `StoreUnavailable` without Redis)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    async def revoke(self, identity: str, until: float, now: float) -> Revocation:
        """Refuse `identity` on every node until `until` (Unix seconds); return what is in
        force now (a later revocation already there wins). ValueError for a bad identity."""
        check_identity(identity)
        store, whole = self.store, float(int(until))
        await store.call(
            lambda c: c.zadd(REVOCATIONS_KEY, {identity: whole}, comparison=PureToken.GT)
        )
        score = await store.call(lambda c: c.zscore(REVOCATIONS_KEY, identity))
        entry = Revocation(identity, whole if score is None else float(score))
        # The log entry comes after the set: a follower that sees it finds the set current.
        fields = {"identity": identity, "until": repr(entry.until)}
        await store.call(
            lambda c: c.xadd(
                LOG_KEY,
                fields,
                trim_strategy=PureToken.MAXLEN,
                trim_operator=PureToken.APPROXIMATELY,
                threshold=LOG_LENGTH,
            )
        )
        await store.call(lambda c: c.zremrangebyscore(REVOCATIONS_KEY, float("-inf"), now))
        return entry


async def current_revocations(
    store: RedisStore, now: float, limit: int = MAX_ENTRIES
) -> tuple[list[Revocation], bool]:
    """The revocations in force at `now`, soonest over first, at most `limit`; and whether
    more were left out (raises `StoreUnavailable`)."""
    found: list[Revocation] = []
    above = f"({now!r}"  # exclusive: a revocation until `now` is over

    async def page_at(client: Client, *, offset: int, count: int) -> tuple[ScoredMember, ...]:
        return await client.zrange(
            REVOCATIONS_KEY, above, "+inf", sortby=PureToken.BYSCORE,
            offset=offset, count=count, withscores=True,
        )  # fmt: skip

    pages = limit // PAGE + 1  # bounded: never more than `limit` entries are read
    for index in range(pages):
        count = min(PAGE, limit - len(found))
        if count <= 0:
            break
        offset = index * PAGE
        page = await store.call(functools.partial(page_at, offset=offset, count=count))
        found += [Revocation(str(m.member), float(m.score)) for m in page]
        if len(page) < count:
            return found, False
    more = await store.call(lambda c: c.zcount(REVOCATIONS_KEY, above, "+inf"))
    return found, more > len(found)


class RevocationFollower:
    """Keeps a node's `FLEET` revocations current (`trelay.fleet.follow.follow` runs it).

    `on_revoked(identities)`: called with the identities newly revoked (pushed, or found
    by a reload that were not known before), to end their allocations on this node.
    """

    log_key = LOG_KEY

    def __init__(
        self,
        store: RedisStore,
        revocations: Revocations,
        *,
        on_revoked: Callable[[Iterable[str]], None] = lambda identities: None,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.store, self.revocations = store, revocations
        self.on_revoked, self.max_entries = on_revoked, max_entries
        self._capped = False

    async def reload(self) -> None:
        now = self.store.wall_clock()
        entries, more = await current_revocations(self.store, now, self.max_entries)
        self._note_cap(more)
        fresh = [e.identity for e in entries if not self.revocations.is_revoked(e.identity, now)]
        self.revocations.replace(entries, FLEET)
        logger.debug("fleet: %d revocation(s) loaded from Redis", len(entries))
        if fresh:
            self.on_revoked(fresh)

    async def apply(self, entries: Sequence[Mapping[str, str]]) -> None:
        revoked: list[str] = []
        now = self.store.wall_clock()
        for fields in entries:
            identity, until = fields.get("identity"), parse_float(fields, "until")
            if not identity or until is None:
                log_skipped("revocation", fields)
                continue
            if until <= now:
                continue  # over already: nothing to refuse
            entry = Revocation(identity, until)
            if self.revocations.add(entry, FLEET, limit=self.max_entries):
                revoked.append(identity)
            else:
                self._note_cap(True)
        if revoked:
            logger.info("fleet: %d identity(ies) revoked from Redis", len(revoked))
            self.on_revoked(revoked)

    def _note_cap(self, hit: bool) -> None:
        if hit and not self._capped:
            logger.warning(
                "fleet: more than %d revocations in Redis; this node holds the first %d",
                self.max_entries, self.max_entries,
            )  # fmt: skip
        self._capped = hit
