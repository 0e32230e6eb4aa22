"""Whether the far side closed a stream: `closed_by_peer` reads (and discards) what is left
on a trio stream until end-of-stream or a reset, bounded in time and in reads. The node
tests use it to see the node close a TCP connection (RFC 6062 §5.5, an idle timeout, lost
framing)."""

from __future__ import annotations

import trio

READS = 1000  # 64 KiB each: more than any test leaves queued


async def closed_by_peer(stream: trio.abc.Stream, limit: float) -> bool:
    """True once the other side closed (or reset) `stream`; False if it did not in `limit` s."""
    with trio.move_on_after(limit):
        for _ in range(READS):
            try:
                if not await stream.receive_some(65536):
                    return True
            except trio.BrokenResourceError:
                return True
    return False
