"""The TURN core's timer queue: when allocations, permissions and channels run out.

Owns the ordering of expiries (RFC 8656 §7 allocations, §9 permissions, §12 channels) as
data: a heap of (deadline, sequence, kind, allocation, key). Entries are never removed
when a lifetime is refreshed or an allocation ends; the server checks, when an entry
comes due, whether what it names still expires then (a refresh pushes a new entry). That
keeps scheduling O(log n) and refresh free of searches.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from enum import Enum

from trelay.turn.allocation import Allocation


class TimerKind(Enum):
    ALLOCATION = 0
    PERMISSION = 1  # key: the peer IP
    CHANNEL = 2  # key: the channel number


class TimerQueue:
    __slots__ = ("_heap", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerKind, Allocation, object]] = []
        self._sequence = 0  # ties on the deadline keep their scheduling order

    def schedule(
        self, deadline: float, kind: TimerKind, allocation: Allocation, key: object = None
    ) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (deadline, self._sequence, kind, allocation, key))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[tuple[TimerKind, Allocation, object]]:
        """Every entry due at `now`, earliest first (entries may be stale: check them)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, kind, allocation, key = heapq.heappop(heap)
            yield kind, allocation, key
