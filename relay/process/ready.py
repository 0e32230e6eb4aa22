"""The ready line: how `trelay serve` tells a supervisor, a test or an operator it is up.

Owns what is written once every listener and the operator port are bound: exactly one
JSON line on stdout (flushed), {"event": "ready", "udp": [...], "tcp": [...], "tls":
[...], "http": [...], "ice_servers": [...]}, and a ready-to-paste `iceServers` block and
hints on stderr. The `ice_servers` carry a TURN credential for a day when shared secrets
(or, with neither users nor secrets configured, the generated dev secret) are set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from trelay.config.settings import Settings
from trelay.config.values import format_host_port
from trelay.credentials.ice_config import (
    TurnCredential,
    dev_credential,
    format_ice_servers,
    ice_servers,
    ice_servers_json,
)
from trelay.node.listeners import BoundAddresses, HostPort
from trelay.process.exit_codes import PROG


def ready_event(
    bound: BoundAddresses,
    credential: TurnCredential | None = None,
    http: Sequence[HostPort] | None = None,
) -> dict[str, object]:
    """The ready line's content (JSON-ready); "http" only when `http` is given."""
    event: dict[str, object] = {
        "event": "ready",
        "udp": [format_host_port(*a) for a in bound.udp],
        "tcp": [format_host_port(*a) for a in bound.tcp],
        "tls": [format_host_port(*a) for a in bound.tls],
    }
    if http is not None:
        event["http"] = [format_host_port(*a) for a in http]
    event["ice_servers"] = ice_servers_json(ice_servers(bound, credential))
    return event


def announce_ready(
    settings: Settings,
    bound: BoundAddresses,
    stdout: TextIO,
    stderr: TextIO,
    http: Sequence[HostPort] = (),
) -> None:
    # One line, flushed at once: a supervisor or test reads it as the sign to go on.
    credential = dev_credential(settings)
    stdout.write(json.dumps(ready_event(bound, credential, http)) + "\n")
    stdout.flush()
    stderr.write(f"{PROG}: ready. Paste into new RTCPeerConnection({{...}}):\n")
    stderr.write(format_ice_servers(ice_servers(bound, credential)) + "\n")
    if settings.relay.allow_loopback_peers:
        stderr.write(f"{PROG}: loopback peers allowed: for tests and local development only\n")
    if bound.tls and settings.tls.self_signed:
        stderr.write(f"{PROG}: stuns: uses a throw-away self-signed certificate\n")
    if settings.http.selftest:
        for host, port in http:
            stderr.write(
                f"{PROG}: self-test page: http://{format_host_port(host, port)}/selftest\n"
            )
    stderr.flush()
