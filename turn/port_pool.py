"""The relay port range: which ports are free to give to a new allocation.

Owns the bookkeeping only; binding is the runtime's job. Free ports are handed out in a
shuffled order (so relayed ports are hard to guess, RFC 8656 §7.2 recommends
randomness) and a released port goes to the back of the queue, to be reused once the
others have had their turn. A port the runtime failed to bind (held by another process)
is set aside and tried again only after every other free port.

EVEN-PORT (RFC 8656 §7.2, §14.6): `acquire(even=True)` takes an even port; `acquire_pair`
an even port N whose N+1 is free too, both taken (the R bit: N+1 is reserved, held by a
`trelay.turn.reservations.Reservation` until redeemed or expired).
"""

from __future__ import annotations

import random
from collections import deque


class RelayPortPool:
    """Ports `low`..`high` inclusive; `acquire` returns None when none is free (508)."""

    __slots__ = ("_free", "_in_use", "high", "low")

    def __init__(self, low: int, high: int, rng: random.Random | None = None) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad relay port range {low}-{high}")
        self.low = low
        self.high = high
        ports = list(range(low, high + 1))
        (rng or random.SystemRandom()).shuffle(ports)
        self._free: deque[int] = deque(ports)
        self._in_use: set[int] = set()

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def acquire(self, *, even: bool = False) -> int | None:
        """Take a free port (an even one if asked, RFC 8656 §14.6)."""
        if not self._free:
            return None
        if even:
            for index, port in enumerate(self._free):
                if port % 2 == 0:
                    del self._free[index]
                    self._in_use.add(port)
                    return port
            return None
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def acquire_pair(self) -> int | None:
        """Take an even port N and N+1 (both free, both in the range); None if no pair is."""
        in_use, high = self._in_use, self.high
        for index, port in enumerate(self._free):
            if port % 2 == 0 and port < high and port + 1 not in in_use:
                del self._free[index]
                self._free.remove(port + 1)  # in the range and not in use: it is free
                in_use.add(port)
                in_use.add(port + 1)
                return port
        return None

    def release(self, port: int) -> None:
        """Give a port back once its relay socket is closed (or failed to bind)."""
        if port in self._in_use:
            self._in_use.remove(port)
            self._free.append(port)
