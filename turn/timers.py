"""The TURN core's timer queue: when allocations, permissions, channels and port
reservations run out.

Owns the ordering of expiries (RFC 8656 §7 allocations, §9 permissions, §12 channels,
§7.2 the 30 s of a port reservation) as data: a heap of (deadline, sequence, kind,
owner, key), the owner an allocation or a reservation (`trelay.turn.reservations`).

Each timed thing (an allocation, one of its permissions, one of its channels) has at most
one live entry, recorded per allocation (`_live`), so the queue grows with live state and
never with requests (issue 15: every Refresh, and every peer of every CreatePermission,
used to push an entry that stayed until its deadline, up to an hour later):

- a refresh that extends a lifetime pushes nothing: the earlier entry comes due first,
  the server sees that the thing lives on and schedules it again at its real expiry;
- a refresh that shortens a lifetime pushes an earlier entry; the later one is stale;
- `cancel` forgets an ended allocation's entries (and so the allocation itself).

Stale entries are skipped when they come due, and the heap is rebuilt without them once
they outnumber the live ones (amortised O(1) per schedule), so its length is at most
twice the live entries plus `_SLACK`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from trelay.turn.allocation import Allocation
from trelay.turn.identity_enum import IdentityEnum
from trelay.turn.reservations import Reservation


class TimerKind(IdentityEnum):
    ALLOCATION = 0
    PERMISSION = 1  # key: the peer IP
    CHANNEL = 2  # key: the channel number
    RESERVATION = 3  # owner: a Reservation, key None


# What a timer entry belongs to; `cancel` forgets all of one owner's entries.
Owner = Allocation | Reservation


# Stale entries tolerated beyond the live ones before the heap is rebuilt: keeps a small
# queue from being rebuilt at every other schedule.
_SLACK = 64

_Entry = tuple[float, int, TimerKind, Owner, object]


class TimerQueue:
    __slots__ = ("_heap", "_live", "_live_count", "_sequence")

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        # owner -> (kind, key) -> (deadline, sequence) of its one live heap entry.
        self._live: dict[Owner, dict[tuple[TimerKind, object], tuple[float, int]]] = {}
        self._live_count = 0
        self._sequence = 0  # ties on the deadline keep their scheduling order

    def schedule(
        self, deadline: float, kind: TimerKind, allocation: Owner, key: object = None
    ) -> None:
        """Make sure an entry for (`allocation`, `kind`, `key`) comes due by `deadline`."""
        timers = self._live.setdefault(allocation, {})
        live = timers.get((kind, key))
        if live is not None and live[0] <= deadline:
            return  # it comes due first; the server schedules the rest then
        if live is None:
            self._live_count += 1
        self._sequence += 1
        timers[kind, key] = (deadline, self._sequence)
        heapq.heappush(self._heap, (deadline, self._sequence, kind, allocation, key))
        if len(self._heap) > 2 * self._live_count + _SLACK:
            self._compact()

    def cancel(self, allocation: Owner) -> None:
        """Forget every entry of `allocation` (it ended, or the reservation was
        redeemed): none of them comes due."""
        timers = self._live.pop(allocation, None)
        if timers is not None:
            self._live_count -= len(timers)

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[tuple[TimerKind, Owner, object]]:
        """Every live entry due at `now`, earliest first. What it names may have been
        extended since it was scheduled, or removed: the caller checks and schedules
        again what lives on."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, sequence, kind, allocation, key = heapq.heappop(heap)
            timers = self._live.get(allocation)
            live = None if timers is None else timers.get((kind, key))
            if live is None or live[1] != sequence:
                continue  # stale: superseded by an earlier entry, or cancelled
            assert timers is not None
            del timers[kind, key]
            if not timers:
                del self._live[allocation]
            self._live_count -= 1
            yield kind, allocation, key

    def _compact(self) -> None:
        """Rebuild the heap from its live entries only."""
        live = self._live
        # In place: `pop_due` may be iterating over this very list.
        self._heap[:] = [
            entry
            for entry in self._heap
            if (timers := live.get(entry[3])) is not None
            and timers.get((entry[2], entry[4]), (0.0, -1))[1] == entry[1]
        ]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        """Entries in the heap, stale ones included."""
        return len(self._heap)

    @property
    def live(self) -> int:
        """Things with a live entry."""
        return self._live_count

    @property
    def owners(self) -> int:
        """Allocations with at least one live entry."""
        return len(self._live)
