"""What the listeners hand client traffic to: the `ClientFrontend` protocol.

The UDP and stream listeners own sockets, framing and timeouts; a frontend owns what the
bytes mean. `trelay.node.turn_node.TurnNode` is the production frontend (STUN and TURN);
`ResponderFrontend` adapts a plain `trelay.turn.binding.Responder` (a STUN-only server, and
the listeners' own tests).

- UDP: when a socket is bound, the listener asks `udp_listener(sock, bound, stats)` for
  the socket's `DatagramBatch`, which runs whenever the socket is readable: in the
  frontend's data plane (`datagram_plane()`, `trelay.node.data_plane`) if it has one,
  else from the listener's own task (a `Responder` is served by
  `trelay.node.datagram_batch.drain`).
- Streams: per connection, `stream_session(...)` returns a `StreamSession`; every frame
  goes to `frame()`, anything for the client goes into the connection's outbox (a
  bounded trio channel the listener's writer task drains, so there is one writer).
  ChannelData naming a channel not bound on the connection means its framing is lost:
  `frame()` returns False (or `framing_lost` True, judged on the header alone) and the
  listener closes the connection (`trelay.node.stream_listener`, issue 15).
  Once `handover()` returns a callable (an RFC 6062 ConnectionBind made the connection
  a data connection), the listener stops reading frames, lets the writer send what is
  queued and runs the callable with the stream: raw bytes from then on.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from trelay.node.data_plane import DataPlane
from trelay.node.datagram_batch import DatagramBatch, UdpListenerStats, drain
from trelay.turn.addressing import Address, ClientTransport
from trelay.turn.binding import Responder

# What a stream's task runs with the stream once the session hands it over (RFC 6062).
Handover = Callable[[trio.abc.Stream], Awaitable[None]]


class StreamSession(Protocol):
    def frame(self, channel: int | None, data: bytes) -> bool:
        """One deframed STUN message (channel None) or ChannelData payload. False: it was
        ChannelData on a channel not bound on this connection, so the stream's framing is
        lost (counted by the session) and the listener closes the connection."""

    def framing_lost(self, channel: int) -> bool:
        """The rule of `frame` for ChannelData whose header has arrived but not its data:
        True (counted) when `channel` is not bound on this connection."""

    def keeps_alive(self) -> bool:
        """True while the connection holds state (an allocation): silence is no reason to close."""

    def handover(self) -> Handover | None:
        """What to run with the stream instead of reading frames, once there is one."""

    def close(self) -> None:
        """The connection ended; release what it held."""


class ClientFrontend(Protocol):
    def udp_listener(
        self, sock: socket.socket, bound: Address, stats: UdpListenerStats
    ) -> DatagramBatch: ...

    def datagram_plane(self) -> DataPlane | None:
        """Where the UDP listeners' batches run (started), or None: in their own tasks."""

    def stream_session(
        self,
        transport: ClientTransport,
        client: Address,
        server: Address,
        outbox: trio.MemorySendChannel[bytes],
    ) -> StreamSession: ...


class _ResponderSession:
    __slots__ = ("_client", "_outbox", "_responder")

    def __init__(
        self, responder: Responder, client: Address, outbox: trio.MemorySendChannel[bytes]
    ) -> None:
        self._responder = responder
        self._client = client
        self._outbox = outbox

    def frame(self, channel: int | None, data: bytes) -> bool:
        if channel is not None:
            return False  # no allocations here, so no channel is ever bound
        reply = self._responder(data, self._client)
        if reply is not None:
            # A client that does not read its replies loses them; the idle timeout ends it.
            with contextlib.suppress(trio.WouldBlock):
                self._outbox.send_nowait(reply)
        return True

    def framing_lost(self, channel: int) -> bool:
        return True

    def keeps_alive(self) -> bool:
        return False

    def handover(self) -> Handover | None:
        return None

    def close(self) -> None:
        pass


class ResponderFrontend:
    """Serve a stateless `Responder` on every listener (ChannelData is dropped over UDP
    and, never bound, closes a stream connection)."""

    __slots__ = ("responder",)

    def __init__(self, responder: Responder) -> None:
        self.responder = responder

    def udp_listener(
        self, sock: socket.socket, bound: Address, stats: UdpListenerStats
    ) -> DatagramBatch:
        return functools.partial(drain, sock, self.responder, stats)

    def datagram_plane(self) -> DataPlane | None:
        return None  # a stateless responder: each listener reads in its own task

    def stream_session(
        self,
        transport: ClientTransport,
        client: Address,
        server: Address,
        outbox: trio.MemorySendChannel[bytes],
    ) -> StreamSession:
        return _ResponderSession(self.responder, client, outbox)
