"""A trelay TURN node on loopback in a background thread, for asyncio clients (aioice).

A thin layer over `trelay.icekit.loopback_relay` (the public throw-away relay): the same
node (UDP, TCP and TLS listeners, loopback peers allowed) with the fixed user our interop tests and
their third-party clients are configured with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from trelay.icekit.loopback_relay import LoopbackRelay, RelayCredentials, throwaway_relay
from trelay.icekit.loopback_relay import make_turn_server as _make_turn_server
from trelay.turn.config import TurnConfig
from trelay.turn.server import TurnServer

USERNAME = "alice"
PASSWORD = "wonderland"
REALM = "interop.test"
STARTUP_TIMEOUT = 10.0

# .udp .tcp .tls .node .token .tls_certificate, as before.
RunningNode = LoopbackRelay


def _config(config: TurnConfig | None) -> TurnConfig:
    return config or TurnConfig(realm=REALM, relay_host="127.0.0.1")


def _credentials(config: TurnConfig) -> RelayCredentials:
    return RelayCredentials(USERNAME, PASSWORD, config.realm)


def make_turn_server(config: TurnConfig | None = None) -> TurnServer:
    config = _config(config)
    return _make_turn_server(config, _credentials(config))


@contextmanager
def threaded_turn_node(
    config: TurnConfig | None = None, clock: trio.abc.Clock | None = None
) -> Iterator[RunningNode]:
    """The node in a trio thread; `token` runs calls there (`trio.from_thread`)."""
    config = _config(config)
    with throwaway_relay(config=config, credentials=_credentials(config), clock=clock) as node:
        yield node
