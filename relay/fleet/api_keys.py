"""API keys known to every API node: held in Redis, merged with the node's keys file.

Owns the fleet's API keys (issue 12 part 5; design §9) and their follower on API nodes:

- Redis layout: the hash `trelay:fleet:api_keys`, field = key SID ("SK" + 32 hex), value
  = JSON {"account": "AC...", "secret": "...", "not_after": <Unix seconds> | null,
  "created_at": <Unix seconds>}. The format and checks are the keys file's
  (`trelay.config.api_keys`: SID and account patterns, secrets of at least 32 bytes), so
  a key means the same wherever it is kept.
- `add_key`, `remove_key`, `list_keys`: the operator's side (`trelay fleet api-key`).
  `add_key` never overwrites a SID (HSETNX).
- `FleetApiKeys`: on an API node, every `refresh_seconds` (3 s) one HGETALL; `current()`
  (synchronous, what the token API reads) is the keys file's keys followed by the Redis
  keys. On a SID in both, the file wins and the clash is logged once per SID. A key
  removed from Redis stops working at the next refresh; while Redis does not answer, the
  last keys read stay in force (a node that loses Redis keeps working from what it has).

Invariants: the cache is bounded (`MAX_KEYS` Redis keys, the rest ignored and logged
once); an entry that does not parse is skipped and logged once (naming its SID, never
its secret); secrets never reach a log line or a `repr`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from trelay.config.api_keys import (
    ACCOUNT_PATTERN,
    MIN_SECRET_BYTES,
    SID_PATTERN,
    ApiKey,
    ApiKeyError,
    ApiKeys,
    new_secret,
    new_sid,
)
from trelay.fleet.store import RedisStore, StoreUnavailable

logger = logging.getLogger(__name__)

API_KEYS_KEY = "trelay:fleet:api_keys"
MAX_KEYS = 10_000
DEFAULT_REFRESH = 3.0


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key as Redis holds it, with when it was added (Unix seconds)."""

    key: ApiKey
    created_at: float | None


def key_json(key: ApiKey, created_at: float) -> str:
    not_after = None if key.not_after is None else key.not_after.timestamp()
    document = {
        "account": key.account,
        "secret": key.secret,
        "not_after": not_after,
        "created_at": created_at,
    }
    return json.dumps(document, separators=(",", ":"))


def parse_stored(sid: str, text: str) -> StoredKey:
    """The key under `sid`; `ApiKeyError` naming the SID (never the secret) if unusable."""
    name = f"{API_KEYS_KEY}[{sid}]"
    if not SID_PATTERN.fullmatch(sid):
        raise ApiKeyError(name, "the field is not 'SK' followed by 32 hex digits")
    try:
        document = json.loads(text)
    except ValueError:
        raise ApiKeyError(name, "not JSON") from None
    if not isinstance(document, dict):
        raise ApiKeyError(name, "not a JSON object")
    account, secret = document.get("account"), document.get("secret")
    if not isinstance(account, str) or not ACCOUNT_PATTERN.fullmatch(account):
        raise ApiKeyError(f"{name}.account", "not 'AC' followed by 32 hex digits")
    if not isinstance(secret, str) or len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ApiKeyError(f"{name}.secret", f"not a string of at least {MIN_SECRET_BYTES} bytes")
    not_after = _time(f"{name}.not_after", document.get("not_after"))
    created = _time(f"{name}.created_at", document.get("created_at"))
    when = None if not_after is None else dt.datetime.fromtimestamp(not_after, dt.UTC)
    return StoredKey(ApiKey(sid, secret, account, when), created)


def _time(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiKeyError(name, "not a number of Unix seconds")
    return float(value)


# --- the operator's side ------------------------------------------------------------------


def check_account(account: str) -> None:
    """An account SID, or `ApiKeyError` naming `--account` (checked before Redis is asked)."""
    if not ACCOUNT_PATTERN.fullmatch(account):
        raise ApiKeyError("--account", f"{account!r} is not 'AC' followed by 32 hex digits")


async def add_key(
    store: RedisStore,
    account: str,
    *,
    secret: str | None = None,
    not_after: dt.datetime | None = None,
    now: float | None = None,
) -> ApiKey:
    """Store a new key (a new SID; `secret` generated when None); returns it."""
    check_account(account)
    if secret is not None and len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ApiKeyError("--secret-file", f"shorter than {MIN_SECRET_BYTES} bytes")
    key = ApiKey(new_sid("SK"), new_secret() if secret is None else secret, account, not_after)
    text = key_json(key, time.time() if now is None else now)
    added = await store.call(lambda c: c.hsetnx(API_KEYS_KEY, key.sid, text))
    if not added:  # 128 random bits clashed: never in practice, but never overwrite
        raise ApiKeyError(key.sid, "a key with this SID exists already")
    return key


async def remove_key(store: RedisStore, sid: str) -> bool:
    """Remove the key `sid`; False if Redis held no such key."""
    removed = await store.call(lambda c: c.hdel(API_KEYS_KEY, [sid]))
    return bool(removed)


async def read_stored(store: RedisStore) -> tuple[list[StoredKey], list[ApiKeyError]]:
    """Every key in Redis (by SID, at most `MAX_KEYS`), and the entries that do not parse."""
    raw = await store.call(lambda c: c.hgetall(API_KEYS_KEY))
    keys: list[StoredKey] = []
    problems: list[ApiKeyError] = []
    for sid in sorted(str(s) for s in raw)[:MAX_KEYS]:
        try:
            keys.append(parse_stored(sid, str(raw[sid])))
        except ApiKeyError as exc:
            problems.append(exc)
    return keys, problems


# --- the API node's side ------------------------------------------------------------------


class FleetApiKeys:
    """The keys an API node accepts: its file's, then the fleet's (`current`)."""

    def __init__(
        self,
        store: RedisStore,
        file_keys: ApiKeys | None,
        *,
        refresh_seconds: float = DEFAULT_REFRESH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.file_keys = file_keys or ApiKeys()
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._merged = self.file_keys
        self._logged: set[str] = set()  # SIDs already logged (clash, bad entry); bounded below
        self.refreshed = 0  # successful reads, for tests

    def current(self) -> ApiKeys:
        return self._merged

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh every `refresh_seconds` while Redis answers, until cancelled."""
        task_status.started()
        while True:
            with trio.move_on_after(self.refresh_seconds):
                await self.store.wait_connected()
            if self.store.connected:
                # The store logged a failure; the last keys stay in force.
                with contextlib.suppress(StoreUnavailable):
                    await self.refresh()
                await trio.sleep(self.refresh_seconds)

    async def refresh(self) -> None:
        stored, problems = await read_stored(self.store)
        for problem in problems:
            self._log_once(problem.key, "fleet: API key %s in Redis ignored: %s", problem.key,
                           problem.problem)  # fmt: skip
        keys = list(self.file_keys)
        for entry in stored:
            sid = entry.key.sid
            if self.file_keys.by_sid(sid) is not None:
                self._log_once(sid, "fleet: API key %s is in the keys file and in Redis: "
                               "the file's is used", sid)  # fmt: skip
                continue
            keys.append(entry.key)
        self._merged = ApiKeys(tuple(keys))
        self.refreshed += 1

    def _log_once(self, sid: str, message: str, *args: object) -> None:
        if sid in self._logged or len(self._logged) >= MAX_KEYS:
            return
        self._logged.add(sid)
        logger.warning(message, *args)
