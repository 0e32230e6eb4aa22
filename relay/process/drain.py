"""Draining one node when the operator asks: what a process does from SIGTERM to its end.

Owns the operator's side of design §4's drain for a process that runs a `TurnNode` (a
single-process `trelay serve`, or one worker of `trelay serve --workers N`; the
supervisor has its own in `trelay.process.workers`):

- the first request (SIGTERM, SIGINT, a supervisor's `Drain`) turns /readyz 503 at once,
  tells systemd STOPPING=1, and runs `TurnNode.drain` with `[drain] timeout` and
  `[drain] alternate_server`: new Allocates get 300 Try Alternate (or 508), every
  existing allocation keeps relaying, refreshing and binding until it ends or the
  timeout runs out; then the node's scope is cancelled and the process ends (status 0);
- a second signal ends the drain at once (its allocations are closed);
- progress is visible: one log line when the drain starts (allocations left, the
  timeout), one every `DRAIN_PROGRESS_SECONDS` while allocations are left (also as the
  systemd STATUS), and one when it ends, saying why (`DrainEnd`).

Requests are plain method calls, never awaited by the caller: the drain runs in the
node's nursery, so the control channel of a worker and the signal loop keep listening
while it waits (a second signal must get through).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio

from trelay.config.settings import DrainSettings
from trelay.node.turn_node import DRAIN_PROGRESS_SECONDS, TurnNode
from trelay.ops.http_app import NodeStatus
from trelay.process import systemd

logger = logging.getLogger(__name__)

__all__ = ["DRAIN_PROGRESS_SECONDS", "NodeDrain", "draining_status"]


def draining_status(left: int) -> str:
    """The systemd STATUS while draining (`systemctl status` shows it)."""
    return f"STATUS=draining: {left} allocation{'' if left == 1 else 's'} left"


@dataclass(slots=True)
class NodeDrain:
    """Drains `node` once, on the first request; a second request ends it at once.

    `scope` is cancelled when the drain is over (the nursery the node serves in);
    `nursery` is where the drain runs. `notify`: tell systemd (the process systemd
    started; a worker is not).
    """

    node: TurnNode
    status: NodeStatus
    settings: DrainSettings
    scope: trio.CancelScope
    nursery: trio.Nursery
    notify: bool = True
    started: bool = False

    def request(self, why: str, timeout: float | None = None, *, repeat_ends: bool = True) -> None:
        """Start draining (with `timeout`, default the settings'); once started, a repeated
        request ends the drain at once unless `repeat_ends` is False."""
        if not self.started:
            self.started = True
            seconds = self.settings.timeout if timeout is None else timeout
            self.nursery.start_soon(self._run, why, seconds)
        elif repeat_ends:
            logger.info("%s while draining: ending at once", why)
            self.node.end_drain_now()

    async def on_signals(self, signals: AsyncIterator[int]) -> None:
        """The first signal drains, the next one ends the drain at once."""
        async for number in signals:
            self.request(f"{signal.Signals(number).name} received")

    async def _run(self, why: str, seconds: float) -> None:
        self.status.start_draining()  # /readyz 503 before anything else
        left = self.node.server.allocation_count
        logger.info("%s: draining, %d allocations left, timeout %g s", why, left, seconds)
        if self.notify:
            systemd.notify("STOPPING=1", draining_status(left))
        alternate = self.settings.alternate_server
        end = await self.node.drain(
            seconds,
            alternate=None if alternate is None else (alternate.host, alternate.port),
            progress=self._progress,
        )
        logger.info("drain over: %s", end.value)
        self.scope.cancel()

    def _progress(self, left: int) -> None:
        logger.info("draining: %d allocations left", left)
        if self.notify:
            systemd.notify(draining_status(left))
