"""A trelay TURN node on loopback in a background thread, for asyncio clients (aioice).

The node runs the real listeners (UDP, TCP and TLS with a throw-away certificate) and
the real `TurnServer`, with
loopback peers allowed (test-only switch) and one static user.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from relay.stream_listener import serve_stream
from relay.tls import context_from_pem, generate_self_signed
from relay.turn_node import TurnNode
from relay.udp_listener import serve_udp
from tests.interop.trio_thread import trio_in_thread
from turn.auth import LongTermAuthenticator
from turn.config import TurnConfig
from turn.credential_sources import CredentialSources, StaticUsers
from turn.nonces import NonceStamper
from turn.policy import PeerPolicy
from turn.server import TurnServer

USERNAME = "alice"
PASSWORD = "wonderland"
REALM = "interop.test"
STARTUP_TIMEOUT = 10.0


@dataclass
class RunningNode:
    udp: tuple[str, int]
    tcp: tuple[str, int]
    tls: tuple[str, int]
    node: TurnNode
    token: trio.lowlevel.TrioToken
    # The TLS listener's throw-away certificate (PEM), for clients to trust.
    tls_certificate: bytes


def make_turn_server(config: TurnConfig | None = None) -> TurnServer:
    config = config or TurnConfig(realm=REALM, relay_host="127.0.0.1")
    auth = LongTermAuthenticator(
        config.realm,
        CredentialSources(StaticUsers({USERNAME: PASSWORD}, config.realm)),
        NonceStamper(b"interop-nonce-key-0123456789", 600),
    )
    return TurnServer(
        config, auth, PeerPolicy.from_strings(allow_loopback=True), wall_clock=time.time
    )


@contextmanager
def threaded_turn_node(
    config: TurnConfig | None = None, clock: trio.abc.Clock | None = None
) -> Iterator[RunningNode]:
    """The node in a trio thread; `token` runs calls there (`trio.from_thread`)."""

    async def start(nursery: trio.Nursery) -> RunningNode:
        node = TurnNode(make_turn_server(config), nursery)
        await nursery.start(node.run_timers)
        udp = await nursery.start(serve_udp, "127.0.0.1", 0, node)
        tcp = await nursery.start(serve_stream, "127.0.0.1", 0, node)
        serve_tls = functools.partial(serve_stream, ssl_context=context_from_pem(certificate))
        tls = await nursery.start(serve_tls, "127.0.0.1", 0, node)
        token = trio.lowlevel.current_trio_token()
        return RunningNode(udp, tcp, tls, node, token, certificate.cert_pem)

    certificate = generate_self_signed(["127.0.0.1"])

    with trio_in_thread(start, "trelay-turn", STARTUP_TIMEOUT, clock) as running:
        yield running
