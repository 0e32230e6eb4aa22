"""Usage records without a fleet: one JSON log line per record on `trelay.node.usage`,
with the identity as `trelay.ops.logs` treats it; a periodic pass over many allocations
lets other tasks run between its chunks; flat fields round-trip."""

from __future__ import annotations

import io
import json
import logging

import pytest
import trio

from trelay.node.data_path import RelaySenders
from trelay.node.usage import PASS_CHUNK, LogUsageSink, UsageRecord, UsageRecorder
from trelay.ops.logs import configure_logging
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.allocation import Allocation

RECORD = UsageRecord(
    allocation="0123456789abcdef", seq=3, identity="alice", node="fra-1", region=None,
    transport="tls", family="ipv6", start=1_700_000_000.25, end=1_700_000_060.5,
    client_to_peer_datagrams=7, client_to_peer_bytes=700, peer_to_client_datagrams=9,
    peer_to_client_bytes=900, allocation_seconds=60.25, final=True,
)  # fmt: skip


def allocation(index: int, identity: str = "alice") -> Allocation:
    five_tuple = FiveTuple(ClientTransport.UDP, ("192.0.2.1", 1000 + index), ("192.0.2.9", 3478))
    relayed = ("198.51.100.1", 20000 + index)
    return Allocation(five_tuple, relayed, relayed, identity, identity, b"k" * 16, 600.0)


def sender() -> RelaySenders:
    return RelaySenders(lambda data, peer: 0)


def test_flat_fields_round_trip() -> None:
    flat = RECORD.flat()
    assert all(isinstance(v, str) for v in flat.values())
    assert flat["region"] == "" and flat["final"] == "1"
    assert UsageRecord.from_flat(flat) == RECORD


@pytest.mark.parametrize("show", [False, True])
def test_one_json_line_per_record(show: bool) -> None:
    out = io.StringIO()
    handler = configure_logging("info", "json", show, stream=out)
    try:
        LogUsageSink().write(RECORD)
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = out.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["logger"], entry["message"]) == ("trelay.node.usage", "usage record")
    assert entry["peer_to_client_bytes"] == 900 and entry["final"] is True
    assert entry["node"] == "fra-1" and entry["allocation_seconds"] == 60.25
    if show:
        assert entry["identity"] == "alice"
    else:  # log_usernames off: a keyed reference, never the identity
        assert "identity" not in entry and len(entry["user_ref"]) == 10
        assert "alice" not in line


async def test_the_default_sink_logs(caplog: pytest.LogCaptureFixture) -> None:
    recorder = UsageRecorder()
    recorder.opened(allocation(0), sender())
    with caplog.at_level(logging.INFO, logger="trelay.node.usage"):
        recorder.ended(("198.51.100.1", 20000))
    [line] = [r for r in caplog.records if r.name == "trelay.node.usage"]
    assert line.__dict__["final"] is True and line.__dict__["identity"] == "alice"


async def test_disabled_records_nothing() -> None:
    recorder = UsageRecorder(enabled=False)
    recorder.opened(allocation(0), sender())
    recorder.ended(("198.51.100.1", 20000))
    assert await recorder.meter_pass() == 0
    assert recorder.records == 0


async def test_a_pass_over_many_allocations_yields_between_chunks() -> None:
    count = PASS_CHUNK * 4 + 1
    ticks = 0
    seen: list[int] = []

    class Sink:
        def write(self, record: UsageRecord) -> None:
            seen.append(ticks)

    recorder = UsageRecorder(sink=Sink())
    for index in range(count):
        recorder.opened(allocation(index), sender())
    done = trio.Event()

    async def other_task() -> None:
        nonlocal ticks
        for _ in range(10 * count):  # bounded
            if done.is_set():
                return
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        assert await recorder.meter_pass() == count
        done.set()
    assert len(seen) == count
    # The other task ran while the pass went on, never within one chunk.
    chunks = [seen[i : i + PASS_CHUNK] for i in range(0, count, PASS_CHUNK)]
    assert all(len(set(chunk)) == 1 for chunk in chunks)
    assert seen == sorted(seen) and seen[-1] > seen[0]


async def test_an_allocation_ended_during_a_pass_gets_no_record_after_its_final() -> None:
    captured: list[UsageRecord] = []
    last = ("198.51.100.1", 20000 + PASS_CHUNK)

    class Sink:
        def write(self, record: UsageRecord) -> None:
            captured.append(record)
            if record.identity == "user0" and not record.final:
                recorder.ended(last)  # while the pass is on its first chunk

    recorder = UsageRecorder(sink=Sink())
    for index in range(PASS_CHUNK + 1):
        recorder.opened(allocation(index, f"user{index}"), sender())
    assert await recorder.meter_pass() == PASS_CHUNK
    theirs = [r for r in captured if r.identity == f"user{PASS_CHUNK}"]
    assert [r.final for r in theirs] == [True]
    assert len(captured) == PASS_CHUNK + 1
