"""Build the TURN core from the settings, or for a throw-away test relay.

Owns the translation from operator settings (`trelay.config.settings`) to the pure core's
values (`trelay.turn.config.TurnConfig`, credential sources, the peer policy, the nonce key,
the mobility ticket codec of `[relay] mobility`).
The nonce key is derived from the shared secrets when there are any, so that every
worker and node holding the same secret accepts the same nonces; otherwise it is the
key the caller gives (a worker gets its supervisor's) or random per process.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence

from trelay.config.settings import Settings
from trelay.node.mobility_tickets import SealedTickets, ticket_key
from trelay.node.token_cipher import AesGcmTokenCipher
from trelay.node.turn_node import DONT_FRAGMENT_SUPPORTED
from trelay.turn.auth import LongTermAuthenticator, RevocationCheck
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import CredentialSources, SharedSecrets, StaticUsers
from trelay.turn.nonces import NonceStamper
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer
from trelay.turn.third_party import ThirdPartyAuthorizer


def turn_config(settings: Settings) -> TurnConfig:
    relay = settings.relay
    v6 = ":" in relay.address
    return TurnConfig(
        realm=settings.auth.realm,
        software=settings.software,
        relay_host=None if v6 else relay.address,
        relay_host_v6=relay.address if v6 else relay.address_v6,
        external_host=None if v6 else relay.external_address,
        external_host_v6=relay.external_address if v6 else relay.external_address_v6,
        port_range=relay.ports,
        default_lifetime=relay.default_lifetime,
        max_lifetime=relay.max_lifetime,
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
        strict_expiry=settings.auth.strict_expiry,
        dont_fragment=DONT_FRAGMENT_SUPPORTED,
        nat_discovery=settings.nat_discovery.core(),  # RFC 5780, opt-in
        # Enforced by the node's data path; the node total split between the workers.
        bandwidth=settings.bandwidth.limits(settings.workers),
    )


def shared_secrets(settings: Settings) -> SharedSecrets:
    """The TURN REST secrets of `settings`; the node may swap them (`auth.secrets_file`)."""
    return SharedSecrets(settings.auth.shared_secrets, settings.auth.realm)


def build_turn_server(
    settings: Settings,
    rest: SharedSecrets | None = None,
    *,
    nonce_key: bytes | None = None,
    is_revoked: RevocationCheck | None = None,
    worker: int = 0,
) -> TurnServer:
    """The core `settings` describe. `rest`: the shared secrets object the node keeps
    (and a secrets-file watcher swaps); `nonce_key`: used when the settings have no
    shared secret to derive one from; `is_revoked`: the revocation check, if any;
    `worker`: the index of this worker process, named in the mobility tickets it seals
    (RFC 8016; sealed with a key derived from the nonce key, which every worker shares)
    and, with more than one worker, in its RESERVATION-TOKENs (RFC 8656 §7.2)."""
    auth = settings.auth
    rest = rest or shared_secrets(settings)
    sources = CredentialSources(StaticUsers(dict(auth.users), auth.realm), rest)
    policy = PeerPolicy.from_strings(
        settings.relay.allow_peers,
        settings.relay.deny_peers,
        allow_loopback=settings.relay.allow_loopback_peers,
    )
    third_party = None
    if auth.third_party is not None:
        tp = auth.third_party
        third_party = ThirdPartyAuthorizer(
            tp.server_name, tp.authorization_server, tp.keys, AesGcmTokenCipher()
        )
    key = _nonce_key(auth.shared_secrets, nonce_key)
    authenticator = LongTermAuthenticator(
        auth.realm,
        sources,
        NonceStamper(key),
        third_party=third_party,
        is_revoked=is_revoked,
        max_credential_lifetime=auth.max_credential_lifetime,
    )
    tickets = SealedTickets(ticket_key(key), worker) if settings.relay.mobility else None
    # With workers, RESERVATION-TOKENs name theirs too (`trelay.turn.reservations`).
    token_worker = worker if settings.workers > 1 else None
    return TurnServer(
        turn_config(settings), authenticator, policy, wall_clock=time.time, tickets=tickets,
        worker=token_worker,
    )  # fmt: skip


def _nonce_key(shared_secrets: tuple[str, ...], given: bytes | None) -> bytes:
    """Derived from the secrets when there are any, so that every worker and node holding
    the same secret accepts the same nonces; at start-up only: a rotation must not make
    every outstanding nonce stale at once."""
    if shared_secrets:
        joined = b"|".join(s.encode() for s in shared_secrets)
        return hashlib.sha256(b"trelay nonce key|" + joined).digest()
    return given if given is not None else secrets.token_bytes(32)


def loopback_turn_server(
    config: TurnConfig,
    users: Mapping[str, str] | None = None,
    shared: Sequence[str] = (),
) -> TurnServer:
    """A core for throw-away test relays: `config` as given, loopback peers allowed, the
    static `users` and TURN REST `shared` secrets given, a random nonce key."""
    source: StaticUsers | SharedSecrets = (
        SharedSecrets(list(shared), config.realm)
        if shared
        else StaticUsers(dict(users or {}), config.realm)
    )
    key = secrets.token_bytes(32)
    auth = LongTermAuthenticator(config.realm, CredentialSources(source), NonceStamper(key, 600))
    return TurnServer(
        config, auth, PeerPolicy.from_strings(allow_loopback=True), wall_clock=time.time,
        tickets=SealedTickets(ticket_key(key)),
    )  # fmt: skip
