"""trelay's pytest plugin: a throw-away TURN relay, relayed aioice pairs, a relay-only marker.

Registered through the `pytest11` entry point `trelay`, so installing trelay is enough.

- `turn_server` (function scope): a `trelay.icekit.LoopbackRelay`, a real trelay node on
  127.0.0.1 (UDP, TCP, TLS; ephemeral ports; loopback peers allowed) in a background
  thread, with `.ice_configuration`, `.credentials` and live `.counters()`. A thread
  keeps it usable from sync, asyncio and trio tests alike.
- `relayed_pair`: a factory of async context managers. Inside any running asyncio loop
  (`async def` tests under pytest-asyncio or anyio, or a sync test's `asyncio.run`),
  `async with relayed_pair() as pair:` yields two connected aioice agents forced through
  `turn_server` (`pair.left`, `pair.right`), closed when the block ends. A sync fixture
  cannot hand out asyncio objects before the test's loop exists; a factory can.
- `@pytest.mark.relay_only` (optionally `relay_only(transport="tcp")`): for the test's
  duration every `aioice.Connection` is built with `TransportPolicy.RELAY` (and with
  `turn_server`'s TURN server when it was given none), and every aiortc
  `RTCPeerConnection` with `iceTransportPolicy` relay (and `turn_server`'s iceServers
  when its configuration has no TURN URL), even in code that never heard of trelay.

Start-up stays light: trio, aioice and aiortc are imported by the fixtures, not here.
Every wait is bounded: relay start-up by `trelay.icekit.loopback_relay.STARTUP_TIMEOUT`, ICE by
`trelay.icekit.ice_shim.CONNECT_TIMEOUT`.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import aioice

    from trelay.icekit.ice_shim import Transport, TurnChoice
    from trelay.icekit.loopback_relay import LoopbackRelay

MARKER = "relay_only"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(transport='udp'): force every aioice Connection and aiortc "
        "RTCPeerConnection in the test to relay-only ICE through the turn_server fixture",
    )


@pytest.fixture
def turn_server() -> Iterator[LoopbackRelay]:
    """A throw-away trelay TURN node on loopback (`trelay.icekit.throwaway_relay`)."""
    from trelay.icekit.loopback_relay import throwaway_relay  # noqa: PLC0415 - keep pytest start-up light

    with throwaway_relay() as relay:
        yield relay


@dataclass(frozen=True, slots=True)
class RelayedPair:
    """Two connected aioice agents whose selected pairs are relay/relay."""

    left: aioice.Connection  # ICE controlling
    right: aioice.Connection
    turn: TurnChoice


RelayedPairFactory = Callable[..., AbstractAsyncContextManager[RelayedPair]]


@pytest.fixture
def relayed_pair(turn_server: LoopbackRelay) -> RelayedPairFactory:
    """`async with relayed_pair(transport="udp") as pair:` two agents relayed by turn_server."""
    from trelay.icekit.ice_shim import connect_pair, ice_connection  # noqa: PLC0415

    @asynccontextmanager
    async def open_pair(transport: Transport = "udp") -> AsyncIterator[RelayedPair]:
        context = turn_server.client_ssl_context() if transport == "tls" else None
        config = turn_server.ice_configuration
        options: dict[str, Any] = {"prefer": (transport,), "ssl_context": context}
        left = ice_connection(config, ice_controlling=True, use_ipv6=False, **options)
        right = ice_connection(config, ice_controlling=False, use_ipv6=False, **options)
        try:
            await connect_pair(left.connection, right.connection)
            yield RelayedPair(left.connection, right.connection, left.turn)
        finally:
            await left.connection.close()
            await right.connection.close()

    return open_pair


@pytest.fixture(autouse=True)
def _trelay_relay_only(request: pytest.FixtureRequest) -> Iterator[None]:
    """Apply the relay_only marker: patch aioice (and aiortc, when installed)."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        yield
        return
    relay: LoopbackRelay = request.getfixturevalue("turn_server")
    transport = marker.kwargs.get("transport", "udp")
    if transport not in ("udp", "tcp", "tls"):
        raise pytest.UsageError(
            f"{MARKER}(transport=...): 'udp', 'tcp' or 'tls', not {transport!r}"
        )
    with pytest.MonkeyPatch.context() as patch:
        _force_aioice(patch, relay, transport)
        if importlib.util.find_spec("aiortc") is not None:
            _force_aiortc(patch, relay, transport)
        yield


def _force_aioice(patch: pytest.MonkeyPatch, relay: LoopbackRelay, transport: Transport) -> None:
    import aioice  # noqa: PLC0415

    from trelay.icekit.ice_shim import choose_turn_server, parse_ice_servers  # noqa: PLC0415

    original = aioice.Connection.__init__
    signature = inspect.signature(original)
    context = relay.client_ssl_context() if transport == "tls" else None
    turn = choose_turn_server(parse_ice_servers(relay.ice_configuration), (transport,))
    # aioice is patched on the class, so `from aioice import Connection` (aiortc) sees it.

    def relay_only_init(self: aioice.Connection, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.arguments["transport_policy"] = aioice.TransportPolicy.RELAY
        arguments = bound.arguments
        if arguments.get("turn_server") is None:
            arguments.update(turn.connection_kwargs(context))
        elif arguments["turn_server"] == relay.tls and arguments.get("turn_ssl") is True:
            # turns: to this relay (aiortc passes True): trust its throw-away certificate.
            arguments["turn_ssl"] = relay.client_ssl_context()
        original(*bound.args, **bound.kwargs)

    patch.setattr(aioice.Connection, "__init__", relay_only_init)


def _force_aiortc(patch: pytest.MonkeyPatch, relay: LoopbackRelay, transport: Transport) -> None:
    import dataclasses  # noqa: PLC0415

    from aiortc import RTCConfiguration, RTCIceTransportPolicy, RTCPeerConnection  # noqa: PLC0415

    from trelay.icekit.ice_shim import rtc_configuration  # noqa: PLC0415

    original = RTCPeerConnection.__init__
    ours = rtc_configuration(relay.ice_configuration, "relay", (transport,))

    def has_turn(configuration: RTCConfiguration) -> bool:
        for server in configuration.iceServers or []:
            urls = [server.urls] if isinstance(server.urls, str) else server.urls
            if any(url.lower().startswith("turn") for url in urls):
                return True
        return False

    def relay_only_init(
        self: RTCPeerConnection, configuration: RTCConfiguration | None = None
    ) -> None:
        configuration = configuration or RTCConfiguration()
        servers = configuration.iceServers if has_turn(configuration) else ours.iceServers
        configuration = dataclasses.replace(
            configuration, iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY
        )
        original(self, configuration)

    patch.setattr(RTCPeerConnection, "__init__", relay_only_init)
