"""Buffered log output: while the node runs, its INFO lines leave together, not one
write each.

Owns `LogOutput` (the handler `trelay.ops.logs.configure_logging` installs) and
`flush_logs` (the trio task that empties it). Issue 13 part 4: an allocation writes three
INFO lines (created, ended, its usage record), and their three writes to a file or a
pipe cost about 3% of the node's CPU per allocation (491 against 507 µs in one run of
`benchmarks.relay_vs_coturn --only allocations --rounds 5`); one write per flush costs
nothing measurable.

Rules (the decision, and what it trades):
- Until a `flush_logs` task runs, and after it ends, every line is written at once, as a
  plain `logging.StreamHandler` writes it: start-up, shutdown and the commands other than
  `serve` keep their order with what else they print.
- While it runs, a line from the trio thread below WARNING waits at most `FLUSH_DELAY`
  (50 ms) in memory, and a line at WARNING or above is written at once together with
  every line before it: order is kept, and what an operator must see is never late.
- `MAX_BUFFERED` characters waiting are written at once as well, so a burst of lines
  never holds more than that in memory.
- Lines from other threads (`trio.to_thread`) are written at once, after those waiting:
  the flush task cannot be woken from there.
- What a SIGKILL (an OOM kill) loses is at most the last `FLUSH_DELAY` of INFO lines. An
  exception that ends the process does not lose them: `logging.shutdown`, which Python
  runs at exit, flushes every handler; so does the task's end (drain, cancellation).
- Human lines carry no time of their own: journald stamps them when they arrive, which
  may now be up to `FLUSH_DELAY` late. JSON lines carry their own `ts`.
"""

from __future__ import annotations

import logging
import threading
from typing import TextIO

import trio

FLUSH_DELAY = 0.05  # seconds a line may wait
MAX_BUFFERED = 64 * 1024  # characters waiting before they are written regardless


class _Flusher:
    """What a `flush_logs` task waits on, and the output it empties (which a replaced
    handler hands on, `LogOutput.take_over`)."""

    __slots__ = ("lot", "output", "thread")

    def __init__(self, output: LogOutput, thread: int) -> None:
        self.lot = trio.lowlevel.ParkingLot()
        self.output = output
        self.thread = thread


class LogOutput(logging.StreamHandler[TextIO]):
    """A `StreamHandler` that holds lines while a `flush_logs` task runs (module rules)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._size = 0
        self._flusher: _Flusher | None = None  # set while a flush task runs

    @property
    def waiting(self) -> int:
        """Lines held now."""
        return len(self._lines)

    def emit(self, record: logging.LogRecord) -> None:
        # `Handler.handle` holds `self.lock` here, as `flush` takes it: a flush from the
        # trio thread and a line from another thread never interleave.
        try:
            line = self.format(record) + self.terminator
        except Exception:  # logging's contract: report, never raise
            self.handleError(record)
            return
        flusher = self._flusher
        self._lines.append(line)
        if (
            flusher is None
            or record.levelno >= logging.WARNING
            or threading.get_ident() != flusher.thread
        ):
            self._write_out()
            return
        self._size += len(line)
        if self._size >= MAX_BUFFERED:
            self._write_out()
        elif len(self._lines) == 1:  # the first line since the last flush: wake the task
            flusher.lot.unpark_all()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write_out()

    def _write_out(self) -> None:
        try:
            if self._lines:
                text = "".join(self._lines)
                self._lines.clear()
                self._size = 0
                self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stream must not end the node
            self._lines.clear()
            self._size = 0

    def attach(self, flusher: _Flusher | None) -> None:
        """Hold lines for `flusher`'s task (`flush_logs`), or, with None, write them at once."""
        with self.lock:  # type: ignore[union-attr]
            self._flusher = flusher
            if flusher is None:  # from now on at once: what waits goes first
                self._write_out()
            else:
                flusher.output = self

    def take_over(self, old: LogOutput) -> None:
        """Replace `old` (a new format or level): its waiting lines first, then its task."""
        flusher = old._flusher
        old.attach(None)
        self.attach(flusher)


async def flush_logs(
    output: LogOutput,
    delay: float = FLUSH_DELAY,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hold `output`'s lines while this task runs; write them `delay` after the first."""
    flusher = _Flusher(output, threading.get_ident())
    output.attach(flusher)
    try:
        task_status.started()
        while True:
            await flusher.lot.park()
            await trio.sleep(delay)
            flusher.output.flush()
    finally:
        flusher.output.attach(None)
