"""A trelay Binding server on loopback for third-party clients, run in a background thread.

Real clients are asyncio (aioice) or separate processes (coturn's tools), so the trio
listeners run in their own thread with `trio.run`; the fixture starts UDP (IPv4, and
IPv6 when the loopback has it), TCP and TLS listeners on port 0 and stops them by
cancelling the thread's nursery from the test thread.

The responder records every source address it answers, so a test can compare what a
client printed with what trelay really saw on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from tests.helpers.binding_relay import SOFTWARE, RecordingResponder, ThreadedRelay
from tests.helpers.netutil import ipv6_loopback_works
from trelay.icekit.loopback_relay import trio_in_thread
from trelay.node.frontend import ResponderFrontend
from trelay.node.stream_listener import serve_stream
from trelay.node.tls import context_from_pem, generate_self_signed
from trelay.node.udp_listener import serve_udp
from trelay.turn.binding import BindingResponder

STARTUP_TIMEOUT = 10.0


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
