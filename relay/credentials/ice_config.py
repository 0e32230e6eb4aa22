"""The `iceServers` of an RTCConfiguration that points a WebRTC client at this relay.

Owns the URIs a client is given for the bound addresses:
- STUN (RFC 7064 §3.1): "stun:host:port" for every UDP listener and "stuns:host:port"
  for every TLS listener. STUN over plain TCP has no URI form that clients use (browsers
  send STUN over UDP only), so TCP listeners appear only as TURN URIs.
- TURN (RFC 7065 §3.1), once a credential is given: "turn:host:port?transport=udp",
  "turn:host:port?transport=tcp" and "turns:host:port?transport=tcp", in one entry with
  `username` and `credential` (W3C WebRTC §4.2.1 RTCIceServer).

`ice_servers` lists every listener (for tools and the ready line); `browser_ice_servers`
only what a browser will use, so a block pasted into `new RTCPeerConnection(...)` gathers
at once instead of waiting on URIs it cannot use (Chromium's gathering waited 40 s on
them):
- no "stuns:": browsers speak STUN over UDP only (RFC 7064's stuns: is for other clients);
- "turns:" only when the certificate will be trusted (a configured one): a browser refuses
  the throw-away self-signed certificate of the dev defaults.

Invariants: IPv6 hosts are in brackets (RFC 3986 §3.2.2); a wildcard listener (0.0.0.0,
::) is advertised as the loopback address of its family, the only address we know it
answers on; the credential never appears in `repr`.

`dev_credential` mints the credential `/selftest` hands out and the development defaults
print: a TURN REST credential under the first shared secret. `uses_dev_secret` says when
the node runs on the generated dev secret (no users, no secrets configured): the only
case in which a credential may be printed, since nobody else can mint one (design §6:
no secrets in logs).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from trelay.config.settings import Settings
from trelay.config.values import format_host_port
from trelay.node.listeners import BoundAddresses
from trelay.turn.credential_sources import rest_password


@dataclass(frozen=True, slots=True)
class TurnCredential:
    """A TURN username and password (long-term, RFC 8489 §9.2), as clients are given them."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class IceServer:
    """One RTCIceServer: URLs, and a username and credential for TURN URLs."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        """The RTCIceServer dictionary, as `JSON.parse` would give it to a browser."""
        entry: dict[str, object] = {"urls": list(self.urls)}
        if self.username is not None:
            entry["username"] = self.username
        if self.credential is not None:
            entry["credential"] = self.credential
        return entry


def rest_credential(secret: str, identity: str, expiry: int) -> TurnCredential:
    """A TURN REST API credential: "<expiry>:<identity>", base64(HMAC-SHA1(secret, it))."""
    username = f"{expiry}:{identity}"
    return TurnCredential(username, rest_password(secret.encode("utf-8"), username))


def advertised_host(host: str) -> str:
    """The host a client should use for a listener bound to `host`."""
    address = ipaddress.ip_address(host.partition("%")[0])
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def stun_uri(secure: bool, host: str, port: int) -> str:
    """RFC 7064 §3.1: stunURI = scheme ":" host [ ":" port ], scheme = "stun" / "stuns"."""
    return f"{'stuns' if secure else 'stun'}:{format_host_port(advertised_host(host), port)}"


def turn_uri(secure: bool, host: str, port: int, transport: str) -> str:
    """RFC 7065 §3.1: turnURI = scheme ":" host [ ":" port ] [ "?transport=" transport ]."""
    authority = format_host_port(advertised_host(host), port)
    return f"{'turns' if secure else 'turn'}:{authority}?transport={transport}"


def ice_servers(
    bound: BoundAddresses, credential: TurnCredential | None = None
) -> tuple[IceServer, ...]:
    """The iceServers for `bound`: one STUN entry, and one TURN entry with `credential`."""
    servers: list[IceServer] = []
    stun_urls = [stun_uri(False, *a) for a in bound.udp]
    stun_urls += [stun_uri(True, *a) for a in bound.tls]
    if stun_urls:
        servers.append(IceServer(tuple(stun_urls)))
    if credential is not None:
        turn_urls = [turn_uri(False, *a, "udp") for a in bound.udp]
        turn_urls += [turn_uri(False, *a, "tcp") for a in bound.tcp]
        turn_urls += [turn_uri(True, *a, "tcp") for a in bound.tls]
        if turn_urls:
            servers.append(IceServer(tuple(turn_urls), credential.username, credential.password))
    return tuple(servers)


def browser_ice_servers(
    bound: BoundAddresses, credential: TurnCredential | None, *, trusted_tls: bool
) -> tuple[IceServer, ...]:
    """The iceServers a browser can use as-is: "stun:" (UDP), "turn:" over UDP and TCP,
    and "turns:" only when `trusted_tls` (a certificate the browser will accept)."""
    servers: list[IceServer] = []
    stun_urls = [stun_uri(False, *a) for a in bound.udp]
    if stun_urls:
        servers.append(IceServer(tuple(stun_urls)))
    if credential is not None:
        turn_urls = [turn_uri(False, *a, "udp") for a in bound.udp]
        turn_urls += [turn_uri(False, *a, "tcp") for a in bound.tcp]
        if trusted_tls:
            turn_urls += [turn_uri(True, *a, "tcp") for a in bound.tls]
        if turn_urls:
            servers.append(IceServer(tuple(turn_urls), credential.username, credential.password))
    return tuple(servers)


def ice_servers_json(servers: Iterable[IceServer]) -> list[dict[str, object]]:
    return [server.to_json() for server in servers]


def format_ice_servers(servers: Iterable[IceServer]) -> str:
    """A block to paste into `new RTCPeerConnection({ ... })` (JSON is valid JavaScript)."""
    return "iceServers: " + json.dumps(ice_servers_json(servers), indent=2)


DEV_CREDENTIAL_SECONDS = 24 * 3600


def uses_dev_secret(settings: Settings) -> bool:
    """True when the node runs on the generated dev secret alone: no users, no secrets, no
    secrets file (even an empty one), no RFC 7635 third party: the development defaults
    of `make run`. A production configuration always names one of these."""
    # `AuthSettings.shared_secrets` falls back to the dev secret when no secret is loaded.
    auth = settings.auth
    configured = auth.secrets_file is not None or auth.third_party is not None
    return not configured and auth.shared_secrets == (auth.dev_secret,)


def dev_credential(
    settings: Settings,
    now: float | None = None,
    *,
    identity: str = "dev",
    seconds: int = DEV_CREDENTIAL_SECONDS,
) -> TurnCredential | None:
    """A TURN REST credential under the first shared secret (a day, by default)."""
    if not settings.auth.shared_secrets:
        return None
    expiry = int((time.time() if now is None else now) + seconds)
    return rest_credential(settings.auth.shared_secrets[0], identity, expiry)
