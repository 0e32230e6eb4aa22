"""Throw-away trelay TURN nodes for tests: on loopback, ephemeral ports, loopback peers allowed.

Owns the test relay that the pytest plugin (`trelay.icekit.pytest_plugin`) and our own interop
tests run: a real `TurnNode` with UDP, TCP and TLS listeners (RFC 8656 §3.1; TLS with a
throw-away self-signed certificate) bound to 127.0.0.1 port 0, a `TurnServer` whose peer
policy allows loopback peers (the test-only switch of design §6), and one credential:
either a static user with a random password (RFC 8489 §9.2) or, when a secret is given,
a TURN REST API username and password minted under it (draft-uberti-behave-turn-rest-00).

Three ways to run it:
- `throwaway_relay()`: a sync context manager; the node runs in a background thread
  with its own `trio.run` (`trio_in_thread`), so asyncio tests, plain tests and trio
  tests can all use it;
- `open_loopback_relay()`: an async context manager for trio code, the node runs in a
  nursery it opens in the caller's task (no thread);
- `start_relay(nursery)`: start the node in a nursery the caller owns.

Invariants: every start-up wait is bounded (`STARTUP_TIMEOUT`); leaving the context
cancels the node and, for the threaded form, joins the thread (a failure in the thread
fails the caller). `LoopbackRelay` reads the node's plain-int counters and copies its
tables with single C-level calls, which is consistent enough from another thread.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from trelay.config.settings import ListenSettings, Settings
from trelay.config.values import ListenAddress
from trelay.credentials.ice_config import IceServer, TurnCredential, ice_servers, ice_servers_json
from trelay.icekit.ice_shim import parse_ice_uri
from trelay.node.assembly import RunningNode, TurnNode, TurnServer, loopback_turn_server, start_node
from trelay.node.tls import context_from_pem, generate_self_signed
from trelay.turn.addressing import Address
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import rest_password

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
DEFAULT_REALM = "trelay.test"
DEFAULT_USERNAME = "trelay-test"
STARTUP_TIMEOUT = 10.0
REST_TTL = 3600  # seconds a minted TURN REST credential stays valid


@dataclass(frozen=True, slots=True)
class RelayCredentials:
    """The long-term credential a client uses with the test relay (RFC 8489 §9.2)."""

    username: str
    password: str = field(repr=False)
    realm: str
    # The TURN REST API shared secret the credential was minted under, if any.
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def static(
        cls, realm: str = DEFAULT_REALM, username: str = DEFAULT_USERNAME
    ) -> RelayCredentials:
        """A static user with a fresh random password."""
        return cls(username, secrets.token_urlsafe(16), realm)

    @classmethod
    def rest(
        cls, secret: str, realm: str = DEFAULT_REALM, user: str = DEFAULT_USERNAME
    ) -> RelayCredentials:
        """A TURN REST API credential: `<expiry>:<user>`, base64(HMAC-SHA1(secret, username))."""
        username = f"{int(time.time()) + REST_TTL}:{user}"
        return cls(username, rest_password(secret.encode(), username), realm, secret)


@dataclass(frozen=True, slots=True)
class RelayCounters:
    """A snapshot of the node's live counters."""

    allocations: int
    client_to_peer_datagrams: int
    client_to_peer_bytes: int
    peer_to_client_datagrams: int
    peer_to_client_bytes: int


@dataclass
class LoopbackRelay:
    """A running test relay: where it listens, how to log in, what it has relayed."""

    running: RunningNode
    # The token of the trio loop the node runs in (`trio.from_thread.run(..., trio_token=)`).
    token: trio.lowlevel.TrioToken
    # The TLS listener's throw-away certificate (PEM), for clients to trust.
    tls_certificate: bytes
    credentials: RelayCredentials

    @property
    def ice_servers(self) -> list[dict[str, object]]:
        """RTCIceServer dictionaries: stun:, turn: (udp, tcp) and turns: URLs (RFC 7064/7065)."""
        return ice_servers_json(self.ice_server_entries())

    @property
    def ice_configuration(self) -> dict[str, object]:
        """An RTCConfiguration dictionary forcing relay-only ICE through this node."""
        return {"iceServers": self.ice_servers, "iceTransportPolicy": "relay"}

    def rtc_configuration(
        self, transports: Iterable[str] = ("udp", "tcp", "tls"), policy: str = "relay"
    ) -> dict[str, object]:
        """`ice_configuration` with only the URLs over `transports` ("udp", "tcp", "tls").

        Browsers do not trust the throw-away certificate, and Chromium's gathering then
        waits on the turns: URL for long: give them `transports=("udp", "tcp")`.
        """
        wanted = set(transports)
        servers = []
        for entry in self.ice_server_entries():
            urls = tuple(u for u in entry.urls if parse_ice_uri(u).client_transport in wanted)
            if urls:
                servers.append(IceServer(urls, entry.username, entry.credential))
        return {"iceServers": ice_servers_json(servers), "iceTransportPolicy": policy}

    @property
    def node(self) -> TurnNode:
        return self.running.node

    @property
    def udp(self) -> Address:
        return self.running.bound.udp[0]

    @property
    def tcp(self) -> Address:
        return self.running.bound.tcp[0]

    @property
    def tls(self) -> Address:
        return self.running.bound.tls[0]

    def ice_server_entries(self) -> tuple[IceServer, ...]:
        credential = TurnCredential(self.credentials.username, self.credentials.password)
        return ice_servers(self.running.bound, credential)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this node's throw-away certificate (for turns:)."""
        context = ssl.create_default_context(cadata=self.tls_certificate.decode("ascii"))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def counters(self) -> RelayCounters:
        """The live counters now (allocations, relayed datagrams and bytes both ways)."""
        counters = self.node.counters
        return RelayCounters(
            allocations=len(self.node.server.allocations),
            client_to_peer_datagrams=counters.client_to_peer_datagrams,
            client_to_peer_bytes=counters.client_to_peer_bytes,
            peer_to_client_datagrams=counters.peer_to_client_datagrams,
            peer_to_client_bytes=counters.peer_to_client_bytes,
        )

    @property
    def allocations(self) -> int:
        return len(self.node.server.allocations)

    def relayed_addresses(self) -> frozenset[Address]:
        """The relayed transport addresses of the live allocations (bound and reported)."""
        # dict.copy() is one C call under the GIL: a consistent view from another thread.
        live = list(self.node.server.allocations.copy().values())
        return frozenset(a.relayed for a in live) | frozenset(a.reported_relayed for a in live)


def make_turn_server(
    config: TurnConfig | None = None, credentials: RelayCredentials | None = None
) -> TurnServer:
    """A `TurnServer` for tests: loopback peers allowed, one user or one REST secret."""
    config = config or TurnConfig(realm=DEFAULT_REALM, relay_host=LOOPBACK)
    credentials = credentials or RelayCredentials.static(config.realm)
    if credentials.secret is not None:
        return loopback_turn_server(config, shared=[credentials.secret])
    return loopback_turn_server(config, {credentials.username: credentials.password})


def _credentials_for(
    config: TurnConfig | None, credentials: RelayCredentials | None, secret: str | None
) -> tuple[TurnConfig, RelayCredentials]:
    config = config or TurnConfig(realm=DEFAULT_REALM, relay_host=LOOPBACK)
    if credentials is None:
        credentials = (
            RelayCredentials.rest(secret, config.realm)
            if secret is not None
            else RelayCredentials.static(config.realm)
        )
    return config, credentials


async def start_relay(
    nursery: trio.Nursery,
    *,
    config: TurnConfig | None = None,
    credentials: RelayCredentials | None = None,
    secret: str | None = None,
) -> LoopbackRelay:
    """Start a test relay in `nursery`; it returns once every listener is bound."""
    config, credentials = _credentials_for(config, credentials, secret)
    certificate = generate_self_signed([LOOPBACK])  # EC P-256: milliseconds
    loopback = (ListenAddress(LOOPBACK, 0),)
    settings = Settings(listen=ListenSettings(udp=loopback, tcp=loopback, tls=loopback))
    running = await start_node(
        nursery,
        settings,
        server=make_turn_server(config, credentials),
        ssl_context=context_from_pem(certificate),
    )
    token = trio.lowlevel.current_trio_token()
    return LoopbackRelay(running, token, certificate.cert_pem, credentials)


@asynccontextmanager
async def open_loopback_relay(
    *,
    config: TurnConfig | None = None,
    credentials: RelayCredentials | None = None,
    secret: str | None = None,
) -> AsyncIterator[LoopbackRelay]:
    """A test relay in the calling trio task (no thread); stopped when the block ends."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(STARTUP_TIMEOUT):
            relay = await start_relay(
                nursery, config=config, credentials=credentials, secret=secret
            )
        try:
            yield relay
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def throwaway_relay(
    *,
    config: TurnConfig | None = None,
    credentials: RelayCredentials | None = None,
    secret: str | None = None,
    clock: trio.abc.Clock | None = None,
) -> Iterator[LoopbackRelay]:
    """A test relay in a background trio thread, for asyncio, plain and trio tests.

    `clock` (a `trio.testing.MockClock`, say) becomes the node's clock.
    """

    async def start(nursery: trio.Nursery) -> LoopbackRelay:
        return await start_relay(nursery, config=config, credentials=credentials, secret=secret)

    with trio_in_thread(start, "trelay-test-relay", STARTUP_TIMEOUT, clock) as relay:
        yield relay


@contextmanager
def trio_in_thread(
    start: Callable[[trio.Nursery], Awaitable[T]],
    name: str,
    timeout: float = STARTUP_TIMEOUT,
    clock: trio.abc.Clock | None = None,
) -> Iterator[T]:
    """Run `start(nursery)` in `trio.run` on a daemon thread; yield what it returns.

    The value is yielded once `start` has returned (listeners bound by then); leaving
    the block cancels the nursery and joins the thread. A failure in the thread, at
    start-up or later, fails the caller with the thread's exception.
    """
    # What `start` returned with the loop's token and the nursery's scope, or None on failure.
    started: queue.Queue[tuple[T, trio.lowlevel.TrioToken, trio.CancelScope] | None]
    started = queue.Queue()
    errors: list[BaseException] = []

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            value = await start(nursery)
            started.put((value, trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    def run() -> None:
        try:
            trio.run(serve, clock=clock)
        except BaseException as exc:
            errors.append(exc)
            started.put(None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        up = started.get(timeout=timeout)
    except queue.Empty:
        up = None
    if up is None:
        thread.join(timeout)
        raise RuntimeError(f"the {name} thread did not start: {errors!r}")
    value, token, scope = up
    try:
        yield value
    finally:
        # The loop may have ended by itself (a crash): then its error is the news.
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout)
    assert not thread.is_alive(), f"the {name} thread did not stop"
    if errors:
        raise RuntimeError(f"the {name} thread failed: {errors!r}") from errors[0]
