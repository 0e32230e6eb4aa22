"""The fleet's connection to Redis (coredis on trio), its state and its reconnection.

Owns one coredis client per process (held by `opened`) and what the rest of the node may
know about it: `StoreState` (connecting before the first answer, connected, lost since a
wall-clock time). Every call goes through `RedisStore.call`, bounded by `call_timeout`;
a call that fails or times out marks the store lost and raises `StoreUnavailable`, and
callers carry on without it. While lost, the store probes with PING on a bounded
exponential backoff (`BACKOFF_FIRST` doubling up to `BACKOFF_MAX`) and marks it
connected on the first answer. The transitions are logged once each way, never per
attempt, in a node's words ("relaying goes on, retrying"); a command's store
(`logged=False`, `trelay fleet ...`) logs nothing and words its own one-line error from
`last_failure` (`trelay.process.commands.redis_command`).

With `[fleet] redis_sentinels` the client is the primary that Redis Sentinel names
(`trelay.fleet.redis_client`): a failover is one more loss, and the probe after it finds
the promoted replica. Each loss and each failed probe starts over from a fresh client.

Invariants: nothing on the data path or in TURN authentication calls this; no password
reaches a log line (`where` is host:port, or the Sentinel service and its sentinels).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import StrEnum
from typing import TypeVar

import anyio
import coredis
import trio
from coredis.exceptions import RedisError

from trelay.config.fleet_settings import FleetSettings
from trelay.fleet.redis_client import redis_client

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 2.0
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0

T = TypeVar("T")
Client = coredis.Redis[str]


# What a call that Redis does not answer raises: timeouts, coredis's errors, socket
# errors, and anyio's when the client's connection was closed under the call or, over
# TLS, when the server went away (EndOfStream, BrokenResourceError from the TLS stream).
_FAILURES = (trio.TooSlowError, RedisError, OSError, anyio.ClosedResourceError,
             anyio.EndOfStream, anyio.BrokenResourceError)  # fmt: skip


class StoreState(StrEnum):
    CONNECTING = "connecting"  # configured, no answer yet
    CONNECTED = "connected"
    LOST = "lost"


class StoreUnavailable(Exception):
    """Redis did not answer (in time); the caller goes on without it."""


class RedisStore:
    """The shared store. `opened` holds the client; `call` uses it."""

    def __init__(
        self,
        settings: FleetSettings,
        *,
        call_timeout: float = CALL_TIMEOUT,
        backoff_max: float = BACKOFF_MAX,
        wall_clock: Callable[[], float] = time.time,
        logged: bool = True,
    ) -> None:
        self.settings = settings
        self.logged = logged  # False: a command's store, whose failures are its own line
        self.call_timeout = call_timeout
        self.backoff_max = backoff_max
        self.wall_clock = wall_clock
        self.state = StoreState.CONNECTING
        self.lost_since: float | None = None  # wall-clock seconds, while LOST
        self.failed_probes = 0  # reconnection attempts that failed, for tests and logs
        self.last_failure: str | None = None  # why Redis last failed to answer, if it did
        self.where = settings.redis_where  # host:port, or the Sentinel service: no password
        self._client: Client | None = None
        self._lost = trio.Event()
        self._connected = trio.Event()

    @property
    def connected(self) -> bool:
        return self.state is StoreState.CONNECTED

    async def wait_connected(self) -> None:
        """Return once Redis answers (callers bound the wait)."""
        await self._connected.wait()

    def _new_client(self) -> AbstractAsyncContextManager[Client]:
        # No retries inside coredis: `opened` owns reconnection, and a call must stay bounded.
        return redis_client(self.settings, self.call_timeout)

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[RedisStore]:
        """Hold the client, and keep the state current, for the body's duration. Enters at
        once: nothing waits for Redis to answer. Callers that must still reach Redis while
        stopping (the registry deletes its entry) do it inside the body."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_connected)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    async def _keep_connected(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            # A fresh client after each loss and each failed probe. coredis's pool loses a
            # connection slot to each connect that fails before its connection runs
            # (Sentinel naming no primary, a connect cut short by `call_timeout`), and with
            # its 64 gone would never connect again; and a connection to a primary that
            # Sentinel demoted still answers PING (its writes fail READONLY), where a new
            # one asks the sentinels. Calls in flight on the old client fail, bounded.
            async with self._new_client() as client:
                self._client = client
                try:
                    if await self._probe():
                        backoff = BACKOFF_FIRST
                        # A fresh event: failures seen while lost are behind us.
                        self._lost = trio.Event()
                        await self._lost.wait()
                        continue  # probe again at once, on a fresh client
                finally:
                    self._client = None
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _probe(self) -> bool:
        assert self._client is not None
        try:
            with trio.fail_after(self.call_timeout):
                await self._client.ping()
        except _FAILURES as exc:
            self.failed_probes += 1
            self._mark_lost(exc)
            return False
        self._mark_connected()
        return True

    async def call(self, operation: Callable[[Client], Awaitable[T]]) -> T:
        """Run `operation` on the client within `call_timeout`, or raise `StoreUnavailable`
        (at once while the store is not connected: `opened` is what retries)."""
        client = self._client
        if client is None or not self.connected:
            raise StoreUnavailable(f"Redis at {self.where} is {self.state.value}")
        try:
            with trio.fail_after(self.call_timeout):
                return await operation(client)
        except _FAILURES as exc:
            self._mark_lost(exc)
            raise StoreUnavailable(f"Redis at {self.where}: {_describe(exc)}") from exc
        except RuntimeError as exc:
            if self._client is client:
                raise
            # The client closed under the call (the store is stopping, or reconnecting):
            # coredis says so with a RuntimeError from its exited pool, even inside the
            # shielded part of a pipeline, where cancellation does not reach.
            raise StoreUnavailable(f"Redis at {self.where}: its client closed") from exc

    def _mark_lost(self, exc: BaseException) -> None:
        self.last_failure = _describe(exc)
        if self.state is StoreState.LOST:
            return
        was = self.state
        self.state, self.lost_since = StoreState.LOST, self.wall_clock()
        self._lost.set()
        self._connected = trio.Event()
        if was is StoreState.CONNECTED:
            self._say(logging.WARNING, "fleet: lost Redis at %s (%s); relaying goes on, retrying",
                      self.where, _describe(exc))  # fmt: skip
        else:
            self._say(logging.WARNING,
                      "fleet: cannot reach Redis at %s (%s); relaying goes on, retrying",
                      self.where, _describe(exc))  # fmt: skip

    def _mark_connected(self) -> None:
        if self.state is StoreState.CONNECTED:
            return
        if self.state is StoreState.LOST and self.lost_since is not None:
            away = self.wall_clock() - self.lost_since
            self._say(logging.INFO, "fleet: Redis at %s is back after %.1f s", self.where, away)
        else:
            self._say(logging.INFO, "fleet: connected to Redis at %s", self.where)
        self.state, self.lost_since = StoreState.CONNECTED, None
        self._connected.set()

    def _say(self, level: int, message: str, *args: object) -> None:
        """A transition, in a node's words; a command's store (`logged=False`) says nothing."""
        if self.logged:
            logger.log(level, message, *args)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return str(exc) or type(exc).__name__
