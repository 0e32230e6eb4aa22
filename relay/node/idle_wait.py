"""The data plane's idle wait: while trio has nothing to run, the node waits in the data
plane's epoll set instead of trio's, and relays without a trip through the scheduler.

Owns how a datagram wakes an idle node (design §4, "fewer wakeups"; issue 13 part 3). At
light load every datagram is a wakeup, and through trio one costs: trio's epoll_wait,
waking the data plane's task, one more epoll_wait on the data plane's set, the task's
step, and an epoll_ctl to re-arm the set for the next wait. Measured on a 2-core VM
(a Python echo, one datagram in flight): 52 µs of CPU per echo through trio, 31 µs when
the loop blocks in its own epoll set; coturn's whole relayed datagram costs about 27 µs.

How: an `IdleWait` is a trio `Instrument` whose `before_io_wait(timeout)` runs each time
trio's run loop is about to wait for I/O (timeout 0 when a task is runnable).

- Timeout 0 (trio is busy): one non-blocking pass over the data plane's ready sockets,
  so relaying keeps pace with trio's loop while the node does other work.
- Timeout > 0 (trio idles until its next deadline): block in the data plane's epoll set,
  to which trio's own epoll descriptor is added, and drain ready sockets as datagrams
  come. Return when trio has something to do: its epoll is readable (any other socket,
  a signal, a thread's result, `run_sync_soon`; trio's wait then returns at once), a
  pass made a task runnable, or the next deadline came. In the last two cases trio's
  wait, whose timeout was computed before the hook ran, must not block: the hook wakes
  it through the I/O manager's wakeup socket.

Trio internals read here (nothing public exposes them, trio 0.35): the runner (run
queue, deadlines, clock, idle waiters, guest flag) and the epoll I/O manager (its epoll
object and `force_wakeup`). `IdleWait.claim` returns None when any is missing (logged
once per process as a warning: the node relays on, dearer at light load) or the run is
unusual (guest mode, a clock other than `SystemClock`): the data plane then waits
through trio as before. tests/node/test_idle_wait.py fails when the
installed trio stops offering them, so an upgrade cannot lose the fast path silently.

Invariants:
- One claim per trio run; a second data plane in the same run (tests run several nodes
  in one) waits through trio: two hooks blocking in turn would starve each other. Its
  set is readable through trio's epoll, which is in the claimed set: no starvation.
- No blocking while a task is runnable, a `trio.testing.wait_all_tasks_blocked` waiter
  exists (it needs trio's own wait to time out) or the autojump clock is on.
- An exception from a pass ends the idle wait: it is kept and raised by the data plane's
  task (`ended`); trio would only log it and drop the instrument.
- A pass run from the hook runs outside any task: the data path calls only trio
  functions that need none (reschedule, `start_soon`, `run_sync_soon`, `send_nowait`,
  `current_time`); tests/node/test_idle_wait.py runs the control path through it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Callable
from typing import Any

import trio

# A pass over the data plane's ready sockets: True if a socket had more than a batch.
Pass = Callable[[list[tuple[int, int]]], bool]

# Events taken per poll, as the data plane's own loop (trelay.node.data_plane).
MAX_EVENTS = 1024

_CLAIMED: trio.lowlevel.RunVar[bool] = trio.lowlevel.RunVar("trelay_idle_wait", default=False)
_warned: set[str] = set()  # trio versions warned about: once per process
logger = logging.getLogger(__name__)


def _trio_internals() -> tuple[Any, select.epoll, Callable[[], None]] | None:
    """The runner, its epoll object and its wakeup, if this trio run has the known shape.

    None, quietly, for a run that should not be taken over (guest mode, a clock other
    than the system's); None with one warning per process when this trio lacks what the
    idle wait reads (another version, another I/O manager): the node still relays, each
    wakeup through a task, which costs CPU at light load (design §4)."""
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT, SystemClock  # noqa: PLC0415

        runner = GLOBAL_RUN_CONTEXT.runner
        if runner.is_guest or type(runner.clock) is not SystemClock:
            return None
        io_manager = runner.io_manager
        trio_epoll = io_manager._epoll  # private: see the module docstring
        wake = io_manager.force_wakeup
        _ = (runner.runq, runner.deadlines.next_deadline, runner.waiting_for_idle)
        _ = runner.clock_autojump_threshold
        if not isinstance(trio_epoll, select.epoll):
            raise AttributeError("_epoll")  # one path for every missing piece
    except (ImportError, AttributeError) as exc:
        if trio.__version__ not in _warned:
            _warned.add(trio.__version__)
            logger.warning(
                "data plane: trio %s lacks what the idle wait reads (%s); datagrams wake "
                "a task instead, which costs more CPU at light load",
                trio.__version__, exc,
            )  # fmt: skip
        return None
    return runner, trio_epoll, wake


class IdleWait(trio.abc.Instrument):
    """Trio's idle wait, done in `epoll` (the data plane's set), running `drain` per pass."""

    def __init__(
        self,
        runner: Any,
        trio_epoll: select.epoll,
        wake: Callable[[], None],
        epoll: select.epoll,
        drain: Pass,
    ) -> None:
        self._runner = runner
        self._wake = wake
        self._epoll = epoll
        self._drain = drain
        self._trio_fd = trio_epoll.fileno()
        self._error: BaseException | None = None
        self._ended = trio.Event()
        epoll.register(self._trio_fd, select.EPOLLIN)

    @classmethod
    def claim(cls, epoll: select.epoll, drain: Pass) -> IdleWait | None:
        """Take over trio's idle wait for this run, or None (see the module docstring)."""
        if _CLAIMED.get():
            return None
        internals = _trio_internals()
        if internals is None:
            return None
        idle = cls(*internals, epoll, drain)
        _CLAIMED.set(True)
        trio.lowlevel.add_instrument(idle)
        return idle

    def release(self) -> None:
        """Give trio its wait back (the data plane is ending)."""
        with contextlib.suppress(KeyError):  # trio drops an instrument that raised
            trio.lowlevel.remove_instrument(self)
        _CLAIMED.set(False)
        with contextlib.suppress(OSError, ValueError):  # the set is closed already
            self._epoll.unregister(self._trio_fd)

    async def ended(self) -> None:
        """Wait until a pass fails, and raise what it raised (never returns otherwise)."""
        await self._ended.wait()
        assert self._error is not None
        raise self._error

    def before_io_wait(self, timeout: float) -> None:
        if self._error is not None:
            return
        try:
            self._wait(timeout)
        except BaseException as exc:  # raised by the data plane's task, not lost in trio
            self._error = exc
            self._ended.set()
            self._wake()

    def _wait(self, timeout: float) -> None:
        poll, drain, runner = self._epoll.poll, self._drain, self._runner
        if (
            timeout <= 0
            or runner.runq
            or runner.waiting_for_idle
            or runner.clock_autojump_threshold < timeout
        ):
            drain(poll(0, MAX_EVENTS))
            return
        trio_fd, deadlines, clock = self._trio_fd, runner.deadlines, runner.clock
        end = time.monotonic() + timeout
        while True:
            # Never below 0: epoll.poll reads -1 ms or less as "until an event" (the end
            # may pass before the poll, a thread holding the GIL in between).
            events = poll(max(0.0, end - time.monotonic()), MAX_EVENTS)
            drain(events)
            for fd, _ in events:
                if fd == trio_fd:
                    return  # trio's own wait returns at once with its events
            if not events or runner.runq:
                break  # the deadline came, or a pass made a task runnable
            # A pass may have brought a deadline forward (it never adds a task's own).
            end = min(end, time.monotonic() + deadlines.next_deadline() - clock.current_time())
            if end <= time.monotonic():
                break
        self._wake()
