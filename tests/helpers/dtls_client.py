"""A DTLS client for the tests (trio's DTLS client side, on pyOpenSSL), and a TURN client on it.

`dtls_channel` opens a UDP socket on loopback and completes a DTLS handshake with a
server, without verifying its certificate (pyOpenSSL's default, VERIFY_NONE) but
recording it (`ServerCertificate`); `dtls_client` is `tests.helpers.turn_client`'s
TurnClient over such a channel: each request and each ChannelData one DTLS record, and
unreliable, so requests are retransmitted as over UDP. Every wait has a timeout.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
from cryptography import x509
from OpenSSL import SSL, crypto

from tests.helpers.turn_client import LOOPBACK, TIMEOUT, TurnClient, _Udp
from trelay.turn.addressing import Address


@dataclass
class ServerCertificate:
    """The certificate the server presented in the handshake (None before it)."""

    certificate: x509.Certificate | None = None
    seen: list[x509.Certificate] = field(default_factory=list)


def client_context(recorded: ServerCertificate | None = None) -> SSL.Context:
    context = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    if recorded is not None:

        def record(
            connection: SSL.Connection, cert: crypto.X509, error: int, depth: int, ok: int
        ) -> bool:
            if depth == 0:
                recorded.certificate = cert.to_cryptography()
                recorded.seen.append(recorded.certificate)
            return True  # record, never refuse: the test compares what it saw

        context.set_verify(SSL.VERIFY_PEER, record)
    return context


@asynccontextmanager
async def dtls_channel(
    server: Address,
    *,
    host: str = LOOPBACK,
    port: int = 0,
    time_limit: float = TIMEOUT,
    recorded: ServerCertificate | None = None,
) -> AsyncIterator[trio.DTLSChannel]:
    """A DTLS association with `server` from (host, port), handshake done."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((host, port))
    with trio.DTLSEndpoint(sock) as endpoint:
        channel = endpoint.connect(server, client_context(recorded))
        with trio.fail_after(time_limit):
            await channel.do_handshake()
        yield channel


class DtlsTransport(_Udp):
    """`TurnClient`'s transport over a DTLS association: one message per record."""

    def __init__(self, channel: trio.DTLSChannel) -> None:
        # Not `_Udp.__init__`: no raw socket of our own; the endpoint holds it.
        self.channel = channel
        self.server = channel.peer_address
        self.reliable = False
        host, port = channel.endpoint.socket.getsockname()[:2]
        self._local = (host, port)

    async def send(self, data: bytes) -> None:
        await self.channel.send(data)

    async def receive(self) -> bytes:
        return await self.channel.receive()

    def local(self) -> Address:
        return self._local

    def discard(self) -> int:
        raise AssertionError("not over DTLS")

    async def aclose(self) -> None:
        self.channel.close()


@asynccontextmanager
async def dtls_client(
    server: Address, *, host: str = LOOPBACK, port: int = 0, time_limit: float = TIMEOUT
) -> AsyncIterator[TurnClient]:
    """A TURN client (alice/wonderland) over a fresh DTLS association."""
    async with dtls_channel(server, host=host, port=port, time_limit=time_limit) as channel:
        client = TurnClient(DtlsTransport(channel), timeout=time_limit)
        try:
            yield client
        finally:
            await client.aclose()
