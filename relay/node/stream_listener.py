"""The TCP and TLS listener: one task per connection, frames in, replies out in order.

Owns STUN over TCP and TLS (RFC 8489 §6.2.2, §6.2.3) on the server side: accepting
connections (TLS when given an `ssl.SSLContext`), cutting each byte stream into frames
with `trelay.stun.framing.StreamDeframer`, handing each STUN message to the responder, and
writing its reply back on the same connection.

Invariants:
- One task per connection reads and writes, so replies leave in request order and there
  is only ever one writer; `send_all` backpressure paces a client that reads slowly.
- Input that is not STUN/ChannelData framing closes that connection (and only it); the
  read buffer never exceeds the deframer's bound plus one `RECEIVE_SIZE` chunk.
- ChannelData naming a channel not bound on the connection's allocation (or with no
  allocation) closes the connection at once, judged on its 4-byte header
  (`StreamDeframer.pending_channel`) without waiting for the data it announces
  (`closed_lost_framing`; the node counts `Drop.LOST_FRAMING`). Over UDP the same is a
  late datagram for a channel that just expired and is dropped; over a stream it is
  lost framing: each frame's length comes from the previous one (RFC 8489 §6.2.2,
  RFC 8656 §12.5, RFC 6062 adds none), there is no marker to resynchronize on, so the
  bytes after a frame that is not what it claims to be cannot be trusted, and a length
  read from them (up to 64 KiB) would hold the connection until the idle timeout. A
  client sends ChannelData only on channels it has bound, and refreshes them before
  their 10 minutes run out (RFC 8656 §12); over a stream its ChannelBind is handled
  before any ChannelData that follows it. So only a broken or desynchronized sender
  meets this rule; it loses the connection (and, RFC 8656 §3.1, the allocation), which
  tells it at once, where silently dropping would leave it sending into nothing.
  Issue 15, the coturn advisory on STUN length truncation.
- A connection that sends nothing, or does not take our reply, for `idle_timeout`
  seconds is closed; this also bounds the TLS handshake.
- A failed TLS handshake, a reset or any other broken connection closes only that
  connection; the listener keeps accepting.
- Failed TLS handshakes (scanners, clients that do not trust the certificate, plain TCP
  sent to the TLS port) are counted (`HandshakeFailures.count`, a plain int the metrics
  read) and logged at a bounded rate: at most one line per `HANDSHAKE_LOG_SECONDS`, with
  the number of failures since the previous line, never a traceback per handshake.
- A connection whose session holds state (a TURN allocation) is not closed for being
  quiet: its allocation's lifetime governs it (RFC 8656 §3.1).
- Everything for the client (replies and relayed data) goes through one bounded outbox
  drained by the connection's writer task, which coalesces what is queued into one
  `send_all`; a client that does not read fills the outbox and loses data, not memory.
- With `reuse_port` the listening sockets join their port's SO_REUSEPORT group, so several
  worker processes (`trelay.process.workers`) accept on one port; off by default.
- A session that hands the connection over (`StreamSession.handover`, an RFC 6062
  ConnectionBind) gets no more frames: the writer sends what is queued (the
  ConnectionBind success), then the handover runs with the stream, without the idle
  timeout (the splice lives as long as both sides and the allocation).
- What the client sent right after that request, in the same read or before the answer
  (RFC 6062 §5.4 lets it send data at once; an RTP client's first packets), is not lost:
  on a connection that holds no allocation (the only kind a handover can start on, and
  only for its first few requests) the reader cuts one frame at a time and keeps the
  bytes past it (`_careful`), so the handover's stream yields them first, in order
  (`_Replayed`), to the peer or to the worker a proxy hands the connection to
  (`trelay.node.bind_proxy`), raw bytes that need not be STUN framing at all. A
  connection holding an allocation reads as before (a whole chunk into the deframer);
  one that deleted its allocation goes back to cutting one frame at a time once its
  deframer holds no unfinished frame.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from trelay.config.values import format_host_port
from trelay.node.exhaustion import ACCEPT, EXHAUSTION_ERRNOS, Exhaustion
from trelay.node.frontend import ClientFrontend, StreamSession
from trelay.stun.channel_data import FIRST_CHANNEL_BYTE, LAST_CHANNEL_BYTE
from trelay.stun.codes import HEADER_LENGTH
from trelay.stun.errors import StunDecodeError
from trelay.stun.framing import StreamDeframer
from trelay.turn.addressing import ClientTransport

RECEIVE_SIZE = 65536
# How long a graceful close (TLS close_notify) may take before the socket is just closed.
CLOSE_TIMEOUT = 1.0
OUTBOX_SIZE = 256
# At most one log line about failed TLS handshakes per this many seconds.
HANDSHAKE_LOG_SECONDS = 10.0
# Connections accepted per wake-up before the loop lets other tasks run.
ACCEPT_BATCH = 64
# Out of descriptors: how long the accept loop waits before it tries again.
EXHAUSTED_BACKOFF = 0.25
# accept() errors about one connection that broke in the backlog (as trio ignores them).
_IGNORED_ACCEPT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO})
# Linux only; None elsewhere (the option number means something else there).
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamListenerStats:
    """Plain counters of one stream listener, read by whoever publishes metrics."""

    connections_accepted: int = 0
    connections_closed: int = 0
    closed_idle: int = 0
    closed_malformed: int = 0
    closed_lost_framing: int = 0  # ChannelData on a channel not bound on the connection
    # Handshake failures and resets: the connection broke under us.
    closed_broken: int = 0
    tls_handshake_failures: int = 0  # of those, failed TLS handshakes
    frames_received: int = 0
    writes: int = 0


@dataclass(slots=True)
class HandshakeFailures:
    """Failed TLS handshakes: `count` (every one, for metrics) and a log line at most every
    `interval` seconds, saying how many failed since the previous line and the latest
    reason. A node's TLS listeners share one (`TurnNode.tls_handshake_failures`)."""

    count: int = 0
    interval: float = HANDSHAKE_LOG_SECONDS
    unlogged: int = 0
    next_line: float = -math.inf

    def failed(self, client: tuple[str, int], error: BaseException, now: float) -> None:
        self.count += 1
        self.unlogged += 1
        if now < self.next_line:
            return
        logger.warning(
            "TLS handshake failed: %d since the last such line (latest from %s: %s)",
            self.unlogged, format_host_port(*client), handshake_problem(error),
        )  # fmt: skip
        self.unlogged = 0
        self.next_line = now + self.interval


def handshake_problem(error: BaseException) -> str:
    """What went wrong, in a few words: the SSL library's reason when it gave one."""
    cause = error.__cause__ or error
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return cause.reason
    return str(cause) or type(cause).__name__


async def serve_stream(
    host: str,
    port: int,
    frontend: ClientFrontend,
    *,
    ssl_context: ssl.SSLContext | None = None,
    idle_timeout: float = 30.0,
    stats: StreamListenerStats | None = None,
    reuse_port: bool = False,
    handshake_failures: HandshakeFailures | None = None,
    exhaustion: Exhaustion | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve STUN/TURN over TCP (or TLS with `ssl_context`) on (host, port) until cancelled.

    Calls `task_status.started((host, port))` with the bound address of the first
    listening socket once every socket is listening (port 0 picks a free port).
    `reuse_port` sets SO_REUSEPORT on the listening sockets before they bind.
    `handshake_failures` counts and logs failed TLS handshakes (default: this
    listener's own); `exhaustion` counts and logs connections refused for lack of
    descriptors (default: this listener's own).
    """
    connection_stats = StreamListenerStats() if stats is None else stats
    failures = HandshakeFailures() if handshake_failures is None else handshake_failures
    refusals = Exhaustion() if exhaustion is None else exhaustion
    if reuse_port:
        listeners = await open_reuse_port_listeners(host, port)
    else:
        # trio sets IPV6_V6ONLY on IPv6 listeners, so 0.0.0.0 and :: can share a port.
        listeners = await trio.open_tcp_listeners(port, host=host or None)
    # Plain sockets from here: the accept loop calls accept() itself (`_accept_loop`).
    sockets = [socket.socket(fileno=listener.socket.detach()) for listener in listeners]
    bound = sockets[0].getsockname()
    server = (bound[0], bound[1])

    async def handle(stream: trio.SocketStream) -> None:
        await serve_connection(
            stream, frontend, server, ssl_context, idle_timeout, connection_stats, failures
        )

    try:
        async with trio.open_nursery() as nursery:
            for sock in sockets:
                nursery.start_soon(_accept_loop, sock, handle, nursery, refusals)
            task_status.started(server)
    finally:
        for sock in sockets:
            sock.close()


async def _accept_loop(
    sock: socket.socket,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
    exhaustion: Exhaustion,
) -> None:
    """Accept connections on `sock` and start `handle` for each, until cancelled.

    Instead of `trio.serve_listeners`, which logs a traceback every 0.1 s while the
    process is at its descriptor limit: a refusal is counted and logged at a bounded
    rate (`Exhaustion`), what waits in the backlog is accepted on the reserve
    descriptor and closed at once (the client sees the connection end, not a hang),
    and the loop waits `EXHAUSTED_BACKOFF` before trying again.
    """
    sock.setblocking(False)
    reserve = _Reserve()
    try:
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(ACCEPT_BATCH):
                try:
                    connection, _ = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in EXHAUSTION_ERRNOS:
                        closed = 0
                        while closed < ACCEPT_BATCH and reserve.refuse_one(sock):
                            closed += 1
                        # Without a reserve the connection waits: still one refusal.
                        exhaustion.refused(ACCEPT, exc, trio.current_time(), max(closed, 1))
                        await trio.sleep(EXHAUSTED_BACKOFF)
                        break
                    if exc.errno in _IGNORED_ACCEPT_ERRNOS:
                        continue  # that one connection broke before we took it
                    raise
                exhaustion.succeeded()
                reserve.refill()
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(connection))
                nursery.start_soon(handle, stream)
            # A full batch: let the connections just accepted run before the next.
            await trio.lowlevel.checkpoint()
    finally:
        reserve.close()


class _Reserve:
    """One descriptor held back (/dev/null) so that, at the descriptor limit, a waiting
    connection can still be accepted and closed (the technique of libev and nginx):
    without it the client waits in the backlog for as long as the limit holds."""

    __slots__ = ("fd",)

    def __init__(self) -> None:
        self.fd: int | None = None
        self.refill()

    def refill(self) -> None:
        if self.fd is None:
            with contextlib.suppress(OSError):  # at the limit: taken again after it
                self.fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def refuse_one(self, sock: socket.socket) -> bool:
        """Accept one waiting connection on the reserve descriptor and close it; False
        when there is none or no reserve. Nothing awaits in between, so no other task
        takes the descriptor freed here."""
        if self.fd is None:
            return False
        os.close(self.fd)
        self.fd = None
        try:
            connection, _ = sock.accept()
        except OSError:
            return False
        else:
            connection.close()
            return True
        finally:
            self.refill()  # the descriptor just closed (the connection's, or the reserve's)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def open_reuse_port_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Like `trio.open_tcp_listeners`, with SO_REUSEPORT set on every socket."""
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(socket.SOMAXCONN)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


async def serve_connection(  # noqa: PLR0915 - one connection's whole life, in order
    transport: trio.SocketStream,
    frontend: ClientFrontend,
    server: tuple[str, int],
    ssl_context: ssl.SSLContext | None,
    idle_timeout: float,
    stats: StreamListenerStats,
    handshake_failures: HandshakeFailures | None = None,
    *,
    client: tuple[ClientTransport, tuple[str, int]] | None = None,
) -> None:
    """Serve one client until it closes, stalls or sends garbage. `client`: the
    transport and address of a client another worker proxies over `transport` (an RFC
    6062 data connection, `trelay.node.bind_proxy`), served as if it came from there."""
    stats.connections_accepted += 1
    stream: trio.abc.Stream = transport
    kind = ClientTransport.TCP
    if client is not None:
        kind, source = client
    else:
        try:
            peer = transport.socket.getpeername()
        except OSError:
            # Reset between accept and here: nothing to serve.
            stats.closed_broken += 1
            stats.connections_closed += 1
            await trio.aclose_forcefully(transport)
            return
        source = (peer[0], peer[1])
    if ssl_context is not None:
        stream = trio.SSLStream(transport, ssl_context, server_side=True)
        kind = ClientTransport.TLS
    graceful = False
    try:
        if isinstance(stream, trio.SSLStream):
            # Handshake now (not lazily on first read) so a client that connects and
            # never finishes it is held to the same idle timeout.
            with trio.fail_after(idle_timeout):
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    stats.tls_handshake_failures += 1
                    if handshake_failures is not None:
                        handshake_failures.failed(source, exc, trio.current_time())
                    raise
            acknowledge_now(transport)
        outbox, pending = trio.open_memory_channel[bytes](OUTBOX_SIZE)
        session = frontend.stream_session(kind, source, server, outbox)
        handover = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _write, stream, pending, idle_timeout, stats, nursery.cancel_scope
                )
                graceful, early = await _read(stream, session, idle_timeout, stats)
                handover = session.handover()
                if handover is None:
                    nursery.cancel_scope.cancel()
                else:
                    outbox.close()  # the writer sends what is queued, then ends
        finally:
            session.close()
        if handover is not None and not nursery.cancel_scope.cancel_called:
            # RFC 6062: raw bytes from here (`trelay.node.tcp_relay`), those already read first.
            await handover(_Replayed(stream, early) if early else stream)
    except trio.TooSlowError:
        stats.closed_idle += 1
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        stats.closed_broken += 1
    finally:
        stats.connections_closed += 1
        if graceful:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await stream.aclose()
        # Closing twice is a no-op; this also covers a graceful close cut short above.
        await trio.aclose_forcefully(stream)


def acknowledge_now(transport: trio.SocketStream) -> None:
    """Acknowledge what the client sent so far at once (Linux TCP_QUICKACK; elsewhere
    nothing). After a TLS 1.3 handshake the client's Finished is the last thing it sent;
    a client with Nagle's algorithm on (most, by default) holds its first request until
    that is acknowledged, and delayed ACK would make it wait ~40 ms: measured, the first
    Allocate over TLS went from 45 ms to 1.9 ms (median, loopback)."""
    if _TCP_QUICKACK is None:
        return
    with contextlib.suppress(OSError):  # a reset connection
        transport.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


async def _read(
    stream: trio.abc.Stream,
    session: StreamSession,
    idle_timeout: float,
    stats: StreamListenerStats,
) -> tuple[bool, bytes]:
    """The read loop; returns whether the client closed cleanly (end of stream) and, when
    the session took the connection over, the bytes read past the request that did."""
    deframer = StreamDeframer()
    # Bytes read and not yet framed while frames are cut one at a time (`_careful`).
    pending = bytearray()
    try:
        while True:
            with trio.move_on_after(idle_timeout) as idle:
                data = await stream.receive_some(RECEIVE_SIZE)
            if idle.cancelled_caught:
                if session.keeps_alive():
                    continue
                stats.closed_idle += 1
                return False, b""
            if not data:
                return True, b""
            if pending or (not deframer.buffered and not session.keeps_alive()):
                # No allocation here: a handover may start with any request.
                pending += data
                outcome = _careful(pending, deframer, session, stats)
                if outcome is not None:
                    return outcome, bytes(pending) if outcome else b""
                if not pending or not session.keeps_alive():
                    continue
                data = bytes(pending)  # an Allocate made it a control connection
                pending.clear()
            for channel, payload in deframer.feed(data):
                stats.frames_received += 1
                if not session.frame(channel, payload):
                    stats.closed_lost_framing += 1
                    return False, b""
                # Only a STUN request (a ConnectionBind) can make it a data connection.
                if channel is None and session.handover() is not None:
                    return True, b""  # a data connection now; its client waited for the answer
            # Judge an unfinished ChannelData frame by its header: lost framing does not
            # wait for the data a length read from the wrong bytes announces.
            pending_channel = deframer.pending_channel
            if pending_channel is not None and session.framing_lost(pending_channel):
                stats.closed_lost_framing += 1
                return False, b""
    except StunDecodeError:
        stats.closed_malformed += 1
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        stats.closed_broken += 1
    return False, b""


def _careful(
    pending: bytearray,
    deframer: StreamDeframer,
    session: StreamSession,
    stats: StreamListenerStats,
) -> bool | None:
    """Hand `session` the complete frames at the start of `pending`, one at a time, each
    removed once handled, so that what follows the frame that hands the connection over
    stays in `pending`. True: handed over; False: framing lost (counted); None: go on
    (`pending` holds an unfinished frame, or the session now holds an allocation).
    Raises `StunDecodeError` for bytes that are not STUN/ChannelData framing.
    """
    while pending and not session.keeps_alive():
        size = _frame_size(pending)
        if size is None or len(pending) < size:
            # Check the unfinished frame's header as the deframer would have (it holds
            # nothing here), and judge ChannelData by its channel.
            probe = StreamDeframer()
            probe.feed(pending[:HEADER_LENGTH])
            channel = probe.pending_channel
            if channel is not None and session.framing_lost(channel):
                stats.closed_lost_framing += 1
                return False
            return None
        [(channel, payload)] = deframer.feed(pending[:size])  # exactly that frame
        del pending[:size]
        stats.frames_received += 1
        if not session.frame(channel, payload):
            stats.closed_lost_framing += 1
            return False
        if channel is None and session.handover() is not None:
            return True
    return None


def _frame_size(data: bytearray) -> int | None:
    """The size on the wire of the frame `data` starts with, once its length has arrived
    and its first byte is one a frame starts with (RFC 8489 §6.2.2, RFC 8656 §12.5)."""
    if len(data) < 4 or data[0] > LAST_CHANNEL_BYTE:
        return None
    length = (data[2] << 8) | data[3]
    if data[0] >= FIRST_CHANNEL_BYTE:
        return 4 + ((length + 3) & ~3)
    return HEADER_LENGTH + length


class _Replayed(trio.abc.Stream):
    """A stream whose first reads return `early` (what was read past the request that
    handed the connection over), then read from `stream`; writes go to `stream`."""

    def __init__(self, stream: trio.abc.Stream, early: bytes) -> None:
        self._stream = stream
        self._early = early

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        early = self._early
        if not early:
            return await self._stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(early) if max_bytes is None else max_bytes
        self._early = early[size:]
        return early[:size]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _write(
    stream: trio.abc.Stream,
    pending: trio.MemoryReceiveChannel[bytes],
    idle_timeout: float,
    stats: StreamListenerStats,
    connection_scope: trio.CancelScope,
) -> None:
    """The one writer: send what is queued, coalesced; a client that never reads is stalled.

    A failed or stalled write ends the whole connection (`connection_scope`).
    """
    try:
        async for first in pending:
            chunks = [first]
            while True:
                try:
                    chunks.append(pending.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):  # the latter: a handover
                    break
            with trio.fail_after(idle_timeout):
                await stream.send_all(b"".join(chunks) if len(chunks) > 1 else first)
            stats.writes += 1
    except trio.TooSlowError:
        stats.closed_idle += 1
        connection_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        stats.closed_broken += 1
        connection_scope.cancel()
