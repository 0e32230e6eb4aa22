"""Usage records: what each allocation used, per interval, for billing and abuse handling.

Owns `UsageRecord` (one allocation's use over one interval: identity, node and region
when known, client transport, relayed address family, the interval's wall-clock start
and end, datagrams and payload bytes relayed each way, allocation-seconds, and `final`
on the last one), `UsageRecorder` (which meters the live allocations) and the sinks
records go to (`UsageSink`; by default `LogUsageSink`, one JSON-ready log line per
record on the logger `trelay.node.usage`). Issue 12 part 6; design §9.

Invariants:
- Records are deltas: an allocation's records cover back-to-back intervals from its
  creation to its end, and their sums are what its relay counted (`RelaySenders`, the
  session admin's `Traffic`) and how long it lived.
- Every allocation gets exactly one `final` record, whatever ended it (expiry, Refresh
  0, the operator, a drain, its TCP/TLS connection, shutdown): the node calls `ended`
  where it closes the relay socket (`TurnNode._execute`, on `CloseRelay`, which the core
  sends for every end, RFC 8656 §7, §3.1), and the entry is popped there. A node whose
  scope is cancelled without a shutdown ends what is left with final records too
  (`run`'s cleanup).
- A periodic pass (every `interval`) writes one record per live allocation, a chunk of
  `PASS_CHUNK` allocations at a time with a trio checkpoint between chunks, so a node
  with many allocations never stalls its loop; nothing here is on the data path.
- The state is bounded by the live allocations (one small entry each, which the core's
  quotas bound). Sinks are synchronous and never block: a sink that must do I/O queues
  (`trelay.fleet.usage_stream`).
- The log line's fields are the record's, in declaration order (`UsageRecord.as_dict`,
  what `dataclasses.asdict` gave, without its deep copy: one line per allocation, issue
  13 part 4); its format is an interface for consumers and does not change.
- The log sink names the identity as the field `identity`, which `trelay.ops.logs`
  replaces with a keyed `user_ref` unless `log_usernames` allows it (design §6). No
  metric carries an identity.
- `UsageRecorder.counts` (`UsageCounts`) says where the records went: to the log, to the
  fleet's stream (`trelay.fleet.usage_stream` adds those), and how many wait for Redis
  now. It outlives sink swaps (the stream sink takes over and hands the log sink back),
  so `trelay.ops.metrics` reads it at scrape time as `trelay_usage_records_total{sink}`
  and `trelay_usage_queue_records`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Protocol

import trio

from trelay.node.data_path import RelaySenders
from trelay.node.sessions import Traffic
from trelay.turn.addressing import Address
from trelay.turn.allocation import Allocation

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 60.0
# Allocations metered between two checkpoints of a periodic pass.
PASS_CHUNK = 500


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One allocation's use over [start, end] (wall-clock seconds).

    `allocation` is an id unique to the allocation (its records share it) and `seq`
    numbers its records from 0, so a reader can drop a record written twice.
    """

    allocation: str
    seq: int
    identity: str
    node: str | None
    region: str | None
    transport: str  # the client's: udp, tcp, tls, dtls
    family: str  # the relayed address's: ipv4, ipv6
    start: float
    end: float
    client_to_peer_datagrams: int
    client_to_peer_bytes: int
    peer_to_client_datagrams: int
    peer_to_client_bytes: int
    allocation_seconds: float
    final: bool

    def flat(self) -> dict[str, str]:
        """Flat string fields (a Redis stream entry); `None` as an empty string."""
        out: dict[str, str] = {}
        for name, value in self.as_dict().items():
            if value is None:
                out[name] = ""
            elif isinstance(value, bool):
                out[name] = "1" if value else "0"
            elif isinstance(value, float):
                out[name] = repr(round(value, 3))
            else:
                out[name] = str(value)
        return out

    @classmethod
    def from_flat(cls, flat: Mapping[str, str]) -> UsageRecord:
        """The record `flat` made; KeyError or ValueError for an entry that is not one."""
        return cls(
            allocation=flat["allocation"],
            seq=int(flat["seq"]),
            identity=flat["identity"],
            node=flat["node"] or None,
            region=flat["region"] or None,
            transport=flat["transport"],
            family=flat["family"],
            start=float(flat["start"]),
            end=float(flat["end"]),
            client_to_peer_datagrams=int(flat["client_to_peer_datagrams"]),
            client_to_peer_bytes=int(flat["client_to_peer_bytes"]),
            peer_to_client_datagrams=int(flat["peer_to_client_datagrams"]),
            peer_to_client_bytes=int(flat["peer_to_client_bytes"]),
            allocation_seconds=float(flat["allocation_seconds"]),
            final=flat["final"] == "1",
        )

    def as_dict(self) -> dict[str, object]:
        """The fields by name, in declaration order: what `dataclasses.asdict` gives for
        these scalar fields, without its deep copy (a log line per allocation, issue 13)."""
        return dict(zip(RECORD_FIELDS, _record_values(self), strict=True))


RECORD_FIELDS = tuple(f.name for f in fields(UsageRecord))
_record_values = attrgetter(*RECORD_FIELDS)


@dataclass(slots=True)
class UsageCounts:
    """Records written so far, by where they went, and those waiting for Redis now
    (plain ints the sinks add to; read at scrape time)."""

    to_log: int = 0
    to_stream: int = 0
    queued: int = 0


class UsageSink(Protocol):
    """Where records go. `write` never blocks and never raises."""

    def write(self, record: UsageRecord) -> None: ...


class LogUsageSink:
    """One log line per record ("usage record", the record's fields as extras)."""

    def __init__(self, logger: logging.Logger = log, counts: UsageCounts | None = None) -> None:
        self.logger = logger
        self.written = 0
        self.counts = counts  # also counted there (`UsageCounts.to_log`) when given

    def write(self, record: UsageRecord) -> None:
        self.written += 1
        if self.counts is not None:
            self.counts.to_log += 1
        if self.logger.isEnabledFor(logging.INFO):  # no dict for a line that is off
            self.logger.info("usage record", extra=record.as_dict())


@dataclass(slots=True)
class _Metered:
    """A live allocation's entry: what its records so far covered."""

    # 64 random bits, written as 16 hex digits: unique across the fleet's records, and
    # no capability (nobody is let in by it), so Python's generator (seeded from the OS
    # in each process, reseeded in a fork's child) rather than a getrandom call per
    # allocation (1.8% of its CPU in the node, issue 13 part 4).
    allocation: str
    identity: str
    transport: str
    family: str
    senders: RelaySenders
    since_wall: float
    since_clock: float
    reported: Traffic
    seq: int = 0


class UsageRecorder:
    """Meters the node's live allocations and writes their records to `sink`.

    `node_id` and `region` go on every record (None: not known, a node alone). `clock` is
    monotonic (the core's `now`, for allocation-seconds), `wall_clock` stamps intervals.
    `enabled` False: nothing is metered and no record is written.
    """

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        sink: UsageSink | None = None,
        node_id: str | None = None,
        region: str | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.counts = UsageCounts()
        self.sink: UsageSink = LogUsageSink(counts=self.counts) if sink is None else sink
        self.node_id, self.region, self.enabled = node_id, region, enabled
        self.clock, self.wall_clock = clock, wall_clock
        self.records = 0  # written, to whichever sink
        self._live: dict[Address, _Metered] = {}

    def __len__(self) -> int:
        return len(self._live)

    def opened(self, allocation: Allocation, senders: RelaySenders) -> None:
        """Start metering `allocation` (its relay socket is bound, its counters are `senders`)."""
        if not self.enabled:
            return
        relayed = allocation.relayed
        self._live[relayed] = _Metered(
            allocation=f"{random.getrandbits(64):016x}",
            identity=allocation.identity,
            transport=allocation.five_tuple.transport.value,
            family="ipv6" if ":" in relayed[0] else "ipv4",
            senders=senders,
            since_wall=self.wall_clock(),
            since_clock=self.clock(),
            reported=Traffic(),
        )

    def ended(self, relayed: Address) -> None:
        """The allocation relaying on `relayed` ended: its final record (once; no-op after)."""
        entry = self._live.pop(relayed, None)
        if entry is not None:
            self._write(entry, final=True)

    def end_all(self) -> None:
        """Final records for every allocation still metered (the node is stopping)."""
        while self._live:
            self.ended(next(iter(self._live)))

    async def meter_pass(self) -> int:
        """One record for every live allocation, in chunks with checkpoints; how many."""
        written = 0
        entries = list(self._live.items())
        for start in range(0, len(entries), PASS_CHUNK):
            for relayed, entry in entries[start : start + PASS_CHUNK]:
                # It may have ended (its final record written) while this pass waited.
                if self._live.get(relayed) is entry:
                    self._write(entry, final=False)
                    written += 1
            await trio.lowlevel.checkpoint()
        return written

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A pass every `interval` until cancelled; then final records for what is left
        (the node's scope ended without a shutdown ending its allocations)."""
        task_status.started()
        try:
            deadline = trio.current_time()
            while True:
                deadline += self.interval
                await trio.sleep_until(deadline)
                await self.meter_pass()
        finally:
            self.end_all()

    def _write(self, entry: _Metered, *, final: bool) -> None:
        now_wall, now_clock = self.wall_clock(), self.clock()
        total = Traffic.of(entry.senders)
        done = entry.reported
        record = UsageRecord(
            allocation=entry.allocation,
            seq=entry.seq,
            identity=entry.identity,
            node=self.node_id,
            region=self.region,
            transport=entry.transport,
            family=entry.family,
            start=entry.since_wall,
            end=max(now_wall, entry.since_wall),
            client_to_peer_datagrams=total.client_to_peer_datagrams - done.client_to_peer_datagrams,
            client_to_peer_bytes=total.client_to_peer_bytes - done.client_to_peer_bytes,
            peer_to_client_datagrams=total.peer_to_client_datagrams - done.peer_to_client_datagrams,
            peer_to_client_bytes=total.peer_to_client_bytes - done.peer_to_client_bytes,
            allocation_seconds=max(0.0, now_clock - entry.since_clock),
            final=final,
        )
        entry.reported, entry.seq = total, entry.seq + 1
        entry.since_wall, entry.since_clock = record.end, now_clock
        self.records += 1
        try:
            self.sink.write(record)
        except Exception:  # a sink must not raise; if one does, the record is not lost
            log.exception("usage sink failed; the record goes to the log instead")
            LogUsageSink(counts=self.counts).write(record)
