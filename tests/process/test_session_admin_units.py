"""The supervisor's session admin (`WorkerSessionAdmin`) over in-memory control channels:
answers are matched by request id and merged with their worker's index, a listing may
come in chunks, and a worker that is down or does not answer within the bound is named
as unanswered instead of being waited for. A worker's own answers (`session_answers`)
are chunked below the message size limit."""

from __future__ import annotations

import trio
import trio.testing

from trelay.node.sessions import Session, Traffic
from trelay.process.session_admin import WorkerSessionAdmin
from trelay.process.worker import (
    SESSIONS_PER_ANSWER,
    ControlChannel,
    EndSessions,
    SessionsAnswer,
    SessionsRequest,
    session_answers,
)
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.allocation_view import AllocationView

TIMEOUT = 2.0


def session(identity: str, port: int) -> Session:
    five_tuple = FiveTuple(ClientTransport.UDP, ("192.0.2.1", port), ("192.0.2.9", 3478))
    view = AllocationView(
        five_tuple, ("198.51.100.1", port), ("198.51.100.1", port), identity, 1.0, 599.0, 0, 0
    )
    return Session(view, Traffic(1, 2, 3, 4))


def channel_pair() -> tuple[ControlChannel, ControlChannel]:
    supervisor_end, worker_end = trio.testing.memory_stream_pair()
    return ControlChannel(supervisor_end), ControlChannel(worker_end)


async def test_answers_are_merged_and_a_silent_worker_is_named(
    autojump_clock: trio.testing.MockClock,
) -> None:
    (to_0, worker_0), (to_1, worker_1) = channel_pair(), channel_pair()
    # Worker 2 is down (no control channel), worker 1 never answers.
    workers = [(0, to_0), (1, to_1), (2, None)]
    admin = WorkerSessionAdmin(lambda: workers, lambda: None, lambda: False, TIMEOUT)

    async def worker_zero() -> None:
        request = await worker_0.receive()
        assert isinstance(request, SessionsRequest) and request.identity == "alice"
        # In two chunks, after a stale answer to another request (dropped).
        admin.answered(0, SessionsAnswer(request.request_id + 100, (session("x", 9),)))
        admin.answered(0, SessionsAnswer(request.request_id, (session("alice", 1),), last=False))
        admin.answered(0, SessionsAnswer(request.request_id, (session("alice", 2),)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker_zero)
        started = trio.current_time()
        listing = await admin.list_sessions("alice")
        assert trio.current_time() - started == TIMEOUT  # waited for worker 1, no longer
    assert [(e.worker, e.session.view.five_tuple.client[1]) for e in listing.sessions] == [
        (0, 1),
        (0, 2),
    ]
    assert listing.unanswered_workers == (1, 2)
    silent = await worker_1.receive()
    assert isinstance(silent, SessionsRequest)  # it was asked


async def test_ended_counts_add_up_without_waiting_when_all_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pairs = [channel_pair(), channel_pair()]
    admin = WorkerSessionAdmin(
        lambda: [(i, pair[0]) for i, pair in enumerate(pairs)], lambda: None, lambda: False
    )

    async def worker(index: int, ended: int) -> None:
        request = await pairs[index][1].receive()
        assert isinstance(request, EndSessions) and request.identity == "bob"
        admin.answered(index, SessionsAnswer(request.request_id, ended=ended))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, 0, 2)
        nursery.start_soon(worker, 1, 3)
        started = trio.current_time()
        result = await admin.end_sessions(identity="bob")
        assert trio.current_time() - started < TIMEOUT
    assert (result.ended, result.unanswered_workers) == (5, ())


def test_a_worker_chunks_a_long_listing() -> None:
    class Node:
        def sessions(self, identity: str | None) -> list[Session]:
            return [session("alice", port) for port in range(SESSIONS_PER_ANSWER + 1)]

    answers = session_answers(Node(), SessionsRequest(7))  # type: ignore[arg-type]
    assert [(a.request_id, len(a.sessions), a.last) for a in answers] == [
        (7, SESSIONS_PER_ANSWER, False),
        (7, 1, True),
    ]
