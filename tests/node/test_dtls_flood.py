"""DTLS state exhaustion (coturn's 2026 advisories; RFC 6347 §4.2.1): a flood of ClientHellos
from many source ports leaves the node holding nothing, a flood of clients that answer
the cookie and then stall is held to the per-source bound and times out, and all the
while a real DTLS client on another address allocates and relays.

The flooders are pyOpenSSL client connections on memory BIOs over plain UDP sockets on
loopback (127.0.0.2, 127.0.0.3), so the test controls what each sends; the real client is
trio's DTLS client (`tests.helpers.dtls_client`) from 127.0.0.1. What the node holds is
read two ways: the listener's own counts (`DtlsListenerStats`) and the DTLS channel
objects alive in the process (trio makes one per association; a half-open hello that
trio keeps state for would show there).
"""

from __future__ import annotations

import gc
import socket
from contextlib import AbstractAsyncContextManager, suppress

import trio
from OpenSSL import SSL

from tests.helpers.dtls_client import dtls_client
from tests.helpers.dtls_node import DtlsNode, dtls_node
from tests.helpers.polling import wait_until
from tests.helpers.turn_client import peer
from trelay.config.dtls_settings import DtlsSettings
from trelay.config.settings import StreamSettings
from trelay.turn.addressing import Address

TIMEOUT = 30
# Hellos without a cookie, each from a port of its own; sockets open at once.
HELLO_PORTS = 3000
HELLO_BATCH = 100
# Clients that answer the HelloVerifyRequest and then stall, each from its own port.
STALLED_PORTS = 300
PER_SOURCE = 128
IDLE_TIMEOUT = 3.0
CHANNEL = 0x4001
_HANDSHAKE = 22
_HELLO_VERIFY_REQUEST = 3


def flooded_node() -> AbstractAsyncContextManager[DtlsNode]:
    """A DTLS-only node whose idle and per-source bounds the floods reach within the test."""
    return dtls_node(
        stream=StreamSettings(idle_timeout=IDLE_TIMEOUT),
        dtls=DtlsSettings(associations_per_source=PER_SOURCE),
    )


def dtls_channels_alive() -> int:
    """trio's DTLS channel objects in this process (one per association it holds)."""
    gc.collect()
    return sum(isinstance(o, trio.DTLSChannel) for o in gc.get_objects())


class FloodClient:
    """One DTLS client handshake on memory BIOs: hellos out, the server's volley in."""

    def __init__(self) -> None:
        context = SSL.Context(SSL.DTLS_CLIENT_METHOD)
        context.set_options(SSL.OP_NO_QUERY_MTU)  # memory BIOs have no MTU to ask
        self.connection = SSL.Connection(context, None)
        self.connection.set_connect_state()
        self.connection.set_ciphertext_mtu(1400)

    def step(self, received: bytes | None = None) -> bytes:
        """Feed what the server sent (if anything); what to send it next."""
        if received is not None:
            self.connection.bio_write(received)
        with suppress(SSL.WantReadError):
            self.connection.do_handshake()
        return self.connection.bio_read(65536)


def is_hello_verify_request(datagram: bytes) -> bool:
    # Record header: type(1) version(2) epoch+seq(8) length(2); then the handshake type.
    return (
        len(datagram) > 13 and datagram[0] == _HANDSHAKE and datagram[13] == _HELLO_VERIFY_REQUEST
    )


async def flood_hellos(server: Address) -> int:
    """One ClientHello from each of HELLO_PORTS ports of 127.0.0.2; how many of them got a
    HelloVerifyRequest back (each batch's sockets stay open until their answers came),
    each smaller than the hello (a forged source gains no amplification)."""
    hello = FloodClient().step()
    verified = 0
    for _ in range(HELLO_PORTS // HELLO_BATCH):
        sockets = []
        try:
            for _ in range(HELLO_BATCH):
                sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                await sock.bind(("127.0.0.2", 0))
                await sock.sendto(hello, server)
            for sock in sockets:
                with trio.move_on_after(TIMEOUT):
                    answer = await sock.recv(65536)
                    assert len(answer) < len(hello)
                    verified += is_hello_verify_request(answer)
        finally:
            for sock in sockets:
                sock.close()
    return verified


async def stall_after_the_cookie(
    server: Address, sockets: list[trio.socket.SocketType], clients: list[FloodClient]
) -> None:
    """From each of STALLED_PORTS ports of 127.0.0.3: a hello, then the hello with the
    server's cookie, then nothing (the sockets stay open: the caller closes them)."""
    for _ in range(STALLED_PORTS):
        client = FloodClient()
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sockets.append(sock)
        clients.append(client)
        await sock.bind(("127.0.0.3", 0))
        await sock.sendto(client.step(), server)
        with trio.fail_after(TIMEOUT):
            verify = await sock.recv(65536)
        assert is_hello_verify_request(verify)
        await sock.sendto(client.step(verify), server)


async def test_a_hello_flood_leaves_no_state_and_a_real_client_is_served() -> None:
    async with flooded_node() as local, peer() as relay_peer:
        verified = await flood_hellos(local.dtls)
        # Every hello was answered statelessly: no association, no DTLS channel.
        assert verified == HELLO_PORTS
        assert local.stats.associations_started == 0
        assert local.stats.associations == 0
        assert dtls_channels_alive() == 0
        async with dtls_client(local.dtls) as client:
            relayed = await client.allocate()
            await client.channel_bind(CHANNEL, relay_peer.address)
            await client.send_channel_data(CHANNEL, b"after the flood")
            data, source = await relay_peer.receive()
            assert (data, source) == (b"after the flood", relayed)


async def test_stalled_handshakes_are_bounded_per_source_and_time_out() -> None:
    sockets: list[trio.socket.SocketType] = []
    clients: list[FloodClient] = []
    async with flooded_node() as local, peer() as relay_peer:
        try:
            await stall_after_the_cookie(local.dtls, sockets, clients)
            stats = local.stats
            # Each cookie-checked hello made an association; beyond the per-source bound
            # each was closed at once. Some of the first may have timed out already.
            await wait_until(lambda: stats.associations_started == STALLED_PORTS, limit=TIMEOUT)
            assert stats.refused_per_source >= STALLED_PORTS - PER_SOURCE
            assert stats.associations <= PER_SOURCE
            assert stats.handshaking <= PER_SOURCE
            # (+1: trio's accept loop keeps its last association in a variable, closed.)
            assert dtls_channels_alive() <= PER_SOURCE + 1
            # Meanwhile a client from another address allocates and relays.
            async with dtls_client(local.dtls) as client:
                relayed = await client.allocate()
                await client.channel_bind(CHANNEL, relay_peer.address)
                await client.send_channel_data(CHANNEL, b"during the flood")
                assert await relay_peer.receive() == (b"during the flood", relayed)
                # The stalled ones end at the handshake timeout; the real one stays.
                await wait_until(lambda: stats.handshaking == 0, limit=TIMEOUT)
                assert stats.associations == 1
                assert stats.handshake_failures == STALLED_PORTS - stats.refused_per_source
                await client.send_channel_data(CHANNEL, b"after the timeouts")
                assert await relay_peer.receive() == (b"after the timeouts", relayed)
            assert local.node.tls_handshake_failures.count == stats.handshake_failures
        finally:
            for sock in sockets:
                sock.close()
