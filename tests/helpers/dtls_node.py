"""A TURN node listening for DTLS only (RFC 7350), on loopback, for the DTLS tests.

`dtls_node` starts the node in the test's trio run (alice/wonderland, loopback peers
allowed, `tests.helpers.turn_relay.make_turn_server`) with one DTLS listener on
127.0.0.1 and a free port and no UDP, TCP or TLS, and yields the node, the DTLS address
it bound and the listener's own counts (`DtlsListenerStats`); it stops when the block ends.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from tests.helpers.turn_relay import make_turn_server
from trelay.config.dtls_settings import DtlsSettings
from trelay.config.settings import ListenSettings, Settings, StreamSettings
from trelay.config.values import ListenAddress
from trelay.node.assembly import start_node
from trelay.node.dtls_listener import DtlsListenerStats, serve_dtls
from trelay.node.listeners import Listeners
from trelay.node.turn_node import TurnNode
from trelay.turn.addressing import Address


@dataclass
class DtlsNode:
    node: TurnNode
    dtls: Address
    stats: DtlsListenerStats


@asynccontextmanager
async def dtls_node(
    *, stream: StreamSettings | None = None, dtls: DtlsSettings | None = None
) -> AsyncIterator[DtlsNode]:
    """The node, with the stream (idle timeout) and DTLS (bounds) settings given or defaults."""
    stats = DtlsListenerStats()
    loopback = (ListenAddress("127.0.0.1", 0),)
    settings = Settings(
        listen=ListenSettings(udp=(), tcp=(), tls=(), dtls=loopback),
        stream=stream or StreamSettings(),
        dtls=dtls or DtlsSettings(),
    )
    listeners = Listeners(dtls=functools.partial(serve_dtls, stats=stats))
    async with trio.open_nursery() as nursery:
        running = await start_node(
            nursery, settings, server=make_turn_server(), listeners=listeners
        )
        (bound,) = running.bound.dtls
        yield DtlsNode(running.node, bound, stats)
        nursery.cancel_scope.cancel()
