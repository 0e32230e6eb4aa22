"""Failed TLS handshakes are counted and logged at a bounded rate, never one traceback each
(`trelay.node.stream_listener.HandshakeFailures`); a node's count reaches its metrics as
`trelay_tls_handshake_failures_total`."""

from __future__ import annotations

import logging
import math

import pytest
import trio

from trelay.config.settings import ListenSettings, Settings
from trelay.config.values import ListenAddress
from trelay.node.assembly import start_node
from trelay.node.frontend import ResponderFrontend
from trelay.node.stream_listener import HandshakeFailures, StreamListenerStats, serve_stream
from trelay.node.tls import context_from_pem, generate_self_signed
from trelay.ops.metrics import node_registry
from trelay.turn.binding import BindingResponder

TIMEOUT = 10
LOGGER = "trelay.node.stream_listener"


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("TLS handshake failed")]


async def not_tls(address: tuple[str, int]) -> None:
    """Connect to a TLS port, send something that is no ClientHello, wait for the close."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
            while await stream.receive_some(4096):
                pass


def test_one_line_per_interval_with_the_count_since_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    failures = HandshakeFailures(interval=10.0)
    error = trio.BrokenResourceError("handshake")
    for second in range(26):  # one failure a second, from 0 to 25
        failures.failed(("192.0.2.7", 40000 + second), error, float(second))
    assert failures.count == 26
    lines = [r.getMessage() for r in failure_lines(caplog)]
    assert lines == [
        "TLS handshake failed: 1 since the last such line (latest from 192.0.2.7:40000: handshake)",
        "TLS handshake failed: 10 since the last such line (latest from 192.0.2.7:40010: "
        "handshake)",
        "TLS handshake failed: 10 since the last such line (latest from 192.0.2.7:40020: "
        "handshake)",
    ]
    assert failures.unlogged == 5  # 21-25: told by the next line, counted already


async def test_the_listener_counts_every_failed_handshake_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    context = context_from_pem(generate_self_signed(["127.0.0.1"]))
    stats = StreamListenerStats()
    # An interval longer than any test: exactly one line, whatever the machine's speed.
    failures = HandshakeFailures(interval=math.inf)
    frontend = ResponderFrontend(BindingResponder("trelay"))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            lambda task_status: serve_stream(
                "127.0.0.1", 0, frontend, ssl_context=context, stats=stats,
                handshake_failures=failures, task_status=task_status,
            )
        )  # fmt: skip
        # The listener counts a failure before it closes the connection, so each one is
        # counted by the time its client sees the close.
        for _ in range(3):
            await not_tls(address)
        nursery.cancel_scope.cancel()
    assert failures.count == stats.tls_handshake_failures == 3
    [line] = failure_lines(caplog)
    assert line.getMessage().startswith("TLS handshake failed: 1 since the last such line")
    assert line.exc_info is None
    assert not [r for r in caplog.records if r.exc_info is not None]


async def test_a_node_exports_its_count() -> None:
    loopback = (ListenAddress("127.0.0.1", 0),)
    settings = Settings(listen=ListenSettings(udp=(), tcp=(), tls=loopback))
    async with trio.open_nursery() as nursery:
        running = await start_node(nursery, settings)
        [tls] = running.bound.tls
        await not_tls(tls)
        node = running.node
        assert node.tls_handshake_failures.count == 1  # counted before the close
        registry = node_registry(node, ready=lambda: True, process=False)
        value = registry.get_sample_value("trelay_tls_handshake_failures_total")
        assert value == 1.0
        nursery.cancel_scope.cancel()
