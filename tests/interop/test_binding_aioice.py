"""aioice (asyncio) as a real STUN client of trelay's Binding listeners.

UDP: an `aioice.Connection` gathers a server-reflexive candidate from trelay; on loopback
there is no NAT, so it must equal the host candidate it was learned from (the real source
address and port). TCP and TLS: aioice's own STUN codec (`aioice.stun.Message`,
`parse_message`, which also checks our FINGERPRINT) over asyncio streams; the
XOR-MAPPED-ADDRESS must equal the client socket's own address.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from typing import Any

import aioice
import aioice.ice
import pytest
from aioice import stun as aioice_stun

from tests.helpers.binding_relay import SOFTWARE, ThreadedRelay

pytestmark = pytest.mark.interop

TIMEOUT = 20


def test_aioice_gathers_a_server_reflexive_candidate_over_udp(
    relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioice leaves 127.0.0.1 out of its host addresses; keep every packet on loopback.
    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_only)
    relay.responder.clear()

    async def gather() -> list[Any]:
        connection = aioice.Connection(ice_controlling=True, stun_server=relay.udp, use_ipv6=False)
        try:
            await asyncio.wait_for(connection.gather_candidates(), TIMEOUT)
            return list(connection.local_candidates)
        finally:
            await connection.close()

    candidates = asyncio.run(gather())
    hosts = [c for c in candidates if c.type == "host"]
    reflexive = [c for c in candidates if c.type == "srflx"]
    assert len(hosts) == 1
    assert len(reflexive) == 1
    (host,), (srflx,) = hosts, reflexive
    assert (srflx.host, srflx.port) == (host.host, host.port)
    assert (srflx.related_address, srflx.related_port) == (host.host, host.port)
    # And it is what trelay saw on the wire.
    assert (host.host, host.port) in relay.responder.sources()


async def binding_over_stream(
    address: tuple[str, int], ssl_context: ssl.SSLContext | None
) -> tuple[aioice_stun.Message, aioice_stun.Message, tuple[str, int]]:
    """Send one aioice Binding request on a stream; return it, the response, our address."""
    reader, writer = await asyncio.open_connection(
        *address,
        ssl=ssl_context,
        server_hostname="127.0.0.1" if ssl_context is not None else None,
    )
    try:
        request = aioice_stun.Message(
            message_method=aioice_stun.Method.BINDING,
            message_class=aioice_stun.Class.REQUEST,
        )
        request.add_fingerprint()
        writer.write(bytes(request))
        await writer.drain()
        header = await reader.readexactly(20)
        (length,) = struct.unpack("!H", header[2:4])
        response = aioice_stun.parse_message(header + await reader.readexactly(length))
        host, port = writer.get_extra_info("sockname")[:2]
        return request, response, (host, port)
    finally:
        writer.close()
        await writer.wait_closed()


def check_binding_response(
    request: aioice_stun.Message, response: aioice_stun.Message, local: tuple[str, int]
) -> None:
    assert response.message_method == aioice_stun.Method.BINDING
    assert response.message_class == aioice_stun.Class.RESPONSE
    assert response.transaction_id == request.transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == local
    assert response.attributes["SOFTWARE"] == SOFTWARE
    # parse_message raises on a wrong FINGERPRINT, so its presence means it matched.
    assert "FINGERPRINT" in response.attributes


def test_aioice_codec_over_tcp(relay: ThreadedRelay) -> None:
    async def run() -> tuple[aioice_stun.Message, aioice_stun.Message, tuple[str, int]]:
        return await asyncio.wait_for(binding_over_stream(relay.tcp, None), TIMEOUT)

    check_binding_response(*asyncio.run(run()))


def test_aioice_codec_over_tls(relay: ThreadedRelay) -> None:
    context = ssl.create_default_context(cadata=relay.cert_pem.decode("ascii"))

    async def run() -> tuple[aioice_stun.Message, aioice_stun.Message, tuple[str, int]]:
        return await asyncio.wait_for(binding_over_stream(relay.tls, context), TIMEOUT)

    check_binding_response(*asyncio.run(run()))


def test_aioice_codec_over_udp_with_an_unknown_method_gets_400(relay: ThreadedRelay) -> None:
    # Until the TURN core lands, an Allocate gets 400: aioice must parse our error layout.
    async def run() -> aioice_stun.Message:
        loop = asyncio.get_running_loop()
        received: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not received.done():
                    received.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
        try:
            request = aioice_stun.Message(
                message_method=aioice_stun.Method.ALLOCATE,
                message_class=aioice_stun.Class.REQUEST,
            )
            transport.sendto(bytes(request), relay.udp)
            data = await asyncio.wait_for(received, TIMEOUT)
        finally:
            transport.close()
        response = aioice_stun.parse_message(data)
        assert response.transaction_id == request.transaction_id
        return response

    response = asyncio.run(run())
    assert response.message_method == aioice_stun.Method.ALLOCATE
    assert response.message_class == aioice_stun.Class.ERROR
    assert response.attributes["ERROR-CODE"] == (400, "Bad Request")
