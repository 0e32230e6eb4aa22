"""Usage records to the fleet's Redis stream, with a bounded queue and a log fallback.

Owns the Redis side of usage records (issue 12 part 6; design §9):

- `STREAM_KEY` (`trelay:fleet:usage`): one entry per `trelay.node.usage.UsageRecord`,
  its fields flat (`UsageRecord.flat`), added with `XADD … MAXLEN ~ [usage]
  stream_max_entries`, so the stream's length stays bounded (old entries are trimmed;
  readers that bill keep up within that bound). Entry ids are Redis's millisecond
  timestamps of the write: `trelay.ops.usage_routes` sums a time window by them.
- `StreamSink`: the sink a node's `UsageRecorder` writes to while the process is in a
  fleet. `write` only appends to an in-memory queue of at most `[usage]
  queue_max_records` records; beyond it (Redis lost for long) a record is written as a
  log line instead (`LogUsageSink`), counted in `logged_instead`, and said once per
  episode, never dropped silently.
- `run_usage_stream`: takes the recorder's sink over, then writes the queue in batches
  of up to `BATCH` records, one pipelined round trip each, whenever Redis answers;
  while the store is lost it waits for it (`RedisStore.wait_connected`) and the queue
  keeps what comes. On the way out it gives the recorder its previous sink back, tries
  one last bounded write of what is queued (a stopping node's final records), and logs
  what that could not write.

- `sum_usage`: the reader. It sums the records written in a time window (XRANGE by
  entry id, in chunks of `READ_CHUNK`, at most `max_entries` read, `truncated` said),
  grouped by identity and optionally node, region, transport.

Counters: the sink adds to the recorder's `UsageCounts` (`trelay.node.usage`): records
written to the stream (`to_stream`), to the log instead (`to_log`, through its fallback),
and the queue's length now (`queued`), which `trelay.ops.metrics` serves.

Delivery is at least once: a batch whose answer is lost is written again, and the two
copies share `allocation` and `seq`, which `sum_usage` counts once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from coredis.response.types import StreamEntry
from coredis.tokens import PureToken

from trelay.config.settings import Settings
from trelay.config.usage_settings import UsageSettings
from trelay.fleet.store import Client, RedisStore, StoreUnavailable
from trelay.node.assembly import RunningNode
from trelay.node.usage import LogUsageSink, UsageCounts, UsageRecord, UsageSink

logger = logging.getLogger(__name__)

STREAM_KEY = "trelay:fleet:usage"
# Records per pipelined round trip.
BATCH = 200
# How long a stopping process tries to write what is queued before logging it instead.
FINAL_FLUSH_SECONDS = 2.0


class StreamSink:
    """A bounded queue in front of the stream; overflow goes to `fallback` (the log)."""

    def __init__(
        self, max_queued: int, fallback: UsageSink | None = None, counts: UsageCounts | None = None
    ) -> None:
        self.max_queued = max_queued
        # The recorder's, so the counts outlive this sink (metrics read them there).
        self.counts = UsageCounts() if counts is None else counts
        self.fallback: UsageSink = (
            LogUsageSink(counts=self.counts) if fallback is None else fallback
        )
        self.queue: deque[UsageRecord] = deque()
        self.streamed = 0  # records written to the stream
        self.logged_instead = 0  # records that went to the log because the queue was full
        self._overflowing = False
        self._queued = trio.Event()

    def write(self, record: UsageRecord) -> None:
        if len(self.queue) < self.max_queued:
            self.queue.append(record)
            self.counts.queued = len(self.queue)
            self._queued.set()
            return
        if not self._overflowing:
            self._overflowing = True
            logger.warning(
                "fleet: usage queue full (%d records); records go to the log until Redis "
                "takes them",
                self.max_queued,
            )
        self.logged_instead += 1
        self.fallback.write(record)

    async def wait_queued(self) -> None:
        """Return once a record is queued."""
        while not self.queue:
            self._queued = trio.Event()
            await self._queued.wait()

    def batch(self) -> list[UsageRecord]:
        """The oldest records, up to `BATCH`, left queued until `written`."""
        return [self.queue[i] for i in range(min(BATCH, len(self.queue)))]

    def written(self, count: int) -> None:
        for _ in range(count):
            self.queue.popleft()
        self.streamed += count
        self.counts.to_stream += count
        self.counts.queued = len(self.queue)
        if self._overflowing and len(self.queue) < self.max_queued:
            self._overflowing = False
            logger.info("fleet: usage queue draining; records go to Redis again")

    def log_all(self) -> int:
        """Write whatever is queued as log lines (Redis is out of reach for good)."""
        count = len(self.queue)
        while self.queue:
            self.logged_instead += 1
            self.fallback.write(self.queue.popleft())
        self.counts.queued = 0
        return count


async def add_records(store: RedisStore, records: Sequence[UsageRecord], max_entries: int) -> None:
    """XADD each record (MAXLEN ~ `max_entries`) in one pipeline; `StoreUnavailable` if
    Redis does not answer."""

    async def pipelined(client: Client) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.xadd(
                    STREAM_KEY,
                    record.flat(),
                    trim_strategy=PureToken.MAXLEN,
                    threshold=max_entries,
                    trim_operator=PureToken.APPROXIMATELY,
                )

    await store.call(pipelined)


async def run_usage_stream(
    store: RedisStore,
    settings: Settings,
    running: RunningNode,
    *,
    task_status: trio.TaskStatus[StreamSink | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send `running`'s usage records to the stream until cancelled (`started` with the
    sink; None, at once, when `[usage]` is disabled). Never blocks the node."""
    usage = settings.usage
    recorder = running.node.usage
    if not usage.enabled:
        task_status.started(None)
        return
    sink = StreamSink(usage.queue_max_records, counts=recorder.counts)
    previous, recorder.sink = recorder.sink, sink
    try:
        task_status.started(sink)
        await _write_forever(store, sink, usage)
    finally:
        # From now on records go where they went before (the log); what is queued gets
        # one bounded try at Redis, then the log.
        recorder.sink = previous
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + FINAL_FLUSH_SECONDS
            await _flush(store, sink, usage)
        left = sink.log_all()
        if left:
            logger.warning("fleet: %d usage records written to the log: Redis did not take them",
                           left)  # fmt: skip


async def _write_forever(store: RedisStore, sink: StreamSink, usage: UsageSettings) -> None:
    while True:
        await sink.wait_queued()
        await store.wait_connected()
        batch = sink.batch()
        try:
            await add_records(store, batch, usage.stream_max_entries)
        except StoreUnavailable:
            continue  # the store logged it; wait until it is back
        sink.written(len(batch))


async def _flush(store: RedisStore, sink: StreamSink, usage: UsageSettings) -> None:
    while sink.queue and store.connected:
        batch = sink.batch()
        try:
            await add_records(store, batch, usage.stream_max_entries)
        except StoreUnavailable:
            return
        sink.written(len(batch))


# --- reading: sums over a time window (`trelay.ops.usage_routes`) -------------------------

# Entries per XRANGE call, and at most this many read for one sum by default.
READ_CHUNK = 5000
MAX_ENTRIES_READ = 200_000
GROUP_FIELDS = ("identity", "node", "region", "transport")


@dataclass(slots=True)
class UsageTotals:
    """What a group of records adds up to."""

    records: int = 0
    allocations_ended: int = 0  # final records: allocations that ended in the window
    client_to_peer_datagrams: int = 0
    client_to_peer_bytes: int = 0
    peer_to_client_datagrams: int = 0
    peer_to_client_bytes: int = 0
    allocation_seconds: float = 0.0

    def add(self, record: UsageRecord) -> None:
        self.records += 1
        self.allocations_ended += record.final
        self.client_to_peer_datagrams += record.client_to_peer_datagrams
        self.client_to_peer_bytes += record.client_to_peer_bytes
        self.peer_to_client_datagrams += record.peer_to_client_datagrams
        self.peer_to_client_bytes += record.peer_to_client_bytes
        self.allocation_seconds += record.allocation_seconds


@dataclass(slots=True)
class UsageSummary:
    """Sums by group (the values of `by`, in order); `truncated` when `max_entries` were
    read before the window's end; `duplicates`: entries written twice, counted once."""

    by: tuple[str, ...]
    groups: dict[tuple[str | None, ...], UsageTotals] = field(default_factory=dict)
    entries_read: int = 0
    duplicates: int = 0
    unreadable: int = 0
    truncated: bool = False


async def sum_usage(
    store: RedisStore,
    *,
    since_ms: int | None,
    until_ms: int | None,
    by: tuple[str, ...] = ("identity",),
    identity: str | None = None,
    max_entries: int = MAX_ENTRIES_READ,
) -> UsageSummary:
    """Sum the stream's records written in [since_ms, until_ms) (Unix milliseconds, the
    entry ids; None: open), only `identity`'s when given, grouped by `by` (fields of
    `GROUP_FIELDS`). Reads in chunks of `READ_CHUNK` (XRANGE, never KEYS/SCAN), at most
    `max_entries`. Raises `StoreUnavailable`."""
    summary = UsageSummary(by)
    seen: set[str] = set()
    start = "-" if since_ms is None else str(since_ms)
    end = "+" if until_ms is None else f"({until_ms}-0"
    while summary.entries_read < max_entries:
        count = min(READ_CHUNK, max_entries - summary.entries_read)
        entries = await _read(store, start, end, count)
        for entry in entries:
            _add_entry(summary, seen, entry.field_values, identity)
        summary.entries_read += len(entries)
        if len(entries) < count:
            return summary
        start = f"({_text(entries[-1].identifier)}"
    # The bound was hit: truncated unless the window has nothing more.
    summary.truncated = bool(await _read(store, start, end, 1))
    return summary


async def _read(store: RedisStore, start: str, end: str, count: int) -> tuple[StreamEntry, ...]:
    return await store.call(lambda c: c.xrange(STREAM_KEY, start, end, count=count))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _add_entry(
    summary: UsageSummary, seen: set[str], values: Mapping[Any, Any], identity: str | None
) -> None:
    try:
        record = UsageRecord.from_flat({str(k): str(v) for k, v in values.items()})
    except (KeyError, ValueError):
        summary.unreadable += 1  # not a record (written by something else): skipped
        return
    if identity is not None and record.identity != identity:
        return
    once = f"{record.allocation}:{record.seq}"
    if once in seen:
        summary.duplicates += 1
        return
    seen.add(once)
    key = tuple(getattr(record, name) for name in summary.by)
    summary.groups.setdefault(key, UsageTotals()).add(record)
