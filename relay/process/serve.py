"""Serving until a signal: `trelay serve` in one process, or as the supervisor of workers.

Owns what happens between a node being started and the process ending: the operator
HTTP port, readiness, and the signals. SIGINT and SIGTERM drain the relay (/readyz
answers 503 at once; no new allocations; existing ones get a grace period), then close
every socket. The node itself is built by `trelay.node.assembly`; the workers by
`trelay.process.workers`.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

import trio
from starlette.applications import Starlette

from trelay.config.settings import Settings
from trelay.node.assembly import start_node
from trelay.node.listeners import BoundAddresses, HostPort, ListenError
from trelay.node.turn_node import TurnNode
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http
from trelay.ops.metrics import node_registry
from trelay.ops.operator_routes import operator_routes
from trelay.process.ready import announce_ready
from trelay.process.workers import serve_workers

DRAIN_GRACE_SECONDS = 5.0

logger = logging.getLogger(__name__)


async def serve_workers_until_signal(settings: Settings, stdout: TextIO, stderr: TextIO) -> None:
    """`serve_until_signal` with `settings.workers` worker processes (`trelay.process.workers`)."""

    async def http(nursery: trio.Nursery, app: Starlette) -> list[HostPort]:
        return await start_http(nursery, settings, app)

    def announce(bound: BoundAddresses, http_bound: Sequence[HostPort]) -> None:
        announce_ready(settings, bound, stdout, stderr, http_bound)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        await serve_workers(
            settings, signals, drain_grace=DRAIN_GRACE_SECONDS, start_http=http, announce=announce
        )


async def serve_until_signal(settings: Settings, stdout: TextIO, stderr: TextIO) -> None:
    """Start the node, announce readiness, and stop cleanly on the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = await start_node(nursery, settings)
            status = NodeStatus()
            nursery.start_soon(
                _drain_on_signal, signals, running.node, status, nursery.cancel_scope
            )
            registry = node_registry(running.node, ready=lambda: status.ready)
            routes = operator_routes(settings, running.bound, running.revocations)
            app = build_app(status, registry=registry, extra_routes=routes)
            http = await start_http(nursery, settings, app)
            status.mark_bound()
            announce_ready(settings, running.bound, stdout, stderr, http)


async def start_http(nursery: trio.Nursery, settings: Settings, app: Starlette) -> list[HostPort]:
    """Start the operator HTTP port(s); a failure to bind is a `ListenError` naming its key."""
    bound: list[HostPort] = []
    for index, address in enumerate(settings.http.listen):
        try:
            bound.append(await nursery.start(serve_http, address.host, address.port, app))
        except OSError as exc:
            raise ListenError(f"http.listen[{index}]", address, exc) from exc
    return bound


async def _drain_on_signal(
    signals: AsyncIterator[int], node: TurnNode, status: NodeStatus, scope: trio.CancelScope
) -> None:
    """First signal: not ready any more, no new allocations, the others get a grace period."""
    async for number in signals:
        logger.info("%s received, draining", signal.Signals(number).name)
        status.start_draining()
        await node.drain(DRAIN_GRACE_SECONDS)
        scope.cancel()
        return
