"""A coturn `turnutils_uclient` call through a running `trelay serve`, with something done
to the node while the call runs (a SIGTERM drain, a SIGHUP reload), and the check that
the call lost nothing.

The call is two uclient sessions relaying to each other through trelay (`-y`), `MESSAGES`
messages of `LENGTH` bytes each; the action runs once trelay's own relayed-datagram
counter says data flows, and the call is awaited to its end. Every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from tests.helpers.supervised import Supervised, poll_until, total
from tests.helpers.turnutils import UclientRun, assert_all_echoed, run_uclient

MESSAGES = 100  # -n per session, at uclient's 20 ms interval: a call of a few seconds
LENGTH = 200
DATAGRAMS = "trelay_relayed_datagrams_total"


async def call_through(
    node: Supervised, action: Callable[[], Awaitable[None]], *, tcp: bool = False
) -> UclientRun:
    """Run a uclient call, `await action()` once data flows, return uclient's run."""
    server = node.addresses("tcp" if tcp else "udp")[0]
    flags = ["-y", "-m", "1", "-c", "-n", str(MESSAGES), "-l", str(LENGTH)]
    if tcp:
        flags.append("-t")
    runs: list[UclientRun] = []

    async def call() -> None:
        runs.append(await trio.to_thread.run_sync(lambda: run_uclient(server, *flags)))

    async def relaying() -> bool:
        return total(await node.metrics(), DATAGRAMS) > 0

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await poll_until(relaying)
        await action()
    [run] = runs
    return run


def assert_no_loss(run: UclientRun) -> None:
    """uclient's closing totals: every message sent came back, nothing lost or dropped."""
    assert_all_echoed(run, 2 * MESSAGES, run.output[-2000:], length=LENGTH)
