"""The one way a relay node is started: settings (or a prepared core) in, a running node out.

Owns the order of a node's start-up, for every caller (`trelay serve`, a worker process
of `trelay serve --workers N`, the test kit's throw-away relay, the tests):

1. the auth files: the revocations file is loaded before anything binds (a bad file is a
   `SettingsError` naming `auth.revocations_file`), the shared secrets are the object the
   secrets-file watcher swaps in place;
2. the pure core (`trelay.turn.server.TurnServer`) built from the settings
   (`trelay.node.turn_setup`), with the revocation check and the nonce key given at
   construction; a caller with its own core (the test kit, built from a `TurnConfig`)
   passes it instead;
3. the `TurnNode` on that core, its timers, its usage recorder (`[usage]`, with the
   fleet's node id and region when `[fleet]` names them), the file watchers;
4. the listeners of `settings.listen` (`trelay.node.listeners.serve`), and the core told
   which endpoints are its own and which addresses the host has
   (`trelay.node.local_addresses`): it denies them as peers, design §6.

`loopback_turn_server` is the core of a throw-away test relay (`trelay.icekit`).
`start_node` returns once every socket is bound (design §4: the caller may then announce
readiness); everything it started runs in the caller's nursery and ends with it.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass

import trio

from trelay.config.revocations import Revocations, watched_revocations
from trelay.config.secrets_file import watch_secrets_file
from trelay.config.settings import Settings
from trelay.node.listeners import BoundAddresses, Listeners, serve
from trelay.node.local_addresses import refresh_local_addresses
from trelay.node.tls import DtlsCertificate, contexts_for
from trelay.node.turn_node import TurnNode
from trelay.node.turn_setup import build_turn_server, loopback_turn_server, shared_secrets
from trelay.node.usage import UsageRecorder
from trelay.turn.server import TurnServer

# What callers outside the node (the test kit) may use: the node's public face.
__all__ = ["RunningNode", "TurnNode", "TurnServer", "loopback_turn_server", "start_node"]


@dataclass(frozen=True, slots=True)
class RunningNode:
    """A started node: the node, where it listens, the revocations it consults (if any)."""

    node: TurnNode
    bound: BoundAddresses
    revocations: Revocations | None
    # The TLS listeners' context (None without them): a reload loads a renewed
    # certificate into it, for new handshakes (`trelay.node.live_settings`).
    ssl_context: ssl.SSLContext | None = None
    # The DTLS listeners' certificate (None without them), reloaded the same way.
    dtls_certificate: DtlsCertificate | None = None


async def start_node(
    nursery: trio.Nursery,
    settings: Settings,
    *,
    server: TurnServer | None = None,
    nonce_key: bytes | None = None,
    listeners: Listeners | None = None,
    ssl_context: ssl.SSLContext | None = None,
    worker: int = 0,
) -> RunningNode:
    """Start a node in `nursery` as `settings` says; return once every listener is bound.

    `server`: a core prepared by the caller (default: built from `settings`).
    `nonce_key`: the key nonces are stamped with when the settings have no shared
    secret to derive it from (a worker gets its supervisor's, so that every worker
    accepts every other's nonces). `listeners`: the listener loops (a worker's UDP
    listeners use the sockets its supervisor holds). `ssl_context`: the TLS listeners'
    context, when the caller holds the certificate (default: from `settings.tls`).
    `worker`: a worker process's index, named in the mobility tickets it seals (RFC 8016).
    Raises `SettingsError` and `ListenError` (trelay.node.listeners) before returning.
    """
    auth = settings.auth
    revocations = await watched_revocations(nursery, auth.revocations_file)
    secrets = shared_secrets(settings)
    if server is None:
        server = build_turn_server(
            settings,
            secrets,
            nonce_key=nonce_key,
            is_revoked=None if revocations is None else revocations.is_revoked,
            worker=worker,
        )
    node = TurnNode(server, nursery, usage=usage_recorder(settings))
    if auth.secrets_file is not None:
        await nursery.start(watch_secrets_file, auth.secrets_file, secrets, auth.secrets)
    await nursery.start(node.run_timers)
    await nursery.start(node.usage.run)
    listen = settings.listen
    # One certificate for TLS and DTLS (a throw-away one without files).
    made = contexts_for(
        settings.tls,
        [a.host for a in listen.tls] if ssl_context is None else (),
        [a.host for a in listen.dtls],
    )
    ssl_context = ssl_context or made.tls
    bound: BoundAddresses = await nursery.start(
        functools.partial(
            serve,
            settings,
            frontend=node,
            listeners=listeners,
            ssl_context=ssl_context,
            dtls_certificate=made.dtls,
            handshake_failures=node.tls_handshake_failures,
            exhaustion=node.exhaustion,
        )
    )
    server.listening_on([*bound.udp, *bound.tcp, *bound.tls, *bound.dtls])
    refresh_local_addresses(server)  # a wildcard listener answers at each (design §6)
    return RunningNode(node, bound, revocations, ssl_context, made.dtls)


def usage_recorder(settings: Settings) -> UsageRecorder:
    """The node's usage recorder as `[usage]` says (records as log lines until a fleet
    sink takes over, `trelay.fleet.usage_stream`)."""
    fleet = settings.fleet
    return UsageRecorder(
        interval=settings.usage.interval_seconds,
        enabled=settings.usage.enabled,
        node_id=None if fleet is None else fleet.node_id,
        region=None if fleet is None else fleet.region,
    )
