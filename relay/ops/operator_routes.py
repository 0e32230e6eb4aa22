"""What the operator HTTP port serves beyond /metrics and health: the token API, /selftest.

Owns the choice of routes from the settings (`trelay.ops.http_app.build_app` mounts them):
- the token API (`trelay.credentials.token_api`) when `api.keys_file` is set (or
  `api.fleet_keys`), minting TURN REST credentials under the first shared secret. Its
  ICE URIs: alone, `api.ice_urls` or, by default, the URIs of the bound listeners (set
  `api.ice_urls` when clients reach the relay by a public name or address: a listener
  bound to 0.0.0.0 is advertised as loopback); in a fleet (`FleetApi`, started by
  `start_fleet_api` beside the registry), placement over the live nodes
  (`trelay.credentials.ice_uris.PlacedUris`), that static list being the fallback while
  Redis is away for longer than the registry's TTL. With `api.fleet_keys` in a fleet,
  the API keys are the keys file's and the fleet's (`trelay.fleet.api_keys`). In a
  fleet, `POST /v1/revocations` writes to Redis (`trelay.fleet.revocations`: every node
  refuses the identity within a second; 503 while Redis does not answer), the API checks
  the fleet's revocations before minting, and it mints under the fleet's newest active
  TURN secret (`trelay.fleet.secrets`), else the configured one. A `trelay serve` process
  shares these copies with its node's link (`trelay.fleet.node_link`); the supervisor
  of `--workers` follows them itself;
- the fleet listing `GET /v1/fleet/nodes` (`trelay.ops.fleet_routes`) with an admin
  token and a fleet;
- RFC 7635 access tokens (`POST /v1/access-tokens`) when `[auth.third_party]` is set;
- `/selftest` when `http.selftest` is on, with credentials for the identity "selftest"
  valid for ten minutes, telling the page when TLS uses the throw-away self-signed
  certificate (no `tls.cert`), which browsers refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio
from starlette.routing import BaseRoute

from trelay.config.api_keys import ApiKeys
from trelay.config.revocations import Revocation, Revocations
from trelay.config.settings import Settings
from trelay.credentials.api_requests import ApiError
from trelay.credentials.ice_config import IceServer, TurnCredential, dev_credential, ice_servers
from trelay.credentials.ice_uris import IceUriProvider, PlacedUris, static_uris
from trelay.credentials.token_api import (
    RevocationWriter,
    ThirdPartyMint,
    TokenApiContext,
    file_revocation_writer,
    token_routes,
)
from trelay.fleet.api_keys import FleetApiKeys
from trelay.fleet.directory import NodeDirectory
from trelay.fleet.follow import follow
from trelay.fleet.node_link import NodeLink
from trelay.fleet.registry import NodeRegistry
from trelay.fleet.revocations import RedisRevocationWriter, RevocationFollower
from trelay.fleet.secrets import FleetSecrets, SecretFollower
from trelay.fleet.store import StoreUnavailable
from trelay.node.listeners import BoundAddresses
from trelay.ops.fleet_routes import fleet_routes
from trelay.ops.selftest import selftest_routes

SELFTEST_CREDENTIAL_SECONDS = 600


@dataclass(frozen=True, slots=True)
class FleetApi:
    """What the operator port uses of the fleet: the registry (its store, settings and node
    id), the cached listing for placement, the fleet's API keys (None: not followed), and
    the copies of its revocations and TURN secrets the token API consults."""

    registry: NodeRegistry
    directory: NodeDirectory
    keys: FleetApiKeys | None
    revocations: Revocations
    secrets: FleetSecrets


async def start_fleet_api(
    nursery: trio.Nursery,
    settings: Settings,
    fleet: NodeRegistry | None,
    link: NodeLink | None = None,
    revocations: Revocations | None = None,
) -> FleetApi | None:
    """With a fleet: start the listing's reader (and, with `api.fleet_keys`, the API keys'
    follower) on the registry's store; the revocations and secrets are `link`'s (a
    `trelay serve` process's node link) or, without one (the supervisor of workers),
    followed here, the fleet's revocations joining `revocations` (the file's, if any).
    Without a fleet: None, nothing started."""
    if fleet is None:  # api.fleet_keys without a fleet is refused by the settings
        return None
    placement = fleet.settings.placement
    directory = NodeDirectory(
        fleet.store, fleet.settings.ttl_seconds, refresh_seconds=placement.refresh_seconds
    )
    await nursery.start(directory.run)
    keys = None
    if settings.api.fleet_keys:
        keys = FleetApiKeys(fleet.store, settings.api.keys)
        await nursery.start(keys.run)
    if link is not None:
        return FleetApi(fleet, directory, keys, link.revocations, link.secrets)
    followed = revocations if revocations is not None else Revocations()
    secrets = FleetSecrets(next(iter(settings.auth.shared_secrets), None))
    await nursery.start(follow, fleet.store, RevocationFollower(fleet.store, followed))
    await nursery.start(follow, fleet.store, SecretFollower(fleet.store, secrets))
    return FleetApi(fleet, directory, keys, followed, secrets)


def operator_routes(
    settings: Settings,
    bound: BoundAddresses,
    revocations: Revocations | None,
    fleet: FleetApi | None = None,
) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    api = settings.api
    if api.served:
        context = TokenApiContext(
            keys=_keys_provider(settings, fleet),
            secret=_secret_provider(settings, fleet),
            uris=_uris_provider(settings, bound, fleet),
            default_ttl=api.default_ttl,
            max_ttl=api.max_ttl,
            revoke=_revocation_writer(settings, fleet),
            revocations=fleet.revocations if fleet is not None else revocations or Revocations(),
            third_party=_third_party_mint(settings),
        )
        routes += token_routes(context)
    if fleet is not None:
        routes += fleet_routes(settings.http.admin_token, fleet.registry)
    if settings.http.selftest:

        def selftest_servers() -> tuple[IceServer, ...]:
            credential = dev_credential(
                settings, identity="selftest", seconds=SELFTEST_CREDENTIAL_SECONDS
            )
            return ice_servers(bound, credential)

        self_signed = bool(bound.tls) and settings.tls.self_signed
        routes += selftest_routes(selftest_servers, self_signed_tls=self_signed)
    return routes


def _keys_provider(settings: Settings, fleet: FleetApi | None) -> Callable[[], ApiKeys]:
    if fleet is not None and fleet.keys is not None:
        return fleet.keys.current
    keys = settings.api.keys or ApiKeys()
    return lambda: keys


def _secret_provider(settings: Settings, fleet: FleetApi | None) -> Callable[[], str]:
    if fleet is not None:
        return fleet.secrets.minting_secret
    # The first shared secret, as the nodes' settings hold it.
    secret = settings.auth.shared_secrets[0]
    return lambda: secret


def _revocation_writer(settings: Settings, fleet: FleetApi | None) -> RevocationWriter | None:
    """Redis in a fleet (every node follows it), else the revocations file (if any)."""
    if fleet is None:
        path = settings.auth.revocations_file
        return None if path is None else file_revocation_writer(path)
    writer = RedisRevocationWriter(fleet.registry.store)

    async def revoke(identity: str, until: float, now: float) -> Revocation:
        try:
            return await writer.revoke(identity, until, now)
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", f"not revoked: {exc}") from None

    return revoke


def _uris_provider(
    settings: Settings, bound: BoundAddresses, fleet: FleetApi | None
) -> IceUriProvider:
    static = settings.api.ice_urls or listener_urls(bound)
    if fleet is None:
        return static_uris(static)
    fleet_settings = fleet.registry.settings
    return PlacedUris(fleet.directory, fleet_settings.placement, fleet_settings.region, static)


def _third_party_mint(settings: Settings) -> ThirdPartyMint | None:
    """RFC 7635 tokens from the API, under the last kid of `auth.third_party.keys` (the
    newest, when keys are appended on rotation); nodes check them with the same table."""
    third_party = settings.auth.third_party
    if third_party is None:
        return None
    kid, key = list(third_party.keys.items())[-1]
    return ThirdPartyMint(kid, key, third_party.server_name, third_party.token_lifetime)


def listener_urls(bound: BoundAddresses) -> tuple[str, ...]:
    """Every stun:/turn:/turns: URI of the bound listeners."""
    # Any credential makes ice_servers list the TURN URIs; only the URIs are kept.
    servers = ice_servers(bound, TurnCredential("", ""))
    return tuple(url for server in servers for url in server.urls)
