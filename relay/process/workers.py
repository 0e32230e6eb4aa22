"""`trelay serve --workers N`: a supervisor and N worker processes sharing the listen ports.

Owns the multi-core node of design §4. The process the operator started (the supervisor)
serves no TURN itself; it
1. makes every listen address concrete (`trelay.process.listen_reservation`): a plain socket (no
   SO_REUSEPORT) binds it first, so a port in use fails as with one process (a
   `ListenError` naming its key, status 1; SO_REUSEPORT alone would silently share a
   port with a stale trelay of the same user) and a port-0 address gets a port nobody
   holds. Then, per UDP (and DTLS) address, it binds N SO_REUSEPORT sockets, one per worker, and
   keeps them for its whole life; per TCP/TLS address, one SO_REUSEPORT probe (bound,
   never listening) holds the port until the workers listen on it;
2. starts N workers (`python -m trelay.process.worker`: one socketpair each for the messages of
   `trelay.process.worker`, plus the worker's UDP sockets and its ends of the RFC 6062
   handoff channel, `trelay.node.bind_proxy`, inherited) with the settings made
   concrete, each with its own slice of `relay.ports` (`split_port_range`), so two
   workers never bind the same relay port;
3. closes the TCP probes once every worker is bound, then serves the operator HTTP
   port and prints the ready line.

Why the supervisor binds the UDP sockets: when a socket leaves an SO_REUSEPORT group,
Linux moves the group's last socket into its slot, so a worker that died and rebound
would take over a *surviving* worker's clients (their datagrams would reach a process
without their allocation). With the sockets held here the group never changes: a
restarted worker reads the very socket its predecessor did, and no datagram is ever
hashed to a socket nobody will read (there are no UDP probes; what arrives while a
worker restarts waits in its socket's buffer). TCP needs none of this: an accepted
connection stays with the process that accepted it.

HTTP: /metrics sums the workers' latest snapshots (each sends one every second, and the
supervisor asks all of them, waiting at most `REFRESH_TIMEOUT`, before each scrape) plus
the counters of ended workers; per-worker families are labelled `worker="<index>"`
(`trelay.ops.metrics.workers_registry`). /readyz is 200 only while every worker is ready and
the node is not draining. The token API and /selftest are served as with one process.
Without certificate files, one throw-away TLS certificate serves every worker.
With `[fleet]`, the supervisor (never a worker) publishes the node's one registry entry
(`trelay.fleet.registry`) with the load its workers' reports sum (`fleet_view`).

Session admin (`trelay.ops.admin_routes`, with `[http] admin_token_file`): the supervisor
asks every worker for its sessions or to end some (`trelay.process.session_admin`) and
merges the answers, each session tagged with its worker's index. `POST /v1/drain`
starts the drain as the first signal does.

SIGINT/SIGTERM: /readyz turns 503, systemd is told STOPPING=1, and every worker is told
to drain with `[drain] timeout` (`Drain`; as `trelay serve` does: no new allocations, the
others run on until they end or the timeout runs out, then the worker ends). The
supervisor logs the allocations left (from the workers' reports) when the drain starts
and every `DRAIN_PROGRESS_SECONDS` (also as the systemd STATUS), waits for the workers
at most the timeout plus `DRAIN_MARGIN` seconds, stops what is left and ends (status
0), logging why. A second SIGINT/SIGTERM tells every worker to end at once (`Drain(0)`)
and waits at most `STOP_TIMEOUT` more.

A worker that dies unexpectedly is logged, the node is not ready until it is back, and
it is restarted with the same index, sockets and relay port slice after `RESTART_DELAY`
seconds: its allocations are lost either way (its clients get 437 and allocate again),
and a relay that keeps serving everyone else beats one that exits. A worker that dies
`MAX_RAPID_RESTARTS` times in a row, each within `RAPID_SECONDS` of its start, means
something is broken, not bad luck: the supervisor stops every worker and ends with
status 1 (`WorkersFailed`). A worker that fails before it is first bound (bad
certificate, ...) ends the start the same way, with the worker's own one-line error.

Per worker, not per node (each worker has its own core): the quotas (`quotas.user`
allocations per user per worker - with `[fleet]`, per user across every worker of every
node, best effort, `trelay.fleet.quotas` - and `quotas.total` per worker), the
unauthenticated-request rate limit, the response cache and the relay port slice. Nonces
verify on every worker (one nonce key for all, `trelay.process.worker`), and the kernel
keeps a client's 5-tuple on one worker (UDP by hash of the addresses, TCP/TLS by
connection).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from trelay.config.reload import Reload
from trelay.config.revocations import watched_revocations
from trelay.config.settings import ListenSettings, Settings
from trelay.fleet.registry import LoadSample, NodeView, node_id_of, start_fleet
from trelay.node.bind_proxy import handoff_pairs
from trelay.node.listeners import BoundAddresses, HostPort
from trelay.node.tls import generate_self_signed
from trelay.node.turn_node import DRAIN_PROGRESS_SECONDS, DrainEnd
from trelay.ops.admin_routes import admin_routes
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.metrics import (
    FleetCollector,
    NodeSnapshot,
    PlacementCollector,
    RevocationCollector,
    WorkerUsage,
    combine,
    counters_only,
    workers_registry,
)
from trelay.ops.operator_routes import operator_routes, start_fleet_api
from trelay.ops.usage_routes import usage_routes
from trelay.process import systemd
from trelay.process.drain import draining_status
from trelay.process.exit_codes import ExitStatus
from trelay.process.listen_reservation import (
    Reservation,
    close_all,
    reserve_listen_ports,
    worker_settings,
)
from trelay.process.reload import Reloader, SettingsSource, apply_reload
from trelay.process.session_admin import DRAIN_REQUEST, WorkerSessionAdmin
from trelay.process.worker import (
    ControlChannel,
    Drain,
    MovedClient,
    ReportRequest,
    SessionsAnswer,
    StartFailed,
    WorkerAssignment,
    WorkerBound,
    WorkerReport,
)

STARTUP_TIMEOUT = 30.0
REFRESH_TIMEOUT = 0.5
DRAIN_MARGIN = 5.0
RESTART_DELAY = 0.5
RAPID_SECONDS = 10.0
MAX_RAPID_RESTARTS = 5
STOP_TIMEOUT = 5.0
# RFC 8016: how long a moved client's Refresh may wait for its owner's control channel.
PASS_ON_TIMEOUT = 1.0

logger = logging.getLogger(__name__)

StartHttp = Callable[[trio.Nursery, Starlette], Awaitable[list[HostPort]]]
Announce = Callable[[BoundAddresses, Sequence[HostPort]], None]


class WorkersFailed(Exception):
    """The node cannot run: a worker failed to start, or keeps dying. `status` to exit with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- one worker --------------------------------------------------------------------------


@dataclass(slots=True)
class WorkerSlot:
    """Worker `index` across its restarts, as the supervisor sees it."""

    index: int
    settings: Settings
    process: trio.Process | None = None
    control: ControlChannel | None = None
    bound: BoundAddresses | None = None
    first_bound: trio.Event = field(default_factory=trio.Event)
    ready: bool = False
    failure: StartFailed | None = None
    latest: NodeSnapshot | None = None
    retired: NodeSnapshot = field(default_factory=NodeSnapshot)
    cpu_seconds: float = 0.0
    retired_cpu: float = 0.0
    resident_bytes: int = 0
    restarts: int = 0
    fresh: trio.Event = field(default_factory=trio.Event)

    def usage(self) -> WorkerUsage:
        active = 0.0 if self.latest is None else sum(self.latest.allocations_active.values())
        return WorkerUsage(
            self.index, self.ready, active, self.retired_cpu + self.cpu_seconds,
            self.resident_bytes, self.restarts,
        )  # fmt: skip

    def ended(self) -> None:
        """The process is gone: keep its counters (they must not go backwards), not it."""
        if self.latest is not None:
            self.retired = combine((self.retired, counters_only(self.latest)))
        self.retired_cpu += self.cpu_seconds
        self.latest, self.cpu_seconds, self.resident_bytes = None, 0.0, 0
        self.process = self.control = None
        self.ready = False
        self.fresh.set()  # nobody waits for a report from a dead worker


@dataclass(slots=True)
class WorkersStatus(NodeStatus):
    """`NodeStatus`, also not ready while any worker is down."""

    slots: list[WorkerSlot] = field(default_factory=list)

    @property
    def not_ready_reason(self) -> str | None:
        # Explicit base call: zero-argument super() breaks in slotted dataclasses.
        reason: str | None = NodeStatus.not_ready_reason.fget(self)  # type: ignore[attr-defined]
        if reason is not None:
            return reason
        down = [str(slot.index) for slot in self.slots if not slot.ready]
        return f"worker {', '.join(down)} not running" if down else None


class Supervisor:
    def __init__(self, settings: Settings, reservation: Reservation) -> None:
        self.settings = settings
        self.reservation = reservation
        each = worker_settings(settings, reservation.listen)
        self.slots = [WorkerSlot(i, s) for i, s in enumerate(each)]
        self.status = WorkersStatus(slots=self.slots)
        self.nonce_key = secrets.token_bytes(32)
        self.username_key = secrets.token_bytes(32)
        # RFC 6062 across workers (`trelay.node.bind_proxy`): per slot, the AF_UNIX pair
        # other workers hand its data connections through; held for the node's life.
        self.handoffs = handoff_pairs(len(self.slots)) if len(self.slots) > 1 else []
        # POST /v1/drain: the same drain as the first signal (`serve_workers` waits on both).
        self.drain_asked = trio.Event()
        self.sessions = WorkerSessionAdmin(
            lambda: [(slot.index, slot.control) for slot in self.slots],
            self.drain_asked.set,
            lambda: self.status.draining or self.drain_asked.is_set(),
        )

    # --- running workers -------------------------------------------------------------

    async def keep_running(self, slot: WorkerSlot) -> None:
        """Run worker `slot.index`, restarting it when it dies, until the node drains."""
        rapid = 0
        while not self.status.draining:
            started = trio.current_time()
            status = await self.run_once(slot)
            if self.status.draining:
                return
            if not slot.first_bound.is_set():
                failure = slot.failure
                if failure is not None:
                    raise WorkersFailed(failure.status, failure.message)
                raise WorkersFailed(
                    ExitStatus.FAILED, f"worker {slot.index} exited ({status}) before binding"
                )
            rapid = rapid + 1 if trio.current_time() - started < RAPID_SECONDS else 0
            logger.error("worker %d exited unexpectedly (status %s)", slot.index, status)
            if rapid >= MAX_RAPID_RESTARTS:
                raise WorkersFailed(
                    ExitStatus.FAILED, f"worker {slot.index} died {rapid} times in a row"
                )
            await trio.sleep(RESTART_DELAY)
            if self.status.draining:
                return
            slot.restarts += 1
            logger.warning("restarting worker %d (restart %d)", slot.index, slot.restarts)

    async def run_once(self, slot: WorkerSlot) -> int:
        """Start the worker process, serve its messages, return its exit status."""
        parent, child = socket.socketpair()
        udp_fds = self.reservation.udp_fds(slot.index)  # the same numbers in the worker
        handoff_fds = tuple(  # its receiving end, then every slot's sending end
            sock.fileno()
            for sock in [self.handoffs[slot.index][0], *(pair[1] for pair in self.handoffs)]
        ) if self.handoffs else ()  # fmt: skip
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trelay.process.worker", str(child.fileno())],
                pass_fds=(child.fileno(), *udp_fds, *handoff_fds),
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr.fileno(),  # stdout is the supervisor's ready line only
            )
        finally:
            child.close()
        slot.process, slot.control, slot.failure = process, ControlChannel.from_socket(parent), None
        try:
            assignment = WorkerAssignment(
                slot.index, slot.settings, self.nonce_key, self.username_key, udp_fds,
                handoff_fds,
            )  # fmt: skip
            listened = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, slot, slot.control, listened)
                # If it died at once, its exit status says why.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await slot.control.send(assignment)
                status = await process.wait()
                # Its last words (a `StartFailed`) may still be in the socket: read to EOF.
                with trio.move_on_after(STOP_TIMEOUT):
                    await listened.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)
            parent.close()
            slot.ended()
        return status

    async def _listen(
        self, slot: WorkerSlot, control: ControlChannel, listened: trio.Event
    ) -> None:
        async for message in control:
            if isinstance(message, WorkerReport):
                slot.latest, slot.ready = message.snapshot, message.ready
                slot.cpu_seconds, slot.resident_bytes = message.cpu_seconds, message.resident_bytes
                slot.fresh.set()
            elif isinstance(message, WorkerBound):
                slot.bound, slot.ready = message.bound, True
                logger.info("worker %d bound (pid %d)", slot.index, message.pid)
                slot.first_bound.set()
            elif isinstance(message, StartFailed):
                slot.failure = message
            elif isinstance(message, SessionsAnswer):
                self.sessions.answered(slot.index, message)
            elif isinstance(message, MovedClient):
                await self._pass_on(message)
        listened.set()

    async def _pass_on(self, message: MovedClient) -> None:
        """RFC 8016: a worker got a Refresh whose ticket names another: pass it on (a
        worker that is down or slow to read loses it; the client retransmits)."""
        if not 0 <= message.owner < len(self.slots):
            return
        control = self.slots[message.owner].control
        if control is None:
            return
        with (
            trio.move_on_after(PASS_ON_TIMEOUT),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await control.send(message)

    # --- asking the workers ----------------------------------------------------------

    async def refresh(self) -> None:
        """Ask every worker for a report; wait for them at most `REFRESH_TIMEOUT`."""
        waiting: list[trio.Event] = []
        for slot in self.slots:
            if slot.control is None:
                continue
            if slot.fresh.is_set():
                slot.fresh = trio.Event()
            waiting.append(slot.fresh)
            try:
                await slot.control.send(ReportRequest())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                slot.fresh.set()
        with trio.move_on_after(REFRESH_TIMEOUT):
            for event in waiting:
                await event.wait()

    def snapshots(self) -> Iterator[NodeSnapshot]:
        for slot in self.slots:
            yield slot.retired
            if slot.latest is not None:
                yield slot.latest

    def usage(self) -> list[WorkerUsage]:
        return [slot.usage() for slot in self.slots]

    def fleet_view(self) -> NodeView:
        """The node's registry entry as the workers' latest reports sum it (design §9)."""

        def load() -> LoadSample:
            relayed = combine(self.snapshots()).relayed_bytes
            return LoadSample(
                allocations=self.allocations_left(),
                relayed_bytes=int(sum(relayed.values())),
                cpu_seconds=sum(usage.cpu_seconds for usage in self.usage()),
            )

        return NodeView(
            load=load, ready=lambda: self.status.ready, draining=lambda: self.status.draining
        )

    def allocations_left(self) -> int:
        """The allocations of every worker, as their latest reports say."""
        return int(sum(slot.usage().allocations_active for slot in self.slots))

    async def apply_reload(self, result: Reload) -> list[str]:
        """Hand a reload's live part to every worker and keep it for the slots (a worker
        restarted later starts with what is in force); the supervisor's own log level."""
        for slot in self.slots:
            slot.settings = result.onto(slot.settings)
            if slot.control is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await slot.control.send(result)
        return apply_reload(None, result)

    async def drain(self, why: str, signals: AsyncIterator[int] | None = None) -> DrainEnd:
        """Tell every worker to drain; wait for them (bounded); a further signal from
        `signals` ends them at once. Returns why the drain ended."""
        self.status.start_draining()
        timeout = self.settings.drain.timeout
        left = self.allocations_left()
        logger.info(
            "%s: draining %d workers, %d allocations left, timeout %g s",
            why, len(self.slots), left, timeout,
        )  # fmt: skip
        systemd.notify("STOPPING=1", draining_status(left))
        await self._tell_all(Drain(timeout))
        started = trio.current_time()
        ended_now = trio.Event()
        async with trio.open_nursery() as watchers:
            with trio.move_on_after(timeout + DRAIN_MARGIN) as waiting:
                if signals is not None:
                    watchers.start_soon(self._end_now_on, signals, waiting, ended_now)
                watchers.start_soon(self._progress)
                for slot in self.slots:
                    if slot.process is not None:
                        await slot.process.wait()
            watchers.cancel_scope.cancel()
        if ended_now.is_set():
            end = DrainEnd.ENDED_NOW
        elif waiting.cancelled_caught or trio.current_time() - started >= timeout:
            end = DrainEnd.TIMEOUT
        else:
            end = DrainEnd.ALL_ENDED
        logger.info("drain over: %s", end.value)
        return end

    async def _tell_all(self, message: Drain) -> None:
        for slot in self.slots:
            if slot.control is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await slot.control.send(message)

    async def _end_now_on(
        self, signals: AsyncIterator[int], waiting: trio.CancelScope, ended_now: trio.Event
    ) -> None:
        async for number in signals:
            logger.info("%s received while draining: ending at once", signal.Signals(number).name)
            ended_now.set()
            waiting.deadline = min(waiting.deadline, trio.current_time() + STOP_TIMEOUT)
            await self._tell_all(Drain(0.0))

    async def _progress(self) -> None:
        while True:
            await trio.sleep(DRAIN_PROGRESS_SECONDS)
            left = self.allocations_left()
            logger.info("draining: %d allocations left", left)
            systemd.notify(draining_status(left))


async def _stop(process: trio.Process) -> None:
    """Ask a still-running worker to drain (SIGTERM), then kill it; bounded."""
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


class RefreshBeforeScrape:
    """ASGI middleware: before /metrics, fresh reports from the workers."""

    def __init__(self, app: ASGIApp, refresh: Callable[[], Awaitable[None]]) -> None:
        self.app = app
        self.refresh = refresh

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await self.refresh()
        await self.app(scope, receive, send)


# --- the supervisor ----------------------------------------------------------------------


async def serve_workers(
    settings: Settings,
    signals: AsyncIterator[int],
    hangups: AsyncIterator[int],
    source: SettingsSource,
    *,
    start_http: StartHttp,
    announce: Announce,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `settings.workers` workers until the first of `signals`, then drain them;
    reload on each of `hangups`, reading the settings again from `source`."""
    reservation = reserve_listen_ports(settings.listen, settings.workers)
    with tempfile.TemporaryDirectory(prefix="trelay-workers-") as directory:
        try:
            listen = reservation.listen
            settings_for_workers = _shared_certificate(settings, listen, Path(directory))
            if settings.fleet is not None:  # one node id: the supervisor's entry's, for all
                same_id = replace(settings.fleet, node_id=node_id_of(settings.fleet))
                settings_for_workers = replace(settings_for_workers, fleet=same_id)
            supervisor = Supervisor(settings_for_workers, reservation)
            async with trio.open_nursery() as nursery:
                for slot in supervisor.slots:
                    nursery.start_soon(supervisor.keep_running, slot)
                with trio.move_on_after(STARTUP_TIMEOUT) as startup:
                    for slot in supervisor.slots:
                        await slot.first_bound.wait()
                if startup.cancelled_caught:
                    raise WorkersFailed(
                        ExitStatus.FAILED, f"workers not bound within {STARTUP_TIMEOUT:g} s"
                    )
                close_all(reservation.probes)
                bound = supervisor.slots[0].bound
                assert bound is not None
                revocations = await watched_revocations(nursery, settings.auth.revocations_file)
                registry = workers_registry(
                    supervisor.snapshots, supervisor.usage, ready=lambda: supervisor.status.ready
                )
                fleet = await start_fleet(nursery, settings.fleet, supervisor.fleet_view())
                if fleet is not None:
                    store = fleet.store
                    supervisor.status.fleet = lambda: store.state.value
                    registry.register(FleetCollector(lambda: store.connected))
                fleet_api = await start_fleet_api(nursery, settings, fleet, revocations=revocations)
                # The supervisor's copy: it follows the same file and Redis as its workers.
                held = revocations if fleet_api is None else fleet_api.revocations
                registry.register(RevocationCollector(lambda: held))
                if fleet_api is not None:
                    registry.register(PlacementCollector(fleet_api.directory))
                routes = operator_routes(settings, bound, revocations, fleet_api)
                # The operator's settings (not the workers' views, with their ports and a
                # shared throw-away certificate's paths) are what a reload compares with.
                reloader = Reloader(settings, source, supervisor.apply_reload)
                routes += admin_routes(
                    settings.http.admin_token, supervisor.sessions, reloader.reload
                )
                routes += usage_routes(
                    settings.http.admin_token, None if fleet is None else fleet.store
                )
                app = build_app(supervisor.status, registry=registry, extra_routes=routes)
                app.add_middleware(RefreshBeforeScrape, refresh=supervisor.refresh)
                http = await start_http(nursery, app)
                supervisor.status.mark_bound()
                announce(bound, http)
                await nursery.start(systemd.keep_watchdog)
                nursery.start_soon(reloader.on_hangups, hangups)
                task_status.started(supervisor)
                why = await _first_drain_request(signals, supervisor.drain_asked)
                await supervisor.drain(why, signals)
                nursery.cancel_scope.cancel()
        finally:
            reservation.close()


async def _first_drain_request(signals: AsyncIterator[int], asked: trio.Event) -> str:
    """Wait for the first signal or `POST /v1/drain`, whichever comes first; say which.

    `signals` stays usable afterwards: a second signal must still end the drain at once.
    """
    why = "signals closed"
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            nonlocal why
            async for number in signals:
                why = f"{signal.Signals(number).name} received"
                break
            nursery.cancel_scope.cancel()

        async def on_request() -> None:
            nonlocal why
            await asked.wait()
            why = DRAIN_REQUEST
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_signal)
        nursery.start_soon(on_request)
    return why


def _shared_certificate(settings: Settings, listen: ListenSettings, directory: Path) -> Settings:
    """With TLS or DTLS and no certificate files: one throw-away certificate for every
    worker (clients pinning it see the same one whichever worker they reach)."""
    if not (listen.tls or listen.dtls) or not settings.tls.self_signed:
        return settings
    certificate = generate_self_signed([a.host for a in (*listen.tls, *listen.dtls)])
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.cert_pem)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(certificate.key_pem)
    return replace(settings, tls=replace(settings.tls, cert_file=cert, key_file=key))
