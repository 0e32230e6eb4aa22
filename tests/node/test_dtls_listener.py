"""The DTLS listener (RFC 7350) with a STUN-only frontend: Binding over DTLS, one message per
record, the same certificate as TLS, its bounds (per source, idle), and `split_record`."""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from cryptography import x509
from OpenSSL import SSL

from tests.helpers.dtls_client import ServerCertificate, client_context, dtls_channel
from tests.helpers.polling import wait_until
from trelay.config.dtls_settings import DtlsSettings
from trelay.config.settings import ListenSettings, Settings, TlsSettings
from trelay.config.values import ListenAddress, SettingsError
from trelay.node.dtls_listener import (
    DtlsListenerStats,
    serve_dtls,
    split_record,
    unpadded,
)
from trelay.node.frontend import ResponderFrontend
from trelay.node.listeners import BoundAddresses, serve
from trelay.node.stream_listener import HandshakeFailures
from trelay.node.tls import (
    contexts_for,
    dtls_context_from_pem,
    dtls_server_context,
    generate_self_signed,
)
from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id
from trelay.turn.binding import BindingResponder

TIMEOUT = 20
LOOPBACK = ListenAddress("127.0.0.1", 0)


def binding() -> bytes:
    return encode_message(Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id()))


async def answer(channel: trio.DTLSChannel, request: bytes) -> Message:
    await channel.send(request)
    with trio.fail_after(TIMEOUT):
        return decode_message(await channel.receive())


@dataclass
class StunOverDtls:
    address: tuple[str, int]
    stats: DtlsListenerStats
    failures: HandshakeFailures


@asynccontextmanager
async def dtls_listener(
    *, idle_timeout: float = 30.0, limits: DtlsSettings | None = None
) -> AsyncIterator[StunOverDtls]:
    stats, failures = DtlsListenerStats(), HandshakeFailures()
    context = dtls_context_from_pem(generate_self_signed(["127.0.0.1"]))
    frontend = ResponderFrontend(BindingResponder("test"))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(
                serve_dtls, "127.0.0.1", 0, frontend,
                dtls_context=context, idle_timeout=idle_timeout, limits=limits,
                stats=stats, handshake_failures=failures,
            )
        )  # fmt: skip
        yield StunOverDtls(address, stats, failures)
        nursery.cancel_scope.cancel()


async def test_binding_over_dtls_answers_the_client_address() -> None:
    async with dtls_listener() as listener, dtls_channel(listener.address) as channel:
        reply = await answer(channel, binding())
        mapped = reply.get(XorMappedAddress)
        local = channel.endpoint.socket.getsockname()
        assert reply.message_class is MessageClass.SUCCESS
        assert mapped is not None and mapped.address == (local[0], local[1])
        # Each request its own record, each answer its own record: two in a row.
        first, second = binding(), binding()
        await channel.send(first)
        await channel.send(second)
        with trio.fail_after(TIMEOUT):
            answers = [decode_message(await channel.receive()) for _ in range(2)]
        assert [a.transaction_id for a in answers] == [first[8:20], second[8:20]]
        assert listener.stats.established == 1
        assert listener.stats.records_received == 3


async def test_binding_over_dtls_on_ipv6_loopback() -> None:
    context = dtls_context_from_pem(generate_self_signed(["::1"]))
    frontend = ResponderFrontend(BindingResponder("test"))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(serve_dtls, "::1", 0, frontend, dtls_context=context)
        )
        sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        await sock.bind(("::1", 0))
        with trio.DTLSEndpoint(sock) as endpoint:
            # trio's client side matches datagrams by the address recvfrom gives, which
            # for IPv6 has flowinfo and scope id too.
            channel = endpoint.connect((*address, 0, 0), client_context())
            with trio.fail_after(TIMEOUT):
                await channel.do_handshake()
            reply = await answer(channel, binding())
            mapped = reply.get(XorMappedAddress)
            assert mapped is not None and mapped.address == sock.getsockname()[:2]
        nursery.cancel_scope.cancel()


async def test_a_record_that_is_no_stun_message_is_dropped_and_the_association_goes_on() -> None:
    async with dtls_listener() as listener, dtls_channel(listener.address) as channel:
        await channel.send(b"\xc0garbage, not STUN")
        await channel.send(b"\x40\x00\x00\x10short")  # ChannelData shorter than its length
        reply = await answer(channel, binding())
        assert reply.message_class is MessageClass.SUCCESS
        assert listener.stats.records_malformed == 2


def test_split_record() -> None:
    stun = binding()
    assert split_record(stun) == (None, stun)
    # ChannelData: the length field bounds the payload; padding (RFC 8656 §12.5) is ignored.
    assert split_record(b"\x40\x01\x00\x03abc") == (0x4001, b"abc")
    assert split_record(b"\x40\x01\x00\x03abc\x00") == (0x4001, b"abc")
    assert split_record(b"\x40\x01\x00\x04abc") is None
    assert split_record(b"\x80\x00\x00\x00") is None
    assert split_record(b"\x00\x01") is None


def test_unpadded_cuts_channel_data_to_its_length_and_leaves_the_rest() -> None:
    assert unpadded(b"\x40\x01\x00\x03abc\x00") == b"\x40\x01\x00\x03abc"
    assert unpadded(b"\x40\x01\x00\x04abcd") == b"\x40\x01\x00\x04abcd"
    stun = binding()
    assert unpadded(stun) is stun


async def test_an_association_that_stays_silent_is_closed() -> None:
    async with dtls_listener(idle_timeout=0.2) as listener, dtls_channel(listener.address):
        await wait_until(lambda: listener.stats.closed_idle == 1)
        assert listener.stats.associations == 0


async def test_associations_per_source_are_bounded_and_other_sources_still_served() -> None:
    limits = DtlsSettings(associations_per_source=2)
    async with dtls_listener(limits=limits) as listener:
        address = listener.address
        async with dtls_channel(address) as first, dtls_channel(address) as second:
            assert listener.stats.associations == 2
            async with trio.open_nursery() as nursery:
                # A third from 127.0.0.1: the listener closes it at once; the client would
                # retransmit its hello until its own timeout, so the test stops it.
                nursery.start_soon(_handshake_forever, address)
                await wait_until(lambda: listener.stats.refused_per_source >= 1)
                nursery.cancel_scope.cancel()
            async with dtls_channel(address, host="127.0.0.2") as other:
                assert (await answer(other, binding())).message_class is MessageClass.SUCCESS
            for channel in (first, second):
                assert (await answer(channel, binding())).message_class is MessageClass.SUCCESS
        # Two from 127.0.0.1 and one from 127.0.0.2 (trio's client sends no close_notify:
        # the listener holds them until they idle out); the refused one was never up.
        assert listener.stats.associations == 3
        assert listener.stats.established == 3


async def _handshake_forever(address: tuple[str, int]) -> None:
    async with dtls_channel(address, time_limit=float("inf")):
        raise AssertionError("the handshake of a refused association finished")


async def test_a_dtls_1_0_hello_gets_a_fatal_alert_not_silence() -> None:
    # coturn's turnutils_uclient offers DTLS 1.0 on about half its connections and only
    # tries again (with DTLS 1.2, by chance) when the handshake fails: silence would
    # leave it retransmitting forever.
    context = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    context.set_options(SSL.OP_NO_QUERY_MTU)  # memory BIOs have no MTU to ask
    context.set_max_proto_version(0xFEFF)  # DTLS 1.0 only
    context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # which OpenSSL allows only at level 0
    client = SSL.Connection(context, None)
    client.set_connect_state()
    client.set_ciphertext_mtu(1400)

    def step(received: bytes | None = None) -> bytes:
        if received is not None:
            client.bio_write(received)
        with contextlib.suppress(SSL.WantReadError):
            client.do_handshake()
        return client.bio_read(65536)

    async with dtls_listener() as listener:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            await sock.sendto(step(), listener.address)
            with trio.fail_after(TIMEOUT):
                verify = await sock.recv(65536)
            await sock.sendto(step(verify), listener.address)
            with trio.fail_after(TIMEOUT):
                alert = await sock.recv(65536)
        assert alert[0] == 21  # an alert record
        assert alert[-2:] == bytes([2, 70])  # fatal, protocol_version
        with pytest.raises(SSL.Error):
            step(alert)
        assert listener.stats.handshake_failures == 1
        assert listener.failures.count == 1
        await wait_until(lambda: listener.stats.associations == 0)


async def test_the_dev_certificate_is_the_same_for_tls_and_dtls() -> None:
    listen = ListenSettings(udp=(), tcp=(), tls=(LOOPBACK,), dtls=(LOOPBACK,))
    settings = Settings(listen=listen)
    recorded = ServerCertificate()
    async with trio.open_nursery() as nursery:
        bound: BoundAddresses = await nursery.start(serve, settings)
        async with dtls_channel(bound.dtls[0], recorded=recorded) as channel:
            assert (await answer(channel, binding())).message_class is MessageClass.SUCCESS
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        stream = await trio.open_ssl_over_tcp_stream(*bound.tls[0], ssl_context=client)
        with trio.fail_after(TIMEOUT):
            await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert der is not None and recorded.certificate is not None
    assert recorded.certificate == x509.load_der_x509_certificate(der)


def test_dtls_context_from_files_refuses_a_key_that_does_not_match(tmp_path: Path) -> None:
    one, other = generate_self_signed(["a.test"]), generate_self_signed(["b.test"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(one.cert_pem)
    key.write_bytes(other.key_pem)
    with pytest.raises(SettingsError) as raised:
        dtls_server_context(cert, key)
    assert raised.value.key == "tls.key"
    key.write_bytes(one.key_pem)
    dtls_server_context(cert, key)  # the matching pair loads
    made = contexts_for(TlsSettings(cert, key), [], ["127.0.0.1"])
    assert made.tls is None and made.dtls is not None
