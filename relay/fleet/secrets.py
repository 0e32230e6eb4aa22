"""TURN REST shared secrets held in Redis: rotation without editing a file on every node.

Owns the Redis layout of the fleet's secrets (design §9), their writers (the operator's
`trelay fleet secret add|retire|list`), the follower that gives them to a node's TURN
authentication, and the choice of the secret the token API mints under.

- `trelay:fleet:secrets`: a hash, fingerprint -> JSON `{"secret", "added_at"}` (Unix
  seconds). The fingerprint (`fingerprint`: 16 hex digits of a SHA-256 of the secret)
  names a secret in listings, logs and `retire`; the secret itself is never logged or
  listed. At most `MAX_SECRETS` at once (each one is a candidate key a request is
  checked against).
- `trelay:fleet:secrets:log`: a stream (`XADD … MAXLEN ~ LOG_LENGTH`) of changes
  (`change` = added | retired, `fingerprint`); a follower reloads the hash on each
  (`trelay.fleet.follow`), so a node knows of a new secret within a second.

On a node, the fleet's secrets are `share`d with the TURN core's
`trelay.turn.credential_sources.SharedSecrets` beside the configured ones (`auth.secrets`,
`auth.secrets_file`): every node accepts both; a reload of the settings keeps the
fleet's, and the follower keeps the configured. A retired secret stops being accepted
as soon as a node hears of it: retire a secret only once the credentials minted under it
have expired.

Minting (`FleetSecrets.minting_secret`) uses the newest secret that has been in Redis for
`activation_seconds` (every node has learned it by then, so no credential exists that a
node cannot verify); until one has, the configured secret.

Invariants: secrets never reach a log line, a listing or an exception message; a node
holds at most `MAX_SECRETS` of them (the newest).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from coredis.tokens import PureToken

from trelay.fleet.store import RedisStore

logger = logging.getLogger(__name__)

SECRETS_KEY = "trelay:fleet:secrets"
LOG_KEY = "trelay:fleet:secrets:log"
LOG_LENGTH = 1000
MAX_SECRETS = 16
ACTIVATION_SECONDS = 60.0  # well past the followers' second, and a reconnecting node's reload
GENERATED_BYTES = 32


def fingerprint(secret: str) -> str:
    """What names a secret where the secret may not appear (one-way, 64 bits)."""
    return hashlib.sha256(b"trelay fleet secret|" + secret.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class FleetSecret:
    secret: str = field(repr=False)
    added_at: float  # Unix seconds

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.secret)

    def to_json(self) -> str:
        return json.dumps({"secret": self.secret, "added_at": self.added_at})

    @classmethod
    def from_json(cls, text: str) -> FleetSecret:
        data = json.loads(text)
        return cls(str(data["secret"]), float(data["added_at"]))


# --- the operator's writes ---------------------------------------------------------------


async def list_secrets(store: RedisStore) -> list[FleetSecret]:
    """The fleet's secrets, newest first (raises `StoreUnavailable`); malformed ones skipped."""
    stored = await store.call(lambda c: c.hgetall(SECRETS_KEY))
    found: list[FleetSecret] = []
    for name, text in stored.items():
        try:
            found.append(FleetSecret.from_json(str(text)))
        except (ValueError, KeyError, TypeError):
            logger.warning("fleet: skipped the malformed secret entry %s", name)
    return sorted(found, key=lambda s: s.added_at, reverse=True)


async def add_secret(store: RedisStore, now: float) -> FleetSecret:
    """A new generated secret, added at `now`. ValueError when `MAX_SECRETS` are held."""
    held = await store.call(lambda c: c.hlen(SECRETS_KEY))
    if held >= MAX_SECRETS:
        raise ValueError(f"the fleet holds {held} secrets (at most {MAX_SECRETS}): retire one")
    entry = FleetSecret(secrets.token_urlsafe(GENERATED_BYTES), now)
    await store.call(lambda c: c.hset(SECRETS_KEY, {entry.fingerprint: entry.to_json()}))
    await _announce(store, "added", entry.fingerprint)
    return entry


async def retire_secret(store: RedisStore, name: str) -> bool:
    """Remove the secret with fingerprint `name`; False when there is none."""
    removed = await store.call(lambda c: c.hdel(SECRETS_KEY, [name]))
    if removed:
        await _announce(store, "retired", name)
    return bool(removed)


async def _announce(store: RedisStore, change: str, name: str) -> None:
    await store.call(
        lambda c: c.xadd(
            LOG_KEY,
            {"change": change, "fingerprint": name},
            trim_strategy=PureToken.MAXLEN,
            trim_operator=PureToken.APPROXIMATELY,
            threshold=LOG_LENGTH,
        )
    )


# --- a process's copy --------------------------------------------------------------------


class FleetSecrets:
    """The fleet's secrets as this process last read them, and the one to mint under.

    `fallback`: the configured secret, minted under until a fleet secret is active (None:
    static users only, no token API).
    """

    def __init__(
        self,
        fallback: str | None,
        *,
        activation_seconds: float = ACTIVATION_SECONDS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.fallback = fallback
        self.activation_seconds = activation_seconds
        self.wall_clock = wall_clock
        self.held: tuple[FleetSecret, ...] = ()  # newest first

    def use(self, held: Sequence[FleetSecret]) -> None:
        self.held = tuple(sorted(held, key=lambda s: s.added_at, reverse=True)[:MAX_SECRETS])

    def minting_secret(self) -> str:
        """The newest fleet secret older than the activation delay, else the fallback
        (LookupError when there is neither)."""
        now = self.wall_clock()
        for entry in self.held:
            if now - entry.added_at >= self.activation_seconds:
                return entry.secret
        if self.fallback is None:
            raise LookupError("no TURN REST secret to mint under")
        return self.fallback


class SecretFollower:
    """Keeps `cache` current and hands its secrets to `accept` (the node's TURN authentication:
    `SharedSecrets.share`); `trelay.fleet.follow.follow` runs it."""

    log_key = LOG_KEY

    def __init__(
        self,
        store: RedisStore,
        cache: FleetSecrets,
        accept: Callable[[tuple[str, ...]], None] = lambda held: None,
    ) -> None:
        self.store, self.secrets, self.accept = store, cache, accept

    async def reload(self) -> None:
        before = {s.fingerprint for s in self.secrets.held}
        self.secrets.use(await list_secrets(self.store))
        self.accept(tuple(s.secret for s in self.secrets.held))
        now = {s.fingerprint for s in self.secrets.held}
        if now != before:
            logger.info(
                "fleet: %d TURN secret(s) from Redis (fingerprints: %s)",
                len(now), ", ".join(sorted(now)) or "none",
            )  # fmt: skip

    async def apply(self, entries: Sequence[Mapping[str, str]]) -> None:
        # A few secrets at most: reading them all is simpler than applying each change.
        await self.reload()
