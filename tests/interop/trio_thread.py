"""Run a trio nursery on a background thread, for clients that live in asyncio or elsewhere.

`trio_in_thread(start)` calls `start(nursery)` inside `trio.run` on a daemon thread and
yields what it returns once it has returned (the listeners are bound by then), with
`clock` (a `trio.testing.MockClock`, say) as the loop's clock when given; leaving
the `with` block cancels the nursery and joins the thread. A failure in the thread, at
start-up or later, fails the caller with the thread's exception.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import trio

T = TypeVar("T")
TIMEOUT = 10.0


@contextmanager
def trio_in_thread(
    start: Callable[[trio.Nursery], Awaitable[T]],
    name: str,
    timeout: float = TIMEOUT,
    clock: trio.abc.Clock | None = None,
) -> Iterator[T]:
    # What `start` returned with the loop's token and the nursery's scope, or None on failure.
    started: queue.Queue[tuple[T, trio.lowlevel.TrioToken, trio.CancelScope] | None]
    started = queue.Queue()
    errors: list[BaseException] = []

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            value = await start(nursery)
            started.put((value, trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    def run() -> None:
        try:
            trio.run(serve, clock=clock)
        except BaseException as exc:
            errors.append(exc)
            started.put(None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        up = started.get(timeout=timeout)
    except queue.Empty:
        up = None
    if up is None:
        thread.join(timeout)
        raise RuntimeError(f"the {name} thread did not start: {errors!r}")
    value, token, scope = up
    try:
        yield value
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout)
    assert not thread.is_alive(), f"the {name} thread did not stop"
    assert errors == [], f"the {name} thread failed: {errors!r}"
