"""What the operator HTTP port serves beyond /metrics and health: the token API, /selftest.

Owns the choice of routes from the settings (`trelay.ops.http_app.build_app` mounts them):
- the token API (`trelay.credentials.token_api`) when `api.keys_file` is set, minting TURN REST
  credentials under the first shared secret, with `api.ice_urls` or, by default, the
  URIs of the bound listeners (set `api.ice_urls` when clients reach the relay by a
  public name or address: a listener bound to 0.0.0.0 is advertised as loopback);
- RFC 7635 access tokens (`POST /v1/access-tokens`) when `[auth.third_party]` is set;
- `/selftest` when `http.selftest` is on, with credentials for the identity "selftest"
  valid for ten minutes, telling the page when TLS uses the throw-away self-signed
  certificate (no `tls.cert`), which browsers refuse.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from trelay.config.revocations import Revocations
from trelay.config.settings import Settings
from trelay.credentials.ice_config import IceServer, TurnCredential, dev_credential, ice_servers
from trelay.credentials.token_api import ThirdPartyMint, TokenApiContext, token_routes
from trelay.node.listeners import BoundAddresses
from trelay.ops.selftest import selftest_routes

SELFTEST_CREDENTIAL_SECONDS = 600


def operator_routes(
    settings: Settings, bound: BoundAddresses, revocations: Revocations | None
) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    api = settings.api
    if api.keys is not None:
        context = TokenApiContext(
            keys=api.keys,
            turn_secret=settings.auth.shared_secrets[0],
            ice_urls=api.ice_urls or listener_urls(bound),
            default_ttl=api.default_ttl,
            max_ttl=api.max_ttl,
            revocations_file=settings.auth.revocations_file,
            revocations=revocations or Revocations(),
            third_party=_third_party_mint(settings),
        )
        routes += token_routes(context)
    if settings.http.selftest:

        def selftest_servers() -> tuple[IceServer, ...]:
            credential = dev_credential(
                settings, identity="selftest", seconds=SELFTEST_CREDENTIAL_SECONDS
            )
            return ice_servers(bound, credential)

        self_signed = bool(bound.tls) and settings.tls.self_signed
        routes += selftest_routes(selftest_servers, self_signed_tls=self_signed)
    return routes


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
