"""Waiting in a test for state a node or listener reaches on its own: `wait_until` polls a
condition, bounded both by a deadline and by a count of polls, and fails if it never holds."""

from __future__ import annotations

from collections.abc import Callable

import trio

TIMEOUT = 20.0
POLL = 0.01


async def wait_until(
    condition: Callable[[], bool], *, limit: float = TIMEOUT, poll: float = POLL
) -> None:
    """Poll `condition()` every `poll` seconds until it holds; AssertionError after `limit` s."""
    with trio.fail_after(limit):
        for _ in range(int(limit / poll) + 1):
            if condition():
                return
            await trio.sleep(poll)
    raise AssertionError("never reached")
