"""One worker process of a multi-worker node, and the control channel to its supervisor.

Owns the worker's side of `trelay serve --workers N` (design §4, `trelay.process.workers` is the
supervisor): `python -m trelay.process.worker FD` runs one TURN node - its own trio loop,
`trelay.node.turn_node.TurnNode` and the UDP/TCP/TLS/DTLS listeners of its settings on ports
the supervisor chose (UDP and DTLS on sockets the supervisor bound and passed down,
`udp_fds`; TCP and TLS bound here with SO_REUSEPORT) - and no HTTP port. FD is its end
of a socketpair to the supervisor, which carries the messages below: length-prefixed
pickles (both ends are our own processes; nothing else can reach the socketpair).

Supervisor -> worker: `WorkerAssignment` (first, once), then `Drain`, `ReportRequest`,
`Reload`, the session admin's `SessionsRequest` and `EndSessions`, and `MovedClient`s.
Worker -> supervisor: `WorkerBound` once every listener is bound, `WorkerReport` every
`REPORT_INTERVAL` seconds and after each `ReportRequest`, `StartFailed` if the settings
or a listen address fail before binding, `MovedClient` (a request naming another worker:
RFC 8016's Refresh with its ticket, an Allocate with its RESERVATION-TOKEN; the
supervisor passes it on to that worker), and
`SessionsAnswer`s to the session admin's requests (same `request_id`; a listing comes
in chunks of at most `SESSIONS_PER_ANSWER` sessions, the last one marked `last`, so no
message nears `MAX_MESSAGE`).

Invariants:
- The worker drains as `trelay serve` does (`trelay.process.drain`: no new allocations,
  the others run on until they end or the drain timeout runs out, then it ends, status
  0) on the first `Drain` (its timeout is the supervisor's), on SIGTERM (the settings'
  timeout: systemd signals every process of the unit). When the control channel closes
  (its supervisor is gone: a worker never outlives it) it ends at once. While it drains, a
  `Drain` with timeout 0 or another SIGTERM ends it at once (the operator's second
  signal); a repeated `Drain` with a timeout does not. SIGINT is ignored: a Ctrl-C in a
  terminal reaches the whole process group, and the supervisor decides.
- Without shared secrets (static users only) the core's nonce key would be random per
  process; every worker gets the supervisor's `nonce_key` instead, so a nonce minted by
  one worker is accepted by all. With secrets the key is derived from them, as ever.
- A worker watches `auth.secrets_file` and `auth.revocations_file` itself, and with
  `[fleet]` follows the fleet's revocations and secrets in Redis itself
  (`trelay.fleet.node_link`, its own connection), so each worker refuses a revoked
  identity as soon as Redis tells it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from trelay.config.reload import Reload
from trelay.config.settings import Settings
from trelay.config.values import SettingsError
from trelay.fleet.node_link import run_node_link
from trelay.node.assembly import RunningNode, start_node
from trelay.node.bind_proxy import BindProxy, Handoffs
from trelay.node.dtls_listener import serve_dtls
from trelay.node.listeners import BoundAddresses, ListenError, Listeners
from trelay.node.mobility_steering import ClientSteering
from trelay.node.mobility_tickets import SealedTickets
from trelay.node.sessions import Session
from trelay.node.stream_listener import serve_stream
from trelay.node.turn_node import TurnNode
from trelay.node.udp_listener import serve_udp
from trelay.ops.http_app import NodeStatus
from trelay.ops.logs import configure_logging, start_flushing
from trelay.ops.metrics import NodeSnapshot, snapshot
from trelay.process.drain import NodeDrain
from trelay.process.exit_codes import ExitStatus, known_error, status_for
from trelay.process.reload import apply_reload
from trelay.process.reuseport_steering import worker_for
from trelay.turn.addressing import Address, ClientTransport, FiveTuple

REPORT_INTERVAL = 1.0
ASSIGNMENT_TIMEOUT = 30.0
MAX_MESSAGE = 16 * 1024 * 1024
# A pickled `Session` is a few hundred bytes: a chunk stays far below MAX_MESSAGE.
SESSIONS_PER_ANSWER = 2000
# Other workers' clients' requests (`MovedClient`) waiting for the control channel.
MOVED_QUEUE = 64

logger = logging.getLogger(__name__)


def worker_listeners(assignment: WorkerAssignment) -> Listeners:
    """UDP and DTLS on the inherited sockets; TCP and TLS bound here, with SO_REUSEPORT."""
    settings_listen = assignment.settings.listen
    listen = (*settings_listen.udp, *settings_listen.nat, *settings_listen.dtls)
    inherited = {
        (address.host, address.port): fd
        for address, fd in zip(listen, assignment.udp_fds, strict=True)
    }

    async def inherited_socket(host: str, port: int) -> socket.socket:
        sock = socket.socket(fileno=inherited[(host, port)])
        sock.setblocking(False)
        return sock

    return Listeners(
        udp=functools.partial(serve_udp, open_socket=inherited_socket),
        stream=functools.partial(serve_stream, reuse_port=True),
        dtls=functools.partial(serve_dtls, open_socket=inherited_socket),
    )


# --- the messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerAssignment:
    """What a worker serves: its settings (concrete ports, its relay port slice)."""

    index: int
    settings: Settings
    nonce_key: bytes = field(repr=False)
    username_key: bytes = field(repr=False)
    # Inherited UDP sockets (bound by the supervisor), one per `settings.listen.udp`, then
    # one per `settings.listen.nat` (RFC 5780's other addresses), then per `listen.dtls`.
    udp_fds: tuple[int, ...] = ()
    # RFC 6062 across workers (`trelay.node.bind_proxy.Handoffs`): this worker's
    # receiving end of the handoff channel, then every worker's sending end, by index.
    handoff_fds: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop taking allocations, let the others run for up to `timeout` seconds, then end.

    Sent again with timeout 0 while the worker drains: end at once (a second signal).
    """

    timeout: float


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """Send a `WorkerReport` now (a scrape is waiting)."""


@dataclass(frozen=True, slots=True)
class WorkerBound:
    pid: int
    bound: BoundAddresses


@dataclass(frozen=True, slots=True)
class WorkerReport:
    snapshot: NodeSnapshot
    ready: bool
    cpu_seconds: float
    resident_bytes: int


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The one-line error ("<key>: <problem>") and the exit status `trelay` would use."""

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class SessionsRequest:
    """List the worker's live allocations (only `identity`'s when given)."""

    request_id: int
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class EndSessions:
    """End `identity`'s allocations, or the one at `relayed` (`TurnNode.end_sessions`)."""

    request_id: int
    identity: str | None = None
    relayed: Address | None = None


@dataclass(frozen=True, slots=True)
class MovedClient:
    """A request from UDP `client` to this node's `server` address that belongs to worker
    `owner` (`trelay.node.mobility_steering`): RFC 8016's Refresh with its ticket, or an
    Allocate with its RESERVATION-TOKEN. The worker that got it sends it to the
    supervisor, which passes it on to the owner."""

    owner: int
    server: Address
    client: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class SessionsAnswer:
    """The answer to the request `request_id`: a chunk of `sessions` (a listing) or how
    many allocations `ended`; `last` on the final chunk."""

    request_id: int
    sessions: tuple[Session, ...] = ()
    ended: int = 0
    last: bool = True


# `Reload` (trelay.config.reload) carries a settings reload from the supervisor.
Message = (
    WorkerAssignment | Drain | ReportRequest | WorkerBound | WorkerReport | StartFailed | Reload
    | SessionsRequest | EndSessions | SessionsAnswer | MovedClient
)  # fmt: skip
_MESSAGES = (
    WorkerAssignment, Drain, ReportRequest, WorkerBound, WorkerReport, StartFailed, Reload,
    SessionsRequest, EndSessions, SessionsAnswer, MovedClient,
)  # fmt: skip


class ControlChannel:
    """Messages over a stream: a 4-byte big-endian length, then the pickle."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._send_lock = trio.Lock()  # reports and answers come from different tasks

    @classmethod
    def from_socket(cls, sock: socket.socket) -> ControlChannel:
        return cls(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))

    async def send(self, message: Message) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._send_lock:
            await self.stream.send_all(len(data).to_bytes(4) + data)

    async def receive(self) -> Message | None:
        """The next message, or None once the other end has closed."""
        size = await self._read_exactly(4)
        if size is None:
            return None
        length = int.from_bytes(size)
        if length > MAX_MESSAGE:
            raise ValueError(f"control message of {length} bytes")
        data = await self._read_exactly(length)
        if data is None:
            return None
        # Trusted: the other end is our own process, over a socketpair nobody else holds.
        message = pickle.loads(data)  # noqa: S301
        if not isinstance(message, _MESSAGES):
            raise ValueError(f"unexpected control message {type(message).__name__}")
        return message

    async def __aiter__(self) -> AsyncIterator[Message]:
        while (message := await self.receive()) is not None:
            yield message

    async def _read_exactly(self, count: int) -> bytes | None:
        while len(self._buffer) < count:
            try:
                chunk = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not chunk:
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data


# --- the worker --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1 or not arguments[0].isdigit():
        print("usage: python -m trelay.process.worker FD (started by `trelay serve --workers N`)")
        return ExitStatus.BAD_SETTINGS
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Reloads come from the supervisor (a `Reload` message): a SIGHUP sent to every
    # process of the node (`pkill -HUP trelay`) must not end a worker.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return trio.run(run_worker, int(arguments[0]))


async def run_worker(fd: int) -> int:
    control = ControlChannel.from_socket(socket.socket(fileno=fd))
    with trio.fail_after(ASSIGNMENT_TIMEOUT):
        assignment = await control.receive()
    if not isinstance(assignment, WorkerAssignment):
        return ExitStatus.BAD_SETTINGS
    settings = assignment.settings
    configure_logging(
        settings.log_level.logging_level,
        settings.log_format,
        settings.log_usernames,
        username_key=assignment.username_key,
    )
    try:
        await serve_worker(assignment, control)
    except (SettingsError, ListenError, BaseExceptionGroup) as exc:
        known = known_error(exc, (SettingsError, ListenError))
        if known is None:
            raise
        status = status_for(known)
        await control.send(StartFailed(status, str(known)))
        return status
    return ExitStatus.OK


async def serve_worker(assignment: WorkerAssignment, control: ControlChannel) -> None:
    """Serve the assignment until drained; tell the supervisor when bound, and report."""
    settings = assignment.settings
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = await start_node(
                nursery,
                settings,
                nonce_key=assignment.nonce_key,
                listeners=worker_listeners(assignment),
                worker=assignment.index,
            )
            await nursery.start(run_node_link, settings, running)
            node, status = running.node, NodeStatus()
            draining = NodeDrain(
                node, status, settings.drain, nursery.cancel_scope, nursery, notify=False
            )
            nursery.start_soon(draining.on_signals, signals)
            status.mark_bound()
            logger.info("worker %d (pid %d) ready", assignment.index, os.getpid())
            await control.send(WorkerBound(os.getpid(), running.bound))
            start_flushing(nursery)
            nursery.start_soon(_report_every, control, node, status)
            node.steering = _steering(assignment, node, nursery, control)
            if assignment.handoff_fds:  # RFC 6062: ConnectionBinds for other workers
                node.bind_proxy = BindProxy(
                    assignment.index, Handoffs.from_fds(assignment.handoff_fds)
                )
                nursery.start_soon(node.bind_proxy.serve, node)
            nursery.start_soon(_obey, control, running, status, draining)


async def _obey(
    control: ControlChannel, running: RunningNode, status: NodeStatus, draining: NodeDrain
) -> None:
    async for message in control:
        if isinstance(message, ReportRequest):
            await control.send(report(running.node, status))
        elif isinstance(message, Reload):
            apply_reload(running, message)
        elif isinstance(message, MovedClient):  # a client of ours, from a new address
            five_tuple = FiveTuple(ClientTransport.UDP, message.client, message.server)
            running.node.take_moved_client(five_tuple, message.data)
        elif isinstance(message, SessionsRequest | EndSessions):
            for answer in session_answers(running.node, message):
                await control.send(answer)
        elif isinstance(message, Drain):
            # Never awaited: the drain runs in the node's nursery while this loop goes
            # on answering (reports, and a second `Drain` that ends it at once).
            draining.request(
                "drain asked by the supervisor", message.timeout, repeat_ends=message.timeout <= 0
            )
    # Nobody is left to serve /readyz or to stop this worker: its calls end now, and no
    # orphan keeps a share of the listen ports from a restarted node.
    draining.request("supervisor gone", 0.0)


def _steering(
    assignment: WorkerAssignment, node: TurnNode, nursery: trio.Nursery, control: ControlChannel
) -> ClientSteering | None:
    """Requests of another worker's clients (`trelay.node.mobility_steering`): Refreshes
    with its ticket (RFC 8016), Allocates with its RESERVATION-TOKEN, go to the supervisor
    (at most `MOVED_QUEUE` waiting; more are dropped, as a datagram would be, and the
    client retransmits)."""
    workers, index = assignment.settings.workers, assignment.index
    if workers < 2:
        return None
    tickets = node.server.tickets
    sealed = tickets if isinstance(tickets, SealedTickets) else None
    outgoing, waiting = trio.open_memory_channel[MovedClient](MOVED_QUEUE)

    def forward(owner: int, five_tuple: FiveTuple, data: bytes) -> None:
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
            outgoing.send_nowait(MovedClient(owner, five_tuple.server, five_tuple.client, data))

    async def send_moved() -> None:
        async for message in waiting:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await control.send(message)

    nursery.start_soon(send_moved)
    return ClientSteering(
        index, workers, sealed, lambda client: worker_for(client, workers) != index, forward
    )


async def _report_every(control: ControlChannel, node: TurnNode, status: NodeStatus) -> None:
    while True:
        try:
            await control.send(report(node, status))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the supervisor is gone; `_obey` drains
        await trio.sleep(REPORT_INTERVAL)


def session_answers(node: TurnNode, request: SessionsRequest | EndSessions) -> list[SessionsAnswer]:
    """What the worker answers a session admin request with (at least one message)."""
    if isinstance(request, EndSessions):
        ended = node.end_sessions(identity=request.identity, relayed=request.relayed)
        return [SessionsAnswer(request.request_id, ended=ended)]
    sessions = node.sessions(request.identity)
    chunks = [
        tuple(sessions[start : start + SESSIONS_PER_ANSWER])
        for start in range(0, len(sessions), SESSIONS_PER_ANSWER)
    ] or [()]
    return [
        SessionsAnswer(request.request_id, chunk, last=index == len(chunks) - 1)
        for index, chunk in enumerate(chunks)
    ]


def report(node: TurnNode, status: NodeStatus) -> WorkerReport:
    return WorkerReport(snapshot(node), status.ready, time.process_time(), resident_bytes())


def resident_bytes() -> int:
    """This process's resident set size (Linux /proc); 0 where that is not available."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    # Run the imported module, not `__main__`: the messages must unpickle as (and be
    # checked against) trelay.process.worker's classes.
    from trelay.process.worker import main as worker_main

    sys.exit(worker_main())
