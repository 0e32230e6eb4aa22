"""What serves the session admin routes (`trelay.ops.admin_routes`): one node, or N workers.

Owns the two `SessionAdmin`s a `trelay serve` process can have:

- `NodeSessionAdmin` (one process): lists and ends through its own `TurnNode`
  (`sessions`, `end_sessions`), and starts the drain through its `NodeDrain`, exactly
  as the first SIGTERM does;
- `WorkerSessionAdmin` (the supervisor of `--workers N`): sends every running worker a
  `SessionsRequest` or `EndSessions` over its control channel (`trelay.process.worker`)
  with a fresh `request_id`, collects the `SessionsAnswer`s the supervisor's listener
  hands to `answered`, waits at most `ANSWER_TIMEOUT` seconds, and merges: each session
  tagged with its worker's index, the counts added up, and the workers that did not
  answer in time (or were down) listed as unanswered rather than waited for. The drain
  is the supervisor's (`start_drain` given by `trelay.process.workers`).

Requests are served in the HTTP server's trio loop, the same one that runs the node or
the supervisor, so nothing here locks.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from trelay.node.sessions import Session
from trelay.node.turn_node import TurnNode
from trelay.ops.admin_routes import ListedSession, SessionListing, SessionsEnded
from trelay.process.drain import NodeDrain
from trelay.process.worker import (
    ControlChannel,
    EndSessions,
    SessionsAnswer,
    SessionsRequest,
)
from trelay.turn.addressing import Address

# Long enough for a busy worker's loop to come round, short enough for a CLI user.
ANSWER_TIMEOUT = 2.0
DRAIN_REQUEST = "drain asked over HTTP (POST /v1/drain)"


@dataclass(slots=True)
class NodeSessionAdmin:
    """The admin of a single-process node."""

    node: TurnNode
    drain: NodeDrain

    async def list_sessions(self, identity: str | None) -> SessionListing:
        return SessionListing(tuple(ListedSession(s) for s in self.node.sessions(identity)))

    async def end_sessions(
        self, *, identity: str | None = None, relayed: Address | None = None
    ) -> SessionsEnded:
        return SessionsEnded(self.node.end_sessions(identity=identity, relayed=relayed))

    @property
    def draining(self) -> bool:
        return self.drain.started

    def start_drain(self) -> None:
        # Not a second signal: a repeated request must not cut the calls short.
        self.drain.request(DRAIN_REQUEST, repeat_ends=False)


@dataclass(slots=True)
class _Waiting:
    """One request out to the workers: who must answer, and what came back."""

    expected: set[int]
    sessions: dict[int, list[Session]] = field(default_factory=dict)
    ended: dict[int, int] = field(default_factory=dict)
    complete: set[int] = field(default_factory=set)
    done: trio.Event = field(default_factory=trio.Event)


class WorkerSessionAdmin:
    """The supervisor's admin: asks every worker and merges their answers.

    `controls()`: (worker index, its control channel or None while it is down) of
    every worker;
    `start_drain()`: the supervisor's drain, as its first signal; `draining()`: whether
    it started (or was asked for).
    """

    def __init__(
        self,
        controls: Callable[[], Iterable[tuple[int, ControlChannel | None]]],
        start_drain: Callable[[], object],
        draining: Callable[[], bool],
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self._controls = controls
        self._start_drain = start_drain
        self._draining = draining
        self._timeout = answer_timeout
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiting] = {}

    @property
    def draining(self) -> bool:
        return self._draining()

    def start_drain(self) -> None:
        self._start_drain()

    async def list_sessions(self, identity: str | None) -> SessionListing:
        waiting, unanswered = await self._ask(lambda i: SessionsRequest(i, identity))
        listed = tuple(
            ListedSession(session, worker)
            for worker in sorted(waiting.complete)
            for session in waiting.sessions.get(worker, ())
        )
        return SessionListing(listed, unanswered)

    async def end_sessions(
        self, *, identity: str | None = None, relayed: Address | None = None
    ) -> SessionsEnded:
        if (identity is None) == (relayed is None):
            raise ValueError("give identity or relayed, not both")
        waiting, unanswered = await self._ask(lambda i: EndSessions(i, identity, relayed))
        return SessionsEnded(sum(waiting.ended.values()), unanswered)

    def answered(self, worker: int, answer: SessionsAnswer) -> None:
        """A worker's answer (the supervisor's listener calls this); late ones are dropped."""
        waiting = self._waiting.get(answer.request_id)
        if waiting is None or worker not in waiting.expected:
            return
        waiting.sessions.setdefault(worker, []).extend(answer.sessions)
        waiting.ended[worker] = waiting.ended.get(worker, 0) + answer.ended
        if answer.last:
            waiting.complete.add(worker)
            if waiting.complete >= waiting.expected:
                waiting.done.set()

    async def _ask(
        self, make: Callable[[int], SessionsRequest | EndSessions]
    ) -> tuple[_Waiting, tuple[int, ...]]:
        request_id = next(self._ids)
        workers = list(self._controls())
        running = [(index, control) for index, control in workers if control is not None]
        waiting = self._waiting[request_id] = _Waiting({index for index, _ in running})
        try:
            for _, control in running:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await control.send(make(request_id))
            if not waiting.expected:
                waiting.done.set()
            with trio.move_on_after(self._timeout):
                await waiting.done.wait()
        finally:
            del self._waiting[request_id]
        # A worker that is down, or did not answer in time, is named, not waited for.
        unanswered = tuple(index for index, _ in workers if index not in waiting.complete)
        return waiting, unanswered
