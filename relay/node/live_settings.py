"""Applying a reload to a running node: the live part of `trelay.config.reload.Reload`.

Owns `apply_live(running, reload)`, which makes a started node (`trelay.node.assembly`)
serve with the new values of the keys `reload` says apply live, and reports each change
for the one log line of a reload:
- `tls.cert` / `tls.key`: the pair is read once, checked (a certificate, an unencrypted
  key, and that they match), then loaded into the TLS listeners' own `ssl.SSLContext`
  (`RunningNode.ssl_context`) and the DTLS listeners' (`RunningNode.dtls_certificate`). New
  handshakes get the new pair; connections and DTLS associations already up keep theirs.
  A bad pair is reported and the pair in force stays: the check comes first, because a
  failed `load_cert_chain` can leave a context half-changed;
- `auth.users`: `TurnServer.use_users` (a removed user's allocations live on);
- `auth.secrets`, `auth.secrets_file`: the shared-secrets object the core consults (and
  the secrets-file watcher swaps) gets the secrets now in force;
- the peer lists: `TurnServer.use_policy` (permissions and channels to peers now denied
  are withdrawn, and RFC 6062 TCP connections to them closed; counted in the report);
- quotas, lifetimes, `auth.strict_expiry`: `TurnServer.use_config` (the limits on
  requests that do not authenticate, also in `[quotas]`, keep their buckets);
- `[bandwidth]`: the node's meters (`TurnNode.use_bandwidth`: buckets retuned in place,
  `trelay.turn.bandwidth`), which `TurnConfig.bandwidth` then reports.

At every reload the host's addresses are enumerated again
(`trelay.node.local_addresses`): the peer policy denies each with a wildcard
listener's port (design §6).

It reads only the live keys of `reload.settings`, so a worker of `trelay serve --workers N`,
whose own settings differ in ports and relay port slice, applies its supervisor's
`Reload` as it is. Not here: the log level (`PROCESS_KEYS`): the node may not import
`trelay.ops`; the process calls `trelay.ops.logs.set_level`.

No allocation ends here: a reload loses no call (design §4).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from trelay.config.bandwidth_settings import KEYS as BANDWIDTH_KEYS
from trelay.config.reload import Reload
from trelay.config.settings import Settings
from trelay.config.values import SettingsError
from trelay.node.assembly import RunningNode
from trelay.node.local_addresses import refresh_local_addresses
from trelay.node.tls import DtlsCertificate, server_context
from trelay.turn.credential_sources import StaticUsers
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer

PEER_KEYS = ("relay.allow_peers", "relay.deny_peers", "relay.allow_loopback_peers")
CONFIG_KEYS = (
    "quotas.user",
    "quotas.total",
    "quotas.permissions_per_allocation",
    "quotas.channels_per_allocation",
    "quotas.peers_per_request",
    "quotas.allocations_per_source",
    "quotas.pending_per_source",
    "quotas.peer_connections_per_allocation",
    "quotas.unauthenticated_per_second",
    "quotas.unauthenticated_burst",
    "quotas.reflection_bytes_per_second",
    "quotas.reflection_burst_bytes",
    "lifetimes.default",
    "lifetimes.max",
    "auth.strict_expiry",
)
SECRETS_KEYS = ("auth.secrets", "auth.secrets_file")
TLS_KEYS = ("tls.cert", "tls.key")
# Live keys the process applies itself (`trelay.ops.logs.set_level`).
PROCESS_KEYS = ("log_level",)


@dataclass(frozen=True, slots=True)
class Applied:
    """What `apply_live` did: one "key: what" per change, and what it could not do."""

    changed: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "; ".join((*self.changed, *(f"{f} (not applied)" for f in self.failed)))


def apply_live(running: RunningNode, reload: Reload) -> Applied:
    """Apply the live changes of `reload` to `running`; report them (no secret in it)."""
    server = running.node.server
    settings = reload.settings
    changed: list[str] = []
    failed: list[str] = []
    described = {change.key: str(change) for change in reload.live}
    refresh_local_addresses(server)  # the host's addresses may have changed (design §6)
    if reload.applies(*PEER_KEYS):
        withdrawn = server.use_policy(_policy(settings))
        closed = running.node.tcp_relays.close_denied()  # RFC 6062 peer connections
        changed += [described[key] for key in PEER_KEYS if key in described]
        if closed:
            changed.append(f"closed {closed} TCP peer connection(s) to peers now denied")
        if withdrawn:
            changed.append(
                f"withdrawn from live allocations: {withdrawn.permissions} permission(s) "
                f"and {withdrawn.channels} channel(s) to peers now denied"
            )
    if reload.applies(*CONFIG_KEYS):
        _use_config(server, settings)
        changed += [described[key] for key in CONFIG_KEYS if key in described]
    if reload.applies(*BANDWIDTH_KEYS):
        running.node.use_bandwidth(settings.bandwidth.limits(settings.workers))
        changed += [described[key] for key in BANDWIDTH_KEYS if key in described]
    if reload.applies("auth.users"):
        kept = server.use_users(StaticUsers(dict(settings.auth.users), server.auth.realm))
        note = f" ({kept} keep their old credential for live allocations)" if kept else ""
        changed.append(described["auth.users"] + note)
    if reload.applies(*SECRETS_KEYS):
        for secrets in server.auth.credentials.shared_secrets:
            secrets.replace(settings.auth.shared_secrets)
        changed += [described[key] for key in SECRETS_KEYS if key in described]
    has_context = running.ssl_context is not None or running.dtls_certificate is not None
    if reload.applies(*TLS_KEYS) and has_context:
        try:
            changed.append(
                reload_certificate(running.ssl_context, settings, running.dtls_certificate)
            )
        except SettingsError as exc:
            failed.append(f"{exc}; the certificate in force stays")
    return Applied(tuple(changed), tuple(failed))


def _policy(settings: Settings) -> PeerPolicy:
    relay = settings.relay
    return PeerPolicy.from_strings(
        relay.allow_peers, relay.deny_peers, allow_loopback=relay.allow_loopback_peers
    )


def _use_config(server: TurnServer, settings: Settings) -> None:
    relay = settings.relay
    server.use_config(
        replace(
            server.config,
            user_quota=relay.user_quota,
            total_quota=relay.total_quota,
            permissions_per_allocation=relay.permissions_per_allocation,
            channels_per_allocation=relay.channels_per_allocation,
            peers_per_request=relay.peers_per_request,
            allocations_per_source=relay.allocations_per_source,
            pending_per_source=relay.pending_per_source,
            peer_connections_per_allocation=relay.peer_connections_per_allocation,
            unauthenticated_rate=relay.unauthenticated_rate,
            unauthenticated_burst=relay.unauthenticated_burst,
            reflection_rate=relay.reflection_rate,
            reflection_burst=relay.reflection_burst,
            default_lifetime=relay.default_lifetime,
            max_lifetime=relay.max_lifetime,
            strict_expiry=settings.auth.strict_expiry,
        )
    )


def reload_certificate(
    context: ssl.SSLContext | None,
    settings: Settings,
    dtls_certificate: DtlsCertificate | None = None,
) -> str:
    """Load the pair of `settings.tls` into `context` (and `dtls_certificate`), checked
    first; say what was loaded.

    Raises `SettingsError` naming `tls.cert` or `tls.key` (the contexts unchanged).
    """
    cert_file, key_file = settings.tls.cert_file, settings.tls.key_file
    if cert_file is None or key_file is None:
        raise SettingsError("tls.cert", "no certificate file to load")
    cert_pem = _read("tls.cert", cert_file)
    key_pem = _read("tls.key", key_file)
    # The bytes read once are what is checked and what is loaded, even if the files
    # change meanwhile; `ssl` loads only from files: a private directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="trelay-tls-") as directory:
        cert_copy, key_copy = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_copy.write_bytes(cert_pem)
        fd = os.open(key_copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key_pem)
        try:
            server_context(cert_copy, key_copy)
        except SettingsError as exc:
            problem = exc.problem.replace(str(cert_copy), str(cert_file))
            raise SettingsError(exc.key, problem.replace(str(key_copy), str(key_file))) from None
        if context is not None:
            context.load_cert_chain(cert_copy, key_copy)
        if dtls_certificate is not None:
            dtls_certificate.load(cert_copy, key_copy)
    certificate = x509.load_pem_x509_certificates(cert_pem)[0]
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":")[:23]
    until = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    return f"tls.cert: loaded {cert_file} (SHA-256 {fingerprint}..., valid until {until})"


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(key, f"cannot read {path}: {exc.strerror or exc}") from None
