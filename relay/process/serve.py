"""Serving until a signal: `trelay serve` in one process, or as the supervisor of workers.

Owns what happens between a node being started and the process ending: the operator
HTTP port, readiness, systemd's notifications, and the signals.

- Before anything else binds, the operator HTTP ports are held (`hold_http_ports`): a
  port another process listens on is a `SettingsError` naming `http.listen[i]` (status
  2), not a failure after the relay's own ports are bound. The held sockets (bound,
  never listening, SO_REUSEADDR like hypercorn's) are closed once the HTTP server
  listens on the same ports.
- Once the ready line is out, systemd is told READY=1, and its watchdog (if the unit
  asks for one) is pinged for as long as the trio loop runs.
- With `[fleet]`, the node joins the fleet (`trelay.fleet`, design §9): its Redis store
  and its registry heartbeat run beside it, and its node link (`trelay.fleet.node_link`:
  revocations and TURN secrets followed from Redis); `/readyz` says the store's state
  (`"fleet"`), `trelay_fleet_connected` too, and `trelay_placement_fallbacks_total` counts
  the token API's static answers. Without, nothing touches Redis.
- SIGHUP reloads the settings file (`trelay.process.reload`): what can change live
  applies, the rest is logged as waiting for a restart.
- The session admin routes (`trelay.ops.admin_routes`, with `[http] admin_token_file`)
  list and end allocations; their `POST /v1/drain` starts the drain as a first signal.
- SIGINT and SIGTERM drain the relay (`trelay.process.drain`; with workers,
  `trelay.process.workers`): /readyz 503 at once, new Allocates refused (300 Try
  Alternate or 508), existing allocations relayed until they end or `[drain] timeout`
  runs out; a second signal ends at once. Then every socket is closed and the process
  ends with status 0.

The node itself is built by `trelay.node.assembly`; the workers by
`trelay.process.workers`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Iterator, Sequence
from typing import TextIO

import trio
from starlette.applications import Starlette

from trelay.config.reload import Reload
from trelay.config.settings import Settings
from trelay.config.values import SettingsError
from trelay.fleet.node_link import run_node_link
from trelay.fleet.node_load import turn_node_load
from trelay.fleet.registry import NodeRegistry, NodeView, start_fleet
from trelay.node.assembly import start_node
from trelay.node.listeners import BoundAddresses, HostPort, ListenError
from trelay.ops.admin_routes import admin_routes
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import bind_socket, serve_http
from trelay.ops.logs import start_flushing
from trelay.ops.metrics import (
    FleetCollector,
    PlacementCollector,
    RevocationCollector,
    node_registry,
)
from trelay.ops.operator_routes import operator_routes, start_fleet_api
from trelay.ops.usage_routes import usage_routes
from trelay.process import systemd
from trelay.process.drain import NodeDrain
from trelay.process.ready import announce_ready
from trelay.process.reload import Reloader, SettingsSource, apply_reload
from trelay.process.session_admin import NodeSessionAdmin
from trelay.process.workers import serve_workers

logger = logging.getLogger(__name__)


async def serve_workers_until_signal(
    settings: Settings, source: SettingsSource, stdout: TextIO, stderr: TextIO
) -> None:
    """`serve_until_signal` with `settings.workers` worker processes (`trelay.process.workers`)."""
    with hold_http_ports(settings) as held:

        async def http(nursery: trio.Nursery, app: Starlette) -> list[HostPort]:
            bound = await start_http(nursery, settings, app)
            _close(held)
            return bound

        def announce(bound: BoundAddresses, http_bound: Sequence[HostPort]) -> None:
            announce_ready(settings, bound, stdout, stderr, http_bound)
            systemd.notify("READY=1")

        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
            trio.open_signal_receiver(signal.SIGHUP) as hangups,
        ):
            await serve_workers(
                settings, signals, hangups, source, start_http=http, announce=announce
            )


async def serve_until_signal(
    settings: Settings, source: SettingsSource, stdout: TextIO, stderr: TextIO
) -> None:
    """Start the node, announce readiness, reload on SIGHUP, drain on SIGINT or SIGTERM."""
    with (
        hold_http_ports(settings) as held,
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        trio.open_signal_receiver(signal.SIGHUP) as hangups,
    ):
        async with trio.open_nursery() as nursery:
            running = await start_node(nursery, settings)
            status = NodeStatus()
            drain = NodeDrain(running.node, status, settings.drain, nursery.cancel_scope, nursery)
            nursery.start_soon(drain.on_signals, signals)
            view = NodeView(
                load=lambda: turn_node_load(running.node),
                ready=lambda: status.ready,
                draining=lambda: status.draining,
            )
            fleet = await start_fleet(nursery, settings.fleet, view)
            watch_fleet(status, fleet)
            if fleet is not None:  # usage records name the node as its registry entry does
                running.node.usage.node_id = fleet.node_id
            shared = None if fleet is None else fleet.store
            link = await nursery.start(run_node_link, settings, running, shared)

            async def apply(result: Reload) -> list[str]:
                return apply_reload(running, result)

            reloader = Reloader(settings, source, apply)
            nursery.start_soon(reloader.on_hangups, hangups)
            registry = node_registry(running.node, ready=lambda: status.ready)
            if fleet is not None:
                registry.register(FleetCollector(lambda: fleet.store.connected))
            revocations = running.revocations if link is None else link.revocations
            fleet_api = await start_fleet_api(nursery, settings, fleet, link)
            registry.register(RevocationCollector(lambda: revocations))
            if fleet_api is not None:
                registry.register(PlacementCollector(fleet_api.directory))
            routes = operator_routes(settings, running.bound, revocations, fleet_api)
            admin = NodeSessionAdmin(running.node, drain)
            routes += admin_routes(settings.http.admin_token, admin, reloader.reload)
            routes += usage_routes(
                settings.http.admin_token, None if fleet is None else fleet.store
            )
            app = build_app(status, registry=registry, extra_routes=routes)
            http = await start_http(nursery, settings, app)
            _close(held)
            status.mark_bound()
            announce_ready(settings, running.bound, stdout, stderr, http)
            systemd.notify("READY=1")
            start_flushing(nursery)  # after the start-up lines, in their order
            await nursery.start(systemd.keep_watchdog)


def watch_fleet(status: NodeStatus, fleet: NodeRegistry | None) -> None:
    """Let /readyz say the fleet store's state (a lost Redis leaves the node ready)."""
    if fleet is not None:
        store = fleet.store
        status.fleet = lambda: store.state.value


async def start_http(nursery: trio.Nursery, settings: Settings, app: Starlette) -> list[HostPort]:
    """Start the operator HTTP port(s); a failure to bind is a `ListenError` naming its key."""
    bound: list[HostPort] = []
    for index, address in enumerate(settings.http.listen):
        try:
            bound.append(await nursery.start(serve_http, address.host, address.port, app))
        except OSError as exc:
            raise ListenError(f"http.listen[{index}]", address, exc) from exc
    return bound


@contextlib.contextmanager
def hold_http_ports(settings: Settings) -> Iterator[list[socket.socket]]:
    """Bind every fixed-port `http.listen` address now, before the relay binds anything.

    A port that cannot be bound (another process listens on it, an address this machine
    does not have) is a `SettingsError` naming `http.listen[i]`. The sockets are bound
    with SO_REUSEADDR and never listen, so the HTTP server's own socket binds the same
    port beside them (Linux refuses that only next to a listening socket); they are
    closed on leaving, or earlier by the caller once the server listens. Port 0 needs no
    hold: any free port will do.
    """
    held: list[socket.socket] = []
    try:
        for index, address in enumerate(settings.http.listen):
            if address.port == 0:
                continue
            try:
                held.append(bind_socket(address.host, address.port))
            except OSError as exc:
                problem = f"cannot listen on {address}: {exc.strerror or exc}"
                raise SettingsError(f"http.listen[{index}]", problem) from None
        yield held
    finally:
        _close(held)


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
    sockets.clear()
