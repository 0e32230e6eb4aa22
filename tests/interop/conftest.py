"""A trelay Binding server on loopback for third-party clients, run in a background thread.

Real clients are asyncio (aioice) or separate processes (coturn's tools), so the trio
listeners run in their own thread with `trio.run`; the fixture starts UDP (IPv4, and
IPv6 when the loopback has it), TCP and TLS listeners on port 0 and stops them by
cancelling the thread's nursery from the test thread.

The responder records every source address it answers, so a test can compare what a
client printed with what trelay really saw on the wire.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trio

from relay.frontend import ResponderFrontend
from relay.stream_listener import serve_stream
from relay.tls import context_from_pem, generate_self_signed
from relay.udp_listener import serve_udp
from tests.interop.trio_thread import trio_in_thread
from tests.netutil import ipv6_loopback_works
from turn.binding import BindingResponder, Responder

SOFTWARE = "trelay interop"
STARTUP_TIMEOUT = 10.0


class RecordingResponder:
    """A BindingResponder that remembers the source of every message it is given."""

    def __init__(self, inner: Responder) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._sources: list[tuple[str, int]] = []

    def __call__(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        with self._lock:
            self._sources.append(source)
        return self.inner(data, source)

    def sources(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._sources)

    def clear(self) -> None:
        with self._lock:
            self._sources.clear()


@dataclass
class ThreadedRelay:
    """Where the listeners are, the certificate the TLS one presents, what it saw."""

    udp: tuple[str, int]
    udp6: tuple[str, int] | None
    tcp: tuple[str, int]
    tls: tuple[str, int]
    cert_pem: bytes
    responder: RecordingResponder


@pytest.fixture(scope="module")
def relay() -> Iterator[ThreadedRelay]:
    certificate = generate_self_signed(["127.0.0.1"])
    ssl_context = context_from_pem(certificate)
    responder = RecordingResponder(BindingResponder(SOFTWARE))
    with_ipv6 = ipv6_loopback_works()

    async def start(nursery: trio.Nursery) -> ThreadedRelay:
        frontend = ResponderFrontend(responder)
        udp = await nursery.start(serve_udp, "127.0.0.1", 0, frontend)
        udp6 = await nursery.start(serve_udp, "::1", 0, frontend) if with_ipv6 else None
        tcp = await nursery.start(serve_stream, "127.0.0.1", 0, frontend)

        async def serve_tls(task_status: trio.TaskStatus[tuple[str, int]]) -> None:
            await serve_stream(
                "127.0.0.1", 0, frontend, ssl_context=ssl_context, task_status=task_status
            )

        tls = await nursery.start(serve_tls)
        return ThreadedRelay(udp, udp6, tcp, tls, certificate.cert_pem, responder)

    with trio_in_thread(start, "trelay-interop", STARTUP_TIMEOUT) as running:
        yield running
