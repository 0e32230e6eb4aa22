"""Which ICE URIs the token API hands a client: a static list, or placement in the fleet.

Owns the `IceUriProvider` the token API's routes await with the request
(`trelay.credentials.token_api`):

- `static_uris(urls)`: the same list for everyone (`api.ice_urls`, or the node's own
  listeners): a node alone, exactly as before the fleet.
- `PlacedUris`: with `[fleet]`, the URIs of at most `placement.count` available nodes
  nearest the client (`trelay.fleet.placement`, design §9), read from the cached listing
  (`trelay.fleet.directory`). The client's region is, in order: the `region` query
  parameter, the `X-Trelay-Region` header, the region of the client networks holding
  the client's address (the connection's peer, or `X-Forwarded-For` when the peer is a
  trusted proxy), else this API node's own region. A region nobody serves still works:
  placement falls to its neighbours, then to the rest.
  When the listing is available but no node can take the client, the answer is 503
  `no_relay` (never an empty list: a client would fail without saying why). When Redis
  has not answered for longer than the registry's TTL, the static list.

Invariants: a region name from the request is checked like the settings' (400
`bad_region`); nothing here awaits Redis for longer than the directory's bound.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from trelay.config.placement_settings import PlacementSettings, check_region_name
from trelay.config.values import SettingsError
from trelay.credentials.api_requests import ApiError
from trelay.fleet.directory import NodeDirectory
from trelay.fleet.placement import NetworkMap, client_address, place, placed_uris

log = logging.getLogger(__name__)

REGION_HEADER = "x-trelay-region"

# The URIs for one request (ApiError for a refusal, such as 503 no_relay).
IceUriProvider = Callable[[Request], Awaitable[tuple[str, ...]]]


def static_uris(urls: tuple[str, ...]) -> IceUriProvider:
    """The same `urls` for every request."""

    async def provide(request: Request) -> tuple[str, ...]:
        return urls

    return provide


@dataclass(frozen=True, slots=True)
class PlacedUris:
    """Placement for each request; `fallback` while the fleet's listing is unusable."""

    directory: NodeDirectory
    placement: PlacementSettings
    own_region: str
    fallback: tuple[str, ...]

    async def __call__(self, request: Request) -> tuple[str, ...]:
        region = self.client_region(request)
        listing = await self.directory.listing()
        if listing is None:
            return self.fallback
        neighbours = self.placement.neighbours_of(region)
        nodes = place(listing.nodes, region, neighbours, self.placement.count)
        if not nodes:
            raise ApiError(503, "no_relay", "no relay node can take a client now; retry later")
        return placed_uris(nodes)

    def client_region(self, request: Request) -> str:
        """The region asked for, else the client network's, else this node's."""
        for source, value in (
            ("region", request.query_params.get("region")),
            (REGION_HEADER, request.headers.get(REGION_HEADER)),
        ):
            if value is not None:
                try:
                    return check_region_name(source, value)
                except SettingsError as exc:
                    raise ApiError(400, "bad_region", str(exc)) from None
        peer = request.client.host if request.client is not None else None
        address = client_address(
            peer, request.headers.get("x-forwarded-for"), self.placement.trusted_proxies
        )
        mapped = NetworkMap(self.placement.client_networks).region_of(address)
        return self.own_region if mapped is None else mapped
