"""serve(): order, TCP/UDP port pairing and errors (with fake listeners), then real ones."""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from trelay.config.settings import ListenSettings, Settings, StreamSettings, TlsSettings
from trelay.config.values import ListenAddress, SettingsError
from trelay.node.exhaustion import Exhaustion
from trelay.node.frontend import ClientFrontend, ResponderFrontend
from trelay.node.listeners import BoundAddresses, ListenError, Listeners, paired_ports, serve
from trelay.node.stream_listener import HandshakeFailures
from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.attributes import Software
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id
from trelay.turn.binding import BindingResponder

TIMEOUT = 20
HostPort = tuple[str, int]


def binding_request() -> Message:
    return Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id())


@dataclass(frozen=True, slots=True)
class Call:
    kind: str
    host: str
    port: int
    idle_timeout: float | None = None


@dataclass
class FakeNetwork:
    """Listener fakes: ports from 40000 up, `taken` ports fail with EADDRINUSE."""

    taken: set[HostPort] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    frontends: list[ClientFrontend] = field(default_factory=list)
    cancelled: list[Call] = field(default_factory=list)
    next_port: int = 40000

    def listeners(self) -> Listeners:
        return Listeners(udp=self.udp, stream=self.stream)

    async def _run(self, call: Call, task_status: trio.TaskStatus[HostPort]) -> None:
        self.calls.append(call)
        if (call.host, call.port) in self.taken:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        port = call.port
        if port == 0:
            port, self.next_port = self.next_port, self.next_port + 1
        task_status.started((call.host, port))
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled.append(call)

    async def udp(
        self,
        host: str,
        port: int,
        frontend: ClientFrontend,
        *,
        task_status: trio.TaskStatus[HostPort] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.frontends.append(frontend)
        await self._run(Call("udp", host, port), task_status)

    async def stream(
        self,
        host: str,
        port: int,
        frontend: ClientFrontend,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 30.0,
        handshake_failures: HandshakeFailures | None = None,
        exhaustion: Exhaustion | None = None,
        task_status: trio.TaskStatus[HostPort] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.frontends.append(frontend)
        kind = "tcp" if ssl_context is None else "tls"
        await self._run(Call(kind, host, port, idle_timeout), task_status)


def listen(udp: str = "", tcp: str = "", tls: str = "") -> ListenSettings:
    def addresses(text: str) -> tuple[ListenAddress, ...]:
        pairs = (item.rsplit(":", 1) for item in text.split())
        return tuple(ListenAddress(host.strip("[]"), int(port)) for host, port in pairs)

    return ListenSettings(addresses(udp), addresses(tcp), addresses(tls))


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def start_with(
    settings: Settings, network: FakeNetwork, frontend: ClientFrontend | None = None
) -> BoundAddresses:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            bound: BoundAddresses = await nursery.start(
                lambda task_status: serve(
                    settings,
                    frontend=frontend,
                    listeners=network.listeners(),
                    task_status=task_status,
                )
            )
        nursery.cancel_scope.cancel()
    return bound


async def test_dev_default_pairs_tcp_with_the_udp_port() -> None:
    network = FakeNetwork()
    settings = Settings(stream=StreamSettings(idle_timeout=7.5))
    bound = await start_with(settings, network)
    assert bound == BoundAddresses(
        udp=(("127.0.0.1", 40000),), tcp=(("127.0.0.1", 40000),), tls=(("127.0.0.1", 40001),)
    )
    assert network.calls == [
        Call("udp", "127.0.0.1", 0),
        Call("tcp", "127.0.0.1", 40000, 7.5),
        Call("tls", "127.0.0.1", 0, 7.5),
    ]
    # Cancelling serve's caller closes every listener.
    assert sorted(c.kind for c in network.cancelled) == ["tcp", "tls", "udp"]


async def test_a_taken_twin_port_falls_back_to_any_port() -> None:
    network = FakeNetwork(taken={("127.0.0.1", 40000)})
    bound = await start_with(Settings(listen=listen(udp="127.0.0.1:0", tcp="127.0.0.1:0")), network)
    assert bound == BoundAddresses(udp=(("127.0.0.1", 40000),), tcp=(("127.0.0.1", 40001),))
    assert [c.port for c in network.calls] == [0, 40000, 0]


async def test_fixed_ports_are_not_paired() -> None:
    network = FakeNetwork()
    settings = Settings(listen=listen(udp="127.0.0.1:0", tcp="127.0.0.1:5000", tls="[::1]:0"))
    bound = await start_with(settings, network)
    assert bound.tcp == (("127.0.0.1", 5000),)
    assert bound.tls == (("::1", 40001),)
    assert [c.port for c in network.calls] == [0, 5000, 0]


def test_paired_ports_match_host_and_order() -> None:
    settings = listen(
        udp="127.0.0.1:0 [::1]:0 127.0.0.1:0 127.0.0.1:3478",
        tcp="[::1]:0 127.0.0.1:0 127.0.0.1:0 127.0.0.1:0 127.0.0.2:0 127.0.0.1:9",
    )
    udp_bound = [("127.0.0.1", 1001), ("::1", 1002), ("127.0.0.1", 1003), ("127.0.0.1", 3478)]
    assert paired_ports(settings, udp_bound) == [1002, 1001, 1003, None, None, None]


async def test_a_listener_that_cannot_bind_names_its_key_and_closes_the_others() -> None:
    network = FakeNetwork(taken={("127.0.0.2", 3478)})
    settings = Settings(listen=listen(udp="127.0.0.1:0 127.0.0.2:3478"))
    with pytest.RaisesGroup(ListenError, flatten_subgroups=True) as caught:
        await start_with(settings, network)
    [error] = leaves(caught.value)
    assert isinstance(error, ListenError)
    assert error.key == "listen.udp[1]"
    assert error.address == ListenAddress("127.0.0.2", 3478)
    assert error.error.errno == errno.EADDRINUSE
    assert str(error) == "listen.udp[1]: cannot listen on 127.0.0.2:3478: Address already in use"
    assert network.cancelled == [Call("udp", "127.0.0.1", 0)]


async def test_bad_tls_files_fail_before_anything_binds(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("garbage")
    key.write_text("garbage")
    network = FakeNetwork()
    # Raised by serve itself, before it opens its nursery: no group, nothing bound.
    with trio.fail_after(TIMEOUT), pytest.raises(SettingsError) as caught:
        await serve(Settings(tls=TlsSettings(cert, key)), listeners=network.listeners())
    assert caught.value.key == "tls.cert"
    assert network.calls == []


async def test_no_tls_listener_needs_no_certificate(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    settings = Settings(listen=listen(udp="127.0.0.1:0"), tls=TlsSettings(missing, missing))
    bound = await start_with(settings, FakeNetwork())
    assert bound == BoundAddresses(udp=(("127.0.0.1", 40000),))


async def test_listeners_answer_binding_with_the_configured_software() -> None:
    network = FakeNetwork()
    await start_with(Settings(software="trelay-under-test"), network)
    # By default every listener gets one STUN-only frontend.
    frontend = network.frontends[0]
    assert network.frontends == [frontend] * 3
    assert isinstance(frontend, ResponderFrontend)
    request = binding_request()
    reply = frontend.responder(encode_message(request), ("192.0.2.1", 5555))
    assert reply is not None
    response = decode_message(reply)
    assert response.transaction_id == request.transaction_id
    assert response.get(Software) == Software("trelay-under-test")
    assert response.get(XorMappedAddress) == XorMappedAddress("192.0.2.1", 5555)


async def test_a_given_frontend_reaches_every_listener() -> None:
    network = FakeNetwork()
    frontend = ResponderFrontend(BindingResponder("custom"))
    await start_with(Settings(), network, frontend)
    assert network.frontends == [frontend, frontend, frontend]


# --- the real listeners -----------------------------------------------------------------


async def receive_message(stream: trio.abc.ReceiveStream) -> Message:
    """One STUN message from a byte stream (header, then Length bytes)."""
    data = b""
    for _ in range(1000):
        needed = 20 if len(data) < 20 else 20 + int.from_bytes(data[2:4], "big")
        if len(data) >= needed:
            return decode_message(data[:needed])
        chunk = await stream.receive_some(needed - len(data))
        assert chunk, "connection closed before a whole message"
        data += chunk
    raise AssertionError("no complete message")


def insecure_client() -> ssl.SSLContext:
    # The dev default certificate is throw-away; what is tested here is STUN over TLS.
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return client


async def test_real_listeners_answer_over_udp_tcp_and_tls() -> None:
    settings = Settings(software="trelay-real")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            bound: BoundAddresses = await nursery.start(serve, settings)
            # Port 0 for UDP and TCP: TCP got the same number, unless it was taken.
            assert bound.udp[0][0] == bound.tcp[0][0] == bound.tls[0][0] == "127.0.0.1"

            udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with udp:
                await udp.bind(("127.0.0.1", 0))
                request = binding_request()
                await udp.sendto(encode_message(request), bound.udp[0])
                reply = decode_message(await udp.recv(2048))
                assert reply.transaction_id == request.transaction_id
                assert reply.message_class is MessageClass.SUCCESS
                assert reply.get(XorMappedAddress) == XorMappedAddress(*udp.getsockname())
                assert reply.get(Software) == Software("trelay-real")

            tcp = await trio.open_tcp_stream(*bound.tcp[0])
            async with tcp:
                request = binding_request()
                await tcp.send_all(encode_message(request))
                reply = await receive_message(tcp)
                assert reply.transaction_id == request.transaction_id
                host, port = tcp.socket.getsockname()[:2]
                assert reply.get(XorMappedAddress) == XorMappedAddress(host, port)

            tls = await trio.open_ssl_over_tcp_stream(*bound.tls[0], ssl_context=insecure_client())
            async with tls:
                request = binding_request()
                await tls.send_all(encode_message(request))
                reply = await receive_message(tls)
                assert reply.transaction_id == request.transaction_id
                assert reply.message_class is MessageClass.SUCCESS
            nursery.cancel_scope.cancel()


async def test_real_listeners_report_a_port_in_use() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        await holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        settings = Settings(listen=listen(udp=f"127.0.0.1:{port}"))
        with trio.fail_after(TIMEOUT), pytest.RaisesGroup(ListenError, flatten_subgroups=True):
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, settings)
