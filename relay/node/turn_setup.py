"""Build the TURN core from the settings, and mint the dev credential `make run` prints.

Owns the translation from operator settings (`trelay.config.settings`) to the pure core's
values (`trelay.turn.config.TurnConfig`, credential sources, the peer policy, the nonce key).
The nonce key is derived from the shared secrets when there are any, so that every
worker and node holding the same secret accepts the same nonces; otherwise it is
random per process.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from trelay.config.settings import Settings
from trelay.credentials.ice_config import TurnCredential, rest_credential
from trelay.credentials.token_crypto import AesGcmTokenCipher
from trelay.node.turn_node import DONT_FRAGMENT_SUPPORTED
from trelay.turn.auth import LongTermAuthenticator
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import CredentialSources, SharedSecrets, StaticUsers
from trelay.turn.nonces import NonceStamper
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer
from trelay.turn.third_party import ThirdPartyAuthorizer

DEV_CREDENTIAL_SECONDS = 24 * 3600


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
        strict_expiry=settings.auth.strict_expiry,
        dont_fragment=DONT_FRAGMENT_SUPPORTED,
    )


def shared_secrets(settings: Settings) -> SharedSecrets:
    """The TURN REST secrets of `settings`; the node may swap them (`auth.secrets_file`)."""
    return SharedSecrets(settings.auth.shared_secrets, settings.auth.realm)


def build_turn_server(settings: Settings, rest: SharedSecrets | None = None) -> TurnServer:
    auth = settings.auth
    rest = rest or shared_secrets(settings)
    sources = CredentialSources(StaticUsers(dict(auth.users), auth.realm), rest)
    # Derived from the secrets at start-up only: a rotation must not make every
    # outstanding nonce stale at once.
    shared = [s.encode() for s in auth.shared_secrets]
    nonce_key = (
        hashlib.sha256(b"trelay nonce key|" + b"|".join(shared)).digest()
        if shared
        else secrets.token_bytes(32)
    )
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
    authenticator = LongTermAuthenticator(
        auth.realm, sources, NonceStamper(nonce_key), third_party=third_party
    )
    return TurnServer(turn_config(settings), authenticator, policy, wall_clock=time.time)


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
