"""Start every listener a `Settings` names, in one nursery, and report where they are bound.

Owns the order and the pairing of the listeners, not their loops (those are
`trelay.node.udp_listener`, `trelay.node.stream_listener` and `trelay.node.dtls_listener`)
nor what the traffic means (the `trelay.node.frontend.ClientFrontend` given; by default a
STUN-only `BindingResponder`):
- the TLS and DTLS contexts are built before anything binds, so a bad certificate file
  is a `SettingsError` with no socket opened; without certificate files they share one
  throw-away certificate;
- UDP first, then TCP, then TLS, then DTLS, each with `await nursery.start(...)`, so
  `serve` reports `BoundAddresses` only once every socket is bound (design §4);
- a TCP address with port 0 first tries the port that the matching port-0 UDP address
  on the same host got (the dev default then shows "host:P" for both, as STUN and TURN
  servers conventionally pair them); if that port is taken it falls back to any free port;
- a listener that cannot bind is a `ListenError` naming its settings key;
- with `[nat_discovery]` (RFC 5780), the three UDP addresses it adds (`listen.nat`) are
  bound right after `listen.udp`, served like them, and not reported in `BoundAddresses`
  (they are no addresses to hand clients; the core knows them, `trelay.turn.nat_discovery`).

Cancelling the caller's scope closes every listener.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio
from OpenSSL import SSL

from trelay.config.dtls_settings import DtlsSettings
from trelay.config.settings import ListenSettings, Settings
from trelay.config.values import ListenAddress, format_host_port
from trelay.node.dtls_listener import serve_dtls
from trelay.node.exhaustion import Exhaustion
from trelay.node.frontend import ClientFrontend, ResponderFrontend
from trelay.node.stream_listener import HandshakeFailures, serve_stream
from trelay.node.tls import DtlsCertificate, contexts_for
from trelay.node.udp_listener import serve_udp
from trelay.turn.binding import BindingResponder

logger = logging.getLogger(__name__)

HostPort = tuple[str, int]


class UdpServe(Protocol):
    async def __call__(
        self,
        host: str,
        port: int,
        frontend: ClientFrontend,
        /,
        *,
        task_status: trio.TaskStatus[HostPort] = ...,
    ) -> None: ...


class StreamServe(Protocol):
    async def __call__(
        self,
        host: str,
        port: int,
        frontend: ClientFrontend,
        /,
        *,
        ssl_context: ssl.SSLContext | None = ...,
        idle_timeout: float = ...,
        handshake_failures: HandshakeFailures | None = ...,
        exhaustion: Exhaustion | None = ...,
        task_status: trio.TaskStatus[HostPort] = ...,
    ) -> None: ...


class DtlsServe(Protocol):
    async def __call__(
        self,
        host: str,
        port: int,
        frontend: ClientFrontend,
        /,
        *,
        dtls_context: SSL.Context,
        idle_timeout: float = ...,
        limits: DtlsSettings | None = ...,
        handshake_failures: HandshakeFailures | None = ...,
        task_status: trio.TaskStatus[HostPort] = ...,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Listeners:
    """The listener loops `serve` runs; tests pass fakes."""

    udp: UdpServe = serve_udp
    stream: StreamServe = serve_stream
    dtls: DtlsServe = serve_dtls


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    """Where each transport actually listens, in the order of the settings."""

    udp: tuple[HostPort, ...] = ()
    tcp: tuple[HostPort, ...] = ()
    tls: tuple[HostPort, ...] = ()
    dtls: tuple[HostPort, ...] = ()


class ListenError(Exception):
    """A listen address that could not be bound (in use, not a local address, ...)."""

    def __init__(self, key: str, address: ListenAddress, error: OSError) -> None:
        super().__init__(f"{key}: cannot listen on {address}: {error.strerror or error}")
        self.key = key
        self.address = address
        self.error = error


async def serve(
    settings: Settings,
    *,
    frontend: ClientFrontend | None = None,
    listeners: Listeners | None = None,
    ssl_context: ssl.SSLContext | None = None,
    dtls_certificate: DtlsCertificate | None = None,
    handshake_failures: HandshakeFailures | None = None,
    exhaustion: Exhaustion | None = None,
    task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every listener of `settings` until cancelled; report `BoundAddresses` once bound.

    `frontend` is what the listeners hand traffic to; by default a STUN-only server
    (`BindingResponder` answering with `settings.software`). Raises `SettingsError` (bad
    TLS files) before binding anything and `ListenError` when a listener cannot bind (the
    listeners already bound are closed again). `ssl_context` replaces the TLS context
    `settings.tls` describes (the caller holds the certificate), `dtls_certificate` the
    DTLS one. `handshake_failures` counts the TLS and DTLS listeners' failed handshakes (the
    node's, for its metrics);
    `exhaustion` the TCP and TLS listeners' connections refused for lack of descriptors.
    """
    listeners = listeners or Listeners()
    listen = settings.listen
    missing_tls = ssl_context is None and bool(listen.tls)
    missing_dtls = dtls_certificate is None and bool(listen.dtls)
    if missing_tls or missing_dtls:
        made = contexts_for(
            settings.tls,
            [a.host for a in listen.tls] if missing_tls else (),
            [a.host for a in listen.dtls] if missing_dtls else (),
        )
        ssl_context = ssl_context or made.tls
        dtls_certificate = dtls_certificate or made.dtls
    if frontend is None:
        frontend = ResponderFrontend(BindingResponder(settings.software))
    # The frontend is passed positionally: the listeners' parameter names are their own.
    idle_timeout = settings.stream.idle_timeout
    udp_serve = listeners.udp
    tcp_serve = functools.partial(listeners.stream, idle_timeout=idle_timeout)
    if exhaustion is not None:
        tcp_serve = functools.partial(tcp_serve, exhaustion=exhaustion)
    tls_serve = functools.partial(tcp_serve, ssl_context=ssl_context)
    dtls_serve = functools.partial(listeners.dtls, idle_timeout=idle_timeout, limits=settings.dtls)
    if handshake_failures is not None:
        tls_serve = functools.partial(tls_serve, handshake_failures=handshake_failures)
        dtls_serve = functools.partial(dtls_serve, handshake_failures=handshake_failures)
    async with trio.open_nursery() as nursery:
        udp: list[HostPort] = []
        for index, address in enumerate(listen.udp):
            key = f"listen.udp[{index}]"
            udp.append(await _start(nursery, udp_serve, frontend, key, address))
        for address in listen.nat:  # RFC 5780's other three UDP addresses, fixed ports
            key = nat_discovery_key(listen, address)
            await _start(nursery, udp_serve, frontend, key, address)
        tcp: list[HostPort] = []
        twins = paired_ports(listen, udp)
        for index, address in enumerate(listen.tcp):
            key = f"listen.tcp[{index}]"
            tcp.append(await _start(nursery, tcp_serve, frontend, key, address, twins[index]))
        tls: list[HostPort] = []
        for index, address in enumerate(listen.tls):
            key = f"listen.tls[{index}]"
            tls.append(await _start(nursery, tls_serve, frontend, key, address))
        dtls: list[HostPort] = []
        for index, address in enumerate(listen.dtls):
            key = f"listen.dtls[{index}]"
            assert dtls_certificate is not None  # made above for listen.dtls
            # Each listener its own context: trio configures the one it is given.
            one = functools.partial(dtls_serve, dtls_context=dtls_certificate.listening_context())
            dtls.append(await _start(nursery, one, frontend, key, address))
        task_status.started(BoundAddresses(tuple(udp), tuple(tcp), tuple(tls), tuple(dtls)))


def nat_discovery_key(listen: ListenSettings, address: ListenAddress) -> str:
    """The settings key to name when one of `listen.nat` cannot be bound: the alternate
    host's, or for the primary IP at the alternate port, the port's."""
    primary = listen.udp[0].host
    return f"nat_discovery.alternate_{'port' if address.host == primary else 'host'}"


def paired_ports(listen: ListenSettings, udp_bound: Sequence[HostPort]) -> list[int | None]:
    """For each TCP address, the port to try first: its UDP twin's, or None.

    The k-th port-0 TCP address on a host pairs with the k-th port-0 UDP address there.
    """
    twins: dict[str, list[int]] = {}
    for address, (_, port) in zip(listen.udp, udp_bound, strict=True):
        if address.port == 0:
            twins.setdefault(address.host, []).append(port)
    paired: list[int | None] = []
    for address in listen.tcp:
        ports = twins.get(address.host, [])
        paired.append(ports.pop(0) if address.port == 0 and ports else None)
    return paired


async def _start(
    nursery: trio.Nursery,
    serve_one: Callable[..., Awaitable[None]],
    frontend: ClientFrontend,
    key: str,
    address: ListenAddress,
    twin_port: int | None = None,
) -> HostPort:
    if twin_port is not None:
        try:
            bound: HostPort = await nursery.start(serve_one, address.host, twin_port, frontend)
        except OSError as exc:
            # Taken for TCP by someone else: pairing is a convenience, any port will do.
            logger.debug("%s: port %d is taken (%s), using another", key, twin_port, exc)
        else:
            return _log_bound(key, bound)
    try:
        bound = await nursery.start(serve_one, address.host, address.port, frontend)
    except OSError as exc:
        raise ListenError(key, address, exc) from exc
    return _log_bound(key, bound)


def _log_bound(key: str, bound: HostPort) -> HostPort:
    logger.info("%s: listening on %s", key, format_host_port(*bound))
    return bound
