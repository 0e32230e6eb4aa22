"""trelay.ops.log_buffer: a running node's INFO lines wait at most FLUSH_DELAY, in order;
warnings, other threads, a full buffer and the task's end write at once."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trelay.ops.log_buffer import FLUSH_DELAY, MAX_BUFFERED, LogOutput, flush_logs
from trelay.ops.logs import configure_logging, start_flushing


@pytest.fixture
def output() -> Iterator[tuple[LogOutput, io.StringIO, logging.Logger]]:
    """A LogOutput on a StringIO, as the only handler of a logger of its own."""
    out = io.StringIO()
    handler = LogOutput(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test_log_buffer.{id(out)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler, out, logger
    logger.removeHandler(handler)
    handler.close()


Output = tuple[LogOutput, io.StringIO, logging.Logger]


@asynccontextmanager
async def flushing(handler: LogOutput) -> AsyncIterator[None]:
    """A `flush_logs` task for `handler` while the block runs; cancelled at its end."""
    async with trio.open_nursery() as nursery:
        await nursery.start(flush_logs, handler)
        yield
        nursery.cancel_scope.cancel()


def test_without_a_task_every_line_is_written_at_once(output: Output) -> None:
    handler, out, logger = output
    logger.info("one")
    assert out.getvalue() == "INFO one\n"
    assert handler.waiting == 0


async def test_info_lines_wait_at_most_the_delay(
    output: Output, autojump_clock: trio.testing.MockClock
) -> None:
    handler, out, logger = output
    async with flushing(handler):
        logger.info("one")
        logger.debug("two")
        assert out.getvalue() == ""
        assert handler.waiting == 2
        await trio.sleep(FLUSH_DELAY * 0.9)
        assert out.getvalue() == ""
        await trio.sleep(FLUSH_DELAY * 0.2)
        assert out.getvalue() == "INFO one\nDEBUG two\n"
        # The task waits for the next line: another one is held, and written the same way.
        await trio.sleep(10)
        logger.info("three")
        assert out.getvalue().count("\n") == 2
        await trio.sleep(FLUSH_DELAY * 1.5)
        assert out.getvalue().endswith("INFO three\n")


async def test_a_warning_writes_what_waits_first_then_itself(output: Output) -> None:
    handler, out, logger = output
    async with flushing(handler):
        logger.info("before")
        logger.warning("trouble")
        assert out.getvalue() == "INFO before\nWARNING trouble\n"
        assert handler.waiting == 0


async def test_a_full_buffer_is_written_at_once(output: Output) -> None:
    handler, out, logger = output
    line = "x" * 1000
    async with flushing(handler):
        for _ in range(MAX_BUFFERED // 1000 + 1):
            logger.info(line)
        assert handler.waiting == 0
        assert out.getvalue().count(line) == MAX_BUFFERED // 1000 + 1


async def test_lines_from_other_threads_are_written_at_once_after_those_waiting(
    output: Output,
) -> None:
    handler, out, logger = output
    async with flushing(handler):
        logger.info("from trio")
        await trio.to_thread.run_sync(logger.info, "from a thread")
        assert out.getvalue() == "INFO from trio\nINFO from a thread\n"


async def test_the_task_ending_writes_what_waits_and_lines_go_at_once_again(
    output: Output,
) -> None:
    handler, out, logger = output
    async with flushing(handler):
        logger.info("held")
        assert out.getvalue() == ""
    assert out.getvalue() == "INFO held\n"
    logger.info("after")
    assert out.getvalue() == "INFO held\nINFO after\n"


def test_a_broken_stream_drops_the_lines_and_the_caller_goes_on(output: Output) -> None:
    handler, out, logger = output
    out.close()
    logger.info("lost")  # must not raise into the node
    assert handler.waiting == 0


async def test_reconfiguring_hands_the_task_to_the_new_handler(
    root_logging: None, autojump_clock: trio.testing.MockClock
) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "human", stream=first)
    log = logging.getLogger("trelay.test_log_buffer")
    async with trio.open_nursery() as nursery:
        start_flushing(nursery)
        await trio.testing.wait_all_tasks_blocked()
        log.info("to the first")
        assert first.getvalue() == ""
        new = configure_logging("info", "json", stream=second)
        assert "to the first" in first.getvalue()  # written when replaced
        log.info("to the second")
        assert new.waiting == 1 and second.getvalue() == ""
        await trio.sleep(FLUSH_DELAY * 1.5)
        assert '"message": "to the second"' in second.getvalue()
        nursery.cancel_scope.cancel()
    assert new.waiting == 0


async def test_start_flushing_without_configured_logging_starts_nothing(
    root_logging: None,
) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    with trio.fail_after(5):  # a flush task would keep the nursery open until cancelled
        async with trio.open_nursery() as nursery:
            start_flushing(nursery)
