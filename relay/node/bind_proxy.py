"""RFC 6062's ConnectionBind across the worker processes of one node: the proxy.

Owns how a TCP allocation works with `trelay serve --workers N` (design §4, RFC 6062
§5.4). A client's ConnectionBind comes on a new TCP/TLS connection, which the kernel's
SO_REUSEPORT hash may hand to any worker, while the peer connection it names lives on
the worker holding the allocation. The CONNECTION-ID's top byte names that worker
(`trelay.turn.tcp_relay.connection_worker`), and the worker that accepted the data
connection proxies it there:

1. `TurnNode.handle_stun` sees a ConnectionBind naming another worker on a stream
   connection that holds no allocation (`BindProxy.owner`) and, instead of answering
   it (400 here), makes the connection's handover `BindProxy.handover`;
2. that handover, once the stream listener stops reading frames, makes an AF_UNIX
   socketpair and sends one end to the owner (`Handoffs`: SCM_RIGHTS with the client's
   transport, address and the listen address, in one datagram), writes the
   ConnectionBind it read into its own end (then what the listener read past it) and
   copies bytes both ways between the client's connection (TLS terminated here) and
   the socketpair, a chunk at a time (each `send_all` before the next read:
   backpressure both ways, as the splice); either side ending ends both (§5.5);
3. the owner (`BindProxy.serve`) serves the other end as a stream connection from that
   client (`serve_connection(client=...)`): its core authenticates the ConnectionBind
   as any, answers it and splices the peer connection with the socketpair end as if it
   were the data connection (`trelay.node.tcp_relay`); an unknown id is answered 400
   through the proxy, as it would be on the owner.

The same path serves a port reservation's Allocate over TCP/TLS (RFC 8656 §7.2): an
Allocate whose RESERVATION-TOKEN names another worker (`trelay.turn.reservations`), on
a connection holding nothing, makes the whole control connection a proxy to that worker,
which redeems the token and holds the allocation; the client's later requests and its
relayed data go through the proxy. (Over UDP the datagram is handed over instead,
`trelay.node.mobility_steering`.)

What the client sent right behind the proxied request (a ConnectionBind's first data,
requests pipelined behind the Allocate), in the same read or before the answer, is not
lost: the stream listener keeps what it read past the request and the handover's stream
yields it first (`trelay.node.stream_listener`), so the proxy sends it to the owner
right after the request, in order.

The handoff channel: one AF_UNIX datagram socketpair per worker slot, made by the
supervisor (`handoff_pairs`) and kept for its whole life like the UDP sockets, so a
restarted worker reads its predecessor's queue; each worker inherits its own receiving
end and every slot's sending end, so a handoff goes straight to the owner without the
supervisor's control channel (which carries pickles, not descriptors). Only the node's
own processes hold these sockets. A handoff that cannot be queued (the owner's buffer
is full, it is gone) closes the client's connection, which the client sees as a failed
ConnectionBind; one that reaches a restarted owner names a connection it does not know
(400).

Why not steer TCP connections by source with a reuseport program as UDP is
(`trelay.process.reuseport_steering`): the TCP listeners are each worker's own (an
accepted connection stays with its process, `trelay.process.workers`), so a restarted
worker's listener joins the group at another index and the program's indices would
name other workers until every worker restarted; and a client's data connection comes
from a new port, which a hash of address and port sends anywhere, while a hash of the
address alone would put every client behind one NAT on one worker. The proxy costs a
copy per chunk on the accepting worker for the pairs that cross (N-1 in N), nothing for
the rest.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field

import trio

from trelay.node.frontend import ClientFrontend, Handover
from trelay.node.stream_listener import StreamListenerStats, serve_connection
from trelay.node.worker_requests import (
    ALLOCATE_REQUEST,
    CONNECTION_BIND_REQUEST,
    decode_request,
    reservation_worker,
)
from trelay.stun.attributes import ConnectionId
from trelay.stun.codes import Method
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.tcp_relay import connection_worker

log = logging.getLogger(__name__)

# The first two bytes of a ConnectionBind (RFC 6062 §6.1) and an Allocate request.
_PROXIED = (CONNECTION_BIND_REQUEST, ALLOCATE_REQUEST)
# One handoff: "transport|client host|client port|server host|server port", one fd.
HANDOFF_SIZE = 512
# What the proxy reads at once, per direction (as `trelay.node.tcp_relay.SPLICE_CHUNK`).
PROXY_CHUNK = 65536
# A handed-off connection must bring its ConnectionBind within this (the core answers
# it at once); once spliced, no idle timeout applies (the stream listener's rule).
ADOPTED_IDLE_TIMEOUT = 30.0
# Handoffs taken per wake-up before other tasks run.
RECEIVE_BATCH = 16


def handoff_pairs(workers: int) -> list[tuple[socket.socket, socket.socket]]:
    """The supervisor's handoff channel: per worker slot, (receiving, sending) ends of
    an AF_UNIX datagram socketpair, inheritable, kept open for the node's life."""
    pairs = []
    for _ in range(workers):
        receiving, sending = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (receiving, sending):
            sock.set_inheritable(True)
        pairs.append((receiving, sending))
    return pairs


@dataclass(slots=True)
class Handoffs:
    """One worker's ends of the handoff channel: its own receiving end, every slot's
    sending end (by worker index)."""

    receiving: socket.socket
    sending: tuple[socket.socket, ...]

    @classmethod
    def from_fds(cls, fds: tuple[int, ...]) -> Handoffs:
        """From a `WorkerAssignment`'s `handoff_fds`: the receiving end, then the sending
        ends in worker order."""
        receiving, *sending = (socket.socket(fileno=fd) for fd in fds)
        for sock in (receiving, *sending):
            sock.setblocking(False)
        return cls(receiving, tuple(sending))

    def send(self, owner: int, five_tuple: FiveTuple, sock: socket.socket) -> bool:
        """Queue `sock` for worker `owner` as a connection of `five_tuple`'s client;
        False if it cannot be queued now (never blocks)."""
        client, server = five_tuple.client, five_tuple.server
        fields = (five_tuple.transport.value, client[0], client[1], server[0], server[1])
        message = "|".join(str(each) for each in fields).encode()
        try:
            socket.send_fds(self.sending[owner], [message], [sock.fileno()], socket.MSG_DONTWAIT)
        except OSError as exc:
            log.warning("ConnectionBind for worker %d not handed off: %s", owner, exc)
            return False
        return True

    def receive(self) -> tuple[FiveTuple, socket.socket] | None:
        """One queued handoff, or None when there is none (never blocks). A malformed
        one (only our own processes send here) is dropped, its descriptors closed."""
        try:
            message, fds, _, _ = socket.recv_fds(
                self.receiving, HANDOFF_SIZE, 1, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return None
        try:
            transport, client_host, client_port, server_host, server_port = message.decode().split(
                "|"
            )
            five_tuple = FiveTuple(
                ClientTransport(transport),
                (client_host, int(client_port)),
                (server_host, int(server_port)),
            )
            [fd] = fds
        except ValueError:
            for fd in fds:
                with contextlib.suppress(OSError):
                    socket.close(fd)
            return self.receive()
        return five_tuple, socket.socket(fileno=fd)


@dataclass(slots=True)
class BindProxy:
    """One worker's part: its index, the handoff channel, what its proxies counted."""

    worker: int
    handoffs: Handoffs
    # The adopted connections (the socketpair ends other workers handed here).
    stats: StreamListenerStats = field(default_factory=StreamListenerStats)
    proxied: int = 0  # connections this worker proxied to another
    adopted: int = 0  # connections other workers proxied to this one

    def owner(self, data: bytes) -> int | None:
        """The worker a ConnectionBind's CONNECTION-ID, or an Allocate's
        RESERVATION-TOKEN, names, when that is another worker of the node; None for
        anything else (answered here)."""
        message = decode_request(data, _PROXIED)
        if message is None:
            return None
        owner: int | None = None
        if message.method == Method.CONNECTION_BIND:
            attribute = message.get(ConnectionId)
            owner = None if attribute is None else connection_worker(attribute.value)
        else:
            owner = reservation_worker(message)
        if owner is None or owner == self.worker or owner >= len(self.handoffs.sending):
            return None
        return owner

    def handover(self, five_tuple: FiveTuple, owner: int, request: bytes) -> Handover:
        """The data connection's handover: proxy it to `owner`, `request` first."""

        async def proxy(stream: trio.abc.Stream) -> None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            with theirs:
                handed = self.handoffs.send(owner, five_tuple, theirs)
            ours.setblocking(False)
            to_owner = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            try:
                if not handed:
                    return
                self.proxied += 1
                log.info(
                    "connection proxied",
                    extra={"client": five_tuple.client, "worker": owner,
                           "transport": five_tuple.transport},
                )  # fmt: skip
                await to_owner.send_all(request)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_copy, stream, to_owner, nursery.cancel_scope)
                    nursery.start_soon(_copy, to_owner, stream, nursery.cancel_scope)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await trio.aclose_forcefully(to_owner)

        return proxy

    async def serve(self, frontend: ClientFrontend) -> None:
        """Serve the connections other workers hand here, until cancelled."""
        receiving = self.handoffs.receiving
        async with trio.open_nursery() as nursery:
            while True:
                await trio.lowlevel.wait_readable(receiving)
                for _ in range(RECEIVE_BATCH):
                    handoff = self.handoffs.receive()
                    if handoff is None:
                        break
                    five_tuple, sock = handoff
                    self.adopted += 1
                    nursery.start_soon(self._adopt, frontend, five_tuple, sock)
                await trio.lowlevel.checkpoint()

    async def _adopt(
        self, frontend: ClientFrontend, five_tuple: FiveTuple, sock: socket.socket
    ) -> None:
        sock.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        await serve_connection(
            stream, frontend, five_tuple.server, None, ADOPTED_IDLE_TIMEOUT, self.stats,
            client=(five_tuple.transport, five_tuple.client),
        )  # fmt: skip


async def _copy(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
    """Copy `source` to `sink` a chunk at a time, each sent whole before the next read;
    at the end of either, end both (`done`)."""
    try:
        while True:
            data = await source.receive_some(PROXY_CHUNK)
            if not data:
                return
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # a reset or closed side: the other ends too
    finally:
        done.cancel()
