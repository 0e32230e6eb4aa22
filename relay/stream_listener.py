"""The TCP and TLS listener: one task per connection, frames in, replies out in order.

Owns STUN over TCP and TLS (RFC 8489 §6.2.2, §6.2.3) on the server side: accepting
connections (TLS when given an `ssl.SSLContext`), cutting each byte stream into frames
with `stun.framing.StreamDeframer`, handing each STUN message to the responder, and
writing its reply back on the same connection.

Invariants:
- One task per connection reads and writes, so replies leave in request order and there
  is only ever one writer; `send_all` backpressure paces a client that reads slowly.
- Input that is not STUN/ChannelData framing closes that connection (and only it); the
  read buffer never exceeds the deframer's bound plus one `RECEIVE_SIZE` chunk.
- A connection that sends nothing, or does not take our reply, for `idle_timeout`
  seconds is closed; this also bounds the TLS handshake.
- A failed TLS handshake, a reset or any other broken connection closes only that
  connection; the listener keeps accepting.
- ChannelData frames are dropped until the TURN core handles them.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass

import trio

from stun.errors import StunDecodeError
from stun.framing import StreamDeframer
from turn.binding import Responder

RECEIVE_SIZE = 65536
# How long a graceful close (TLS close_notify) may take before the socket is just closed.
CLOSE_TIMEOUT = 1.0


@dataclass(slots=True)
class StreamListenerStats:
    """Plain counters of one stream listener, read by whoever publishes metrics."""

    connections_accepted: int = 0
    connections_closed: int = 0
    closed_idle: int = 0
    closed_malformed: int = 0
    # Handshake failures and resets: the connection broke under us.
    closed_broken: int = 0
    frames_received: int = 0
    channel_data_dropped: int = 0
    replies_sent: int = 0


async def serve_stream(
    host: str,
    port: int,
    responder: Responder,
    *,
    ssl_context: ssl.SSLContext | None = None,
    idle_timeout: float = 30.0,
    stats: StreamListenerStats | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve STUN over TCP (or TLS with `ssl_context`) on (host, port) until cancelled.

    Calls `task_status.started((host, port))` with the bound address of the first
    listening socket once every socket is listening (port 0 picks a free port).
    """
    connection_stats = StreamListenerStats() if stats is None else stats
    # trio sets IPV6_V6ONLY on IPv6 listeners, so 0.0.0.0 and :: can share a port.
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    bound = listeners[0].socket.getsockname()

    async def handle(stream: trio.SocketStream) -> None:
        await serve_connection(stream, responder, ssl_context, idle_timeout, connection_stats)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started((bound[0], bound[1]))


async def serve_connection(
    transport: trio.SocketStream,
    responder: Responder,
    ssl_context: ssl.SSLContext | None,
    idle_timeout: float,
    stats: StreamListenerStats,
) -> None:
    """Answer one client's STUN messages until it closes, stalls or sends garbage."""
    stats.connections_accepted += 1
    try:
        peer = transport.socket.getpeername()
    except OSError:
        # Reset between accept and here: nothing to serve.
        stats.closed_broken += 1
        stats.connections_closed += 1
        await trio.aclose_forcefully(transport)
        return
    source = (peer[0], peer[1])
    stream: trio.abc.Stream = transport
    if ssl_context is not None:
        stream = trio.SSLStream(transport, ssl_context, server_side=True, https_compatible=False)
    graceful = False
    try:
        graceful = await _exchange(stream, source, responder, idle_timeout, stats)
    finally:
        stats.connections_closed += 1
        if graceful:
            # If the peer went away first, there is nobody left to be polite to.
            with (
                trio.move_on_after(CLOSE_TIMEOUT),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.aclose()
        # Closing twice is a no-op; this also covers a graceful close cut short above.
        await trio.aclose_forcefully(stream)


async def _exchange(
    stream: trio.abc.Stream,
    source: tuple[str, int],
    responder: Responder,
    idle_timeout: float,
    stats: StreamListenerStats,
) -> bool:
    """The read-answer loop; returns True when the client closed cleanly (end of stream)."""
    deframer = StreamDeframer()
    try:
        if isinstance(stream, trio.SSLStream):
            # Handshake now (not lazily on first read) so a client that connects and
            # never finishes it is held to the same idle timeout.
            with trio.fail_after(idle_timeout):
                await stream.do_handshake()
        while True:
            with trio.move_on_after(idle_timeout) as idle:
                data = await stream.receive_some(RECEIVE_SIZE)
            if idle.cancelled_caught:
                stats.closed_idle += 1
                return False
            if not data:
                return True
            # bytes() of a bytes object is that object; only SSLStream's bytearray copies.
            for frame in deframer.feed(bytes(data)):
                stats.frames_received += 1
                if frame.channel is not None:
                    # No TURN allocations yet, so no channel can be bound: drop.
                    stats.channel_data_dropped += 1
                    continue
                reply = responder(frame.data, source)
                if reply is not None:
                    # Over TCP the reply goes out as is: STUN messages are self-delimiting.
                    # A client that does not read its replies is a stalled client too.
                    with trio.fail_after(idle_timeout):
                        await stream.send_all(reply)
                    stats.replies_sent += 1
    except StunDecodeError:
        stats.closed_malformed += 1
    except trio.TooSlowError:
        stats.closed_idle += 1
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        stats.closed_broken += 1
    return False
