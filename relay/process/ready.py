"""The ready line: how `trelay serve` tells a supervisor, a test or an operator it is up.

Owns what is written once every listener and the operator port are bound: hints on
stderr, then exactly one JSON line on stdout (flushed last, so whoever reads it as the
sign to go on finds stderr complete), {"event": "ready", "udp": [...], "tcp": [...],
"tls": [...], "http": [...], "ice_servers": [...]}, with "dtls": [...] after "tls" when
DTLS listens (left out of `ice_servers`: browsers do not speak DTLS to TURN servers, and
Chromium rewrites a `turns:...?transport=udp` URL to TCP).

No secret in logs (design §6): stdout and stderr end up in journald and `kubectl logs`,
so a credential is written only by the development defaults (`make run`: no users, no
secrets, the generated dev secret, `trelay.credentials.ice_config.uses_dev_secret`),
whose secret nobody else can mint with and which dies with the process. Then:
- the JSON `ice_servers` lists every listener's URI (stun:, stuns:, turn:, turns:) and a
  TURN credential valid for a day, for tests and tools;
- stderr has a block to paste into `new RTCPeerConnection({...})` that a browser uses
  as-is (`browser_ice_servers`: no stuns:, and turns: only with a configured, trusted
  certificate; otherwise a line says where TLS listens and how to check it).
Any other node (production) names its listeners and operator port and prints no
credential: the JSON `ice_servers` has the STUN URIs only, and stderr says how clients
get credentials.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from trelay.config.settings import Settings
from trelay.config.values import format_host_port
from trelay.credentials.ice_config import (
    TurnCredential,
    browser_ice_servers,
    dev_credential,
    format_ice_servers,
    ice_servers,
    ice_servers_json,
    uses_dev_secret,
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
    if bound.dtls:
        event["dtls"] = [format_host_port(*a) for a in bound.dtls]
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
    """Hints on stderr, then the ready line on stdout; a credential only in development."""
    credential = dev_credential(settings) if uses_dev_secret(settings) else None
    if credential is not None:
        _development_hints(settings, bound, credential, stderr)
    else:
        _production_hints(bound, http, stderr)
    if settings.relay.allow_loopback_peers:
        stderr.write(f"{PROG}: loopback peers allowed: for tests and local development only\n")
    if settings.http.selftest:
        for host, port in http:
            stderr.write(
                f"{PROG}: self-test page: http://{format_host_port(host, port)}/selftest\n"
            )
    stderr.flush()
    # One line, flushed at once: a supervisor or test reads it as the sign to go on.
    stdout.write(json.dumps(ready_event(bound, credential, http)) + "\n")
    stdout.flush()


def _development_hints(
    settings: Settings, bound: BoundAddresses, credential: TurnCredential, stderr: TextIO
) -> None:
    trusted_tls = not settings.tls.self_signed
    servers = browser_ice_servers(bound, credential, trusted_tls=trusted_tls)
    stderr.write(
        f"{PROG}: ready (development defaults: a generated secret and a credential for a "
        "day). Paste into new RTCPeerConnection({...}):\n"
    )
    stderr.write(format_ice_servers(servers) + "\n")
    if bound.tls and not trusted_tls:
        where = ", ".join(format_host_port(*a) for a in bound.tls)
        first = format_host_port(*bound.tls[0])
        # Browsers refuse the throw-away certificate; a turns: URL would only make their
        # gathering wait for it. Say where TLS is, and how to check it for real.
        stderr.write(
            f"{PROG}: TURN over TLS listens on {where} with a throw-away self-signed "
            "certificate that browsers do not trust, so turns: is left out above. Check "
            f"TLS with `openssl s_client -connect {first}`, or give a trusted certificate "
            "(--tls-cert and --tls-key)\n"
        )


def _production_hints(bound: BoundAddresses, http: Sequence[HostPort], stderr: TextIO) -> None:
    listeners = [
        f"{name} {format_host_port(*address)}"
        for name, addresses in (
            ("udp", bound.udp),
            ("tcp", bound.tcp),
            ("tls", bound.tls),
            ("dtls", bound.dtls),
        )
        for address in addresses
    ]
    listeners += [f"http {format_host_port(*address)}" for address in http]
    stderr.write(f"{PROG}: ready: {', '.join(listeners) or 'no listener'}\n")
    stderr.write(
        f"{PROG}: no credential is printed: clients use the configured users, TURN REST "
        "credentials minted under auth.secrets, or the token API\n"
    )
