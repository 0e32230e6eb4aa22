"""What the request handlers may use of the server: `RequestContext`, built once by it.

Owns the boundary between `trelay.turn.server.TurnServer` and the handlers of the requests
that change allocations, `trelay.turn.allocate` (Allocate, RFC 8656 §7.2) and
`trelay.turn.peer_requests` (CreatePermission §9.2, ChannelBind §11.2). The handlers get the
allocation table (with its relay port pool), the timer queue, the counters, the
configuration, the mobile allocations (RFC 8016, `trelay.turn.mobility`) and the
server's decisions as plain callables; they never see the
server itself, so no handler imports `trelay.turn.server`.

Invariant: the server and its handlers share these very objects for the server's whole
life (the server exposes them read-only). What changes at run time (the peer policy,
whether the server is draining) is passed to each call instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trelay.stun.attributes import Software
from trelay.stun.message import Message
from trelay.turn.actions import Action
from trelay.turn.addressing import FiveTuple
from trelay.turn.allocation_table import AllocationTable
from trelay.turn.config import TurnConfig
from trelay.turn.mobility import MobileAllocations
from trelay.turn.port_pool import RelayPortPool
from trelay.turn.responses import Reply
from trelay.turn.stats import ServerStats
from trelay.turn.timers import TimerQueue

# (request, its 5-tuple, now, the response) -> the actions that send it, the response
# cached for retransmissions (RFC 8489 §6.3.1) and counted.
ReplySender = Callable[[Message, FiveTuple, float, Reply], list[Action]]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The server's state and decisions the request handlers use."""

    config: TurnConfig
    software: Software
    table: AllocationTable
    ports: RelayPortPool | None  # the table's pool; None without a configured range
    timers: TimerQueue
    stats: ServerStats
    reply: ReplySender
    # RFC 8016: the mobile allocations and their tickets; None when mobility is off.
    mobility: MobileAllocations | None = None
    # With `--workers N`: this worker's index, named in its RESERVATION-TOKENs (the first
    # byte, `trelay.turn.reservations.new_token`); None in a single process.
    worker: int | None = None
