"""The DTLS listener: STUN and TURN over DTLS on UDP (RFC 7350, `turns:` with transport=udp).

Owns the server side of STUN over DTLS (RFC 8489 §6.2.2, RFC 7350 §4) on trio's DTLS
(`trio.DTLSEndpoint`, on pyOpenSSL): one UDP socket, one association per client address,
each served like a TLS connection of `trelay.node.stream_listener` (the frontend's
`stream_session` with transport `ClientTransport.DTLS`), except for the framing:

- every DTLS record carries one STUN message or one ChannelData message (RFC 7350 §4.1
  defers to RFC 8656, whose §12.5 does not require ChannelData padding over DTLS, as
  over UDP): a record starting 0b00 is a STUN message, one starting 0b01 ChannelData
  whose length field says how much of it is payload (trailing padding is ignored); a
  record that is neither, or shorter than its length field, is dropped and counted, and
  the association goes on (datagram semantics: nothing to resynchronise);
- everything for the client leaves one message per record, through a bounded outbox
  drained by the association's writer task (never coalesced, unlike a stream), and
  ChannelData without padding: what the node frames for streams is cut to its length
  field here (`unpadded`), so the record is the message whatever the node did.

The cookie exchange comes before any per-client state (RFC 6347 §4.2.1, the DTLS state
exhaustion of coturn's 2026 advisories): trio answers a ClientHello without a valid
cookie with a HelloVerifyRequest made from a keyed HMAC of the client's address and
hello (stateless; the HelloVerifyRequest is smaller than the hello, so it amplifies
nothing) and makes a `DTLSChannel` (an OpenSSL connection) only for a hello that returns
a valid cookie, which proves the client receives at its address. From there the bounds
are `[dtls]`'s (`trelay.config.dtls_settings`, which says what each costs), checked
before the handshake spends anything more:
- associations per source (an IPv4 address or an IPv6 /64,
  `trelay.turn.allocation_table.source_of`), handshaking or up;
- handshakes in progress on the listener, and associations in all;
- a handshake must finish within the idle timeout (as a TLS handshake must), and an
  association that sends nothing for the idle timeout is closed, unless its session
  holds an allocation (its lifetime governs it, RFC 8656 §3.1; when the allocation ends
  the association idles out);
- each association's queue of records waiting to be read is bounded
  (`INCOMING_RECORDS`; trio drops and counts beyond it).
A refused association is closed at once and counted (`DtlsListenerStats`), with a log
line at most every `REFUSAL_LOG_SECONDS`; failed handshakes are counted and logged by the
node's `HandshakeFailures` (shared with the TLS listeners).

The allocation of an association ends with it (`StreamSession.close`: the client closed
it with close_notify, its address started a new handshake, it idled out, or the listener
stopped), as a TCP connection's does (RFC 8656 §3.1).

`serve_dtls(open_socket=...)` serves a socket bound elsewhere: a worker of
`trelay serve --workers N` inherits one SO_REUSEPORT socket per DTLS address from its
supervisor, as for UDP (`trelay.process.listen_reservation`); the kernel hashes a client's
4-tuple to one worker, so its cookie exchange (each worker has its own cookie key) and its
association stay there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
from dataclasses import dataclass, field

import trio
from OpenSSL import SSL

from trelay.config.dtls_settings import DtlsSettings
from trelay.node.frontend import ClientFrontend, StreamSession
from trelay.node.stream_listener import OUTBOX_SIZE, HandshakeFailures
from trelay.node.udp_listener import SocketOpener, open_udp_socket
from trelay.turn.addressing import Address, ClientTransport
from trelay.turn.allocation_table import source_of

logger = logging.getLogger(__name__)

# Records trio queues per association until our reader takes them (the reader hands
# each to the frontend without awaiting, so the queue is short unless the node stalls).
INCOMING_RECORDS = 64
# At most one log line about refused associations per this many seconds.
REFUSAL_LOG_SECONDS = 10.0
_CHANNEL_DATA_HEADER = 4
# A DTLS alert record (RFC 6347 §4.1): type, version, epoch, 48-bit sequence number,
# length, then the alert (level, description).
_ALERT_RECORD = struct.Struct("!BHH6sHBB")
_ALERT, _DTLS_1_0, _FATAL = 21, 0xFEFF, 2
_HANDSHAKE_FAILURE, _PROTOCOL_VERSION = 40, 70
_ALERT_RECORD_NUMBER = (1 << 32).to_bytes(6)


@dataclass(slots=True)
class DtlsListenerStats:
    """Plain counters of one DTLS listener, read by whoever publishes metrics or tests.

    `handshaking` and `associations` are what the listener holds now; the rest count.
    """

    associations_started: int = 0  # hellos with a valid cookie: trio made an association
    refused_per_source: int = 0
    refused_handshakes: int = 0
    refused_associations: int = 0
    handshake_failures: int = 0  # failed or timed out
    established: int = 0
    handshaking: int = 0
    associations: int = 0
    closed_idle: int = 0
    closed_broken: int = 0  # reset by a new handshake from the address, or an SSL error
    closed_by_client: int = 0  # close_notify
    records_received: int = 0
    records_malformed: int = 0
    records_send_failed: int = 0


@dataclass(slots=True)
class _Admission:
    """Counts what the listener holds, per source and in all, and says when it is full."""

    limits: DtlsSettings
    stats: DtlsListenerStats
    per_source: dict[str, int] = field(default_factory=dict)
    refused_unlogged: int = 0
    next_line: float = -math.inf

    def admit(self, source: str) -> bool:
        stats, limits = self.stats, self.limits
        # 0 = unlimited, as for [quotas].
        per_source = limits.associations_per_source
        if per_source and self.per_source.get(source, 0) >= per_source:
            stats.refused_per_source += 1
            return self._refused(f"{per_source} associations from {source}")
        if limits.handshakes and stats.handshaking >= limits.handshakes:
            stats.refused_handshakes += 1
            return self._refused(f"{limits.handshakes} handshakes in progress")
        if limits.associations and stats.associations >= limits.associations:
            stats.refused_associations += 1
            return self._refused(f"{limits.associations} associations")
        self.per_source[source] = self.per_source.get(source, 0) + 1
        stats.associations += 1
        return True

    def release(self, source: str) -> None:
        left = self.per_source[source] - 1
        if left:
            self.per_source[source] = left
        else:
            del self.per_source[source]  # the table holds only sources with associations
        self.stats.associations -= 1

    def _refused(self, limit: str) -> bool:
        self.refused_unlogged += 1
        now = trio.current_time()
        if now >= self.next_line:
            logger.warning(
                "DTLS associations refused: %d since the last such line (latest: at %s)",
                self.refused_unlogged, limit,
            )  # fmt: skip
            self.refused_unlogged = 0
            self.next_line = now + REFUSAL_LOG_SECONDS
        return False


async def serve_dtls(
    host: str,
    port: int,
    frontend: ClientFrontend,
    *,
    dtls_context: SSL.Context,
    idle_timeout: float = 30.0,
    limits: DtlsSettings | None = None,
    stats: DtlsListenerStats | None = None,
    handshake_failures: HandshakeFailures | None = None,
    open_socket: SocketOpener = open_udp_socket,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve STUN/TURN over DTLS on (host, port) until cancelled.

    Calls `task_status.started((host, port))` with the bound address once the socket is
    bound (port 0 picks a free port). `dtls_context`: a server context of
    `trelay.node.tls` (a certificate loaded into it later applies to new handshakes).
    `open_socket` makes the socket (a worker's: the one it inherited); it is closed on
    leaving.
    """
    sock = await open_socket(host, port)
    listener_stats = DtlsListenerStats() if stats is None else stats
    admission = _Admission(limits or DtlsSettings(), listener_stats)
    failures = HandshakeFailures() if handshake_failures is None else handshake_failures
    bound = sock.getsockname()
    server = (bound[0], bound[1])
    endpoint = trio.DTLSEndpoint(
        trio.socket.from_stdlib_socket(sock), incoming_packets_buffer=INCOMING_RECORDS
    )
    association = _Association(frontend, server, idle_timeout, admission, failures)
    # Closing the endpoint closes the socket (which ends trio's receive task) and every
    # association still open.
    with endpoint:
        async with trio.open_nursery() as nursery:
            await nursery.start(endpoint.serve, dtls_context, association.serve)
            task_status.started(server)


@dataclass(frozen=True, slots=True)
class _Association:
    """What serves each association of one listener (`serve`, one task per association)."""

    frontend: ClientFrontend
    server: Address
    idle_timeout: float
    admission: _Admission
    failures: HandshakeFailures

    async def serve(self, channel: trio.DTLSChannel) -> None:
        """One association, from its cookie-checked hello to its end (trio closes it)."""
        stats = self.admission.stats
        stats.associations_started += 1
        peer = channel.peer_address
        client = (str(peer[0]), int(peer[1]))
        source = source_of(client)
        if not self.admission.admit(source):
            return
        try:
            if not await self._handshake(channel, client):
                return
            stats.established += 1
            await self._run(channel, client)
        finally:
            self.admission.release(source)

    async def _handshake(self, channel: trio.DTLSChannel, client: Address) -> bool:
        stats = self.admission.stats
        stats.handshaking += 1
        try:
            # A client that starts and never finishes is held to the idle timeout, as
            # over TLS; trio retransmits our flights meanwhile (RFC 6347 §4.2.4).
            with trio.fail_after(self.idle_timeout):
                await channel.do_handshake()
        except (trio.TooSlowError, trio.BrokenResourceError, SSL.Error) as exc:
            stats.handshake_failures += 1
            self.failures.failed(client, _why(exc), trio.current_time())
            if isinstance(exc, SSL.Error):
                await _send_alert(channel, exc)
            return False
        finally:
            stats.handshaking -= 1
        return True

    async def _run(self, channel: trio.DTLSChannel, client: Address) -> None:
        outbox, pending = trio.open_memory_channel[bytes](OUTBOX_SIZE)
        session = self.frontend.stream_session(ClientTransport.DTLS, client, self.server, outbox)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write, channel, pending, self.admission.stats)
                await self._read(channel, session)
                nursery.cancel_scope.cancel()
        finally:
            session.close()  # RFC 8656 §3.1: the allocation ends with the association

    async def _read(self, channel: trio.DTLSChannel, session: StreamSession) -> None:
        stats = self.admission.stats
        while True:
            try:
                with trio.move_on_after(self.idle_timeout) as idle:
                    record = await channel.receive()
            except SSL.ZeroReturnError:
                stats.closed_by_client += 1  # close_notify
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, SSL.Error):
                stats.closed_broken += 1
                return
            if idle.cancelled_caught:
                if session.keeps_alive():
                    continue
                stats.closed_idle += 1
                return
            stats.records_received += 1
            framed = split_record(record)
            if framed is None:
                stats.records_malformed += 1
                continue
            session.frame(*framed)


def split_record(record: bytes) -> tuple[int | None, bytes] | None:
    """One DTLS record's message as a stream deframer gives it: (None, a STUN message)
    or (channel, ChannelData payload); None when it is neither (RFC 8656 §12.5: the
    first two bits tell; ChannelData's length field, not the record, bounds the data)."""
    if len(record) < _CHANNEL_DATA_HEADER:
        return None
    kind = record[0] >> 6
    if kind == 0:
        return None, record
    if kind != 1:
        return None
    length = int.from_bytes(record[2:4])
    if len(record) < _CHANNEL_DATA_HEADER + length:
        return None
    channel = int.from_bytes(record[0:2])
    return channel, record[_CHANNEL_DATA_HEADER : _CHANNEL_DATA_HEADER + length]


def unpadded(message: bytes) -> bytes:
    """`message` without ChannelData padding (RFC 8656 §12.5: for TCP and TLS only)."""
    if message[0] >> 6 == 1 and len(message) >= _CHANNEL_DATA_HEADER:
        end = _CHANNEL_DATA_HEADER + int.from_bytes(message[2:4])
        if len(message) > end:
            return message[:end]
    return message


async def _write(
    channel: trio.DTLSChannel,
    pending: trio.MemoryReceiveChannel[bytes],
    stats: DtlsListenerStats,
) -> None:
    """The association's one writer: each queued message in a record of its own."""
    async for message in pending:
        try:
            await channel.send(unpadded(message))
        except OSError:
            # The kernel refused this one datagram (a full buffer, an unreachable
            # client): UDP semantics, the next one may pass.
            stats.records_send_failed += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # replaced or closed: the reader ends the association


async def _send_alert(channel: trio.DTLSChannel, error: SSL.Error) -> None:
    """Tell a client whose hello OpenSSL refused why, with a fatal alert (RFC 6347 §4.1,
    RFC 5246 §7.2.2), so that it stops instead of retransmitting its hello until it gives
    up. trio does not send the alert OpenSSL made: this one is built here, in epoch 0
    (unencrypted) with a record number beyond any the client has seen from us, and with
    DTLS 1.0's record version, which clients accept before a version is agreed (trio's
    HelloVerifyRequest uses it too). Clients that offer several versions (coturn's
    `turnutils_uclient` picks DTLS 1.0 or 1.2 at random per connection) retry on it."""
    reason = _openssl_reason(error)
    description = _PROTOCOL_VERSION if "protocol" in reason else _HANDSHAKE_FAILURE
    alert = _ALERT_RECORD.pack(_ALERT, _DTLS_1_0, 0, _ALERT_RECORD_NUMBER, 2, _FATAL, description)
    with contextlib.suppress(OSError, trio.ClosedResourceError):
        await channel.endpoint.socket.sendto(alert, channel.peer_address)


def _openssl_reason(error: SSL.Error) -> str:
    # pyOpenSSL's errors carry [(library, function, reason), ...].
    details = error.args[0] if error.args else []
    if isinstance(details, list) and details and isinstance(details[-1], tuple):
        return str(details[-1][-1])
    return str(error)


def _why(error: BaseException) -> BaseException:
    if isinstance(error, trio.TooSlowError):
        return TimeoutError("handshake not finished within the idle timeout")
    return error
