"""The token API with placement, over real HTTP and a real redis-server: the client's region
(parameter, header, client network, the API node's own), neighbours, at most `count`
nodes, a draining node gone from /v1/ice-servers at the next refresh, 503 no_relay when no
node can take a client, the static list once Redis is away past the TTL, and the other
routes (Tokens.json, turn-credentials, iceconfig) placed the same way."""

from __future__ import annotations

import base64
import ipaddress
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from aiortc import RTCConfiguration, RTCIceServer

from tests.fleet.test_directory import publish
from tests.helpers.fleet_store import WAIT, eventually, new_store
from tests.helpers.http_client import HttpResponse, http_request
from tests.helpers.redis_server import RedisServer
from tests.helpers.token_harness import ACCOUNT, KEY, KEYS, TURN_SECRET
from trelay.config.placement_settings import ClientNetwork, PlacementSettings
from trelay.credentials.access_tokens import mint_token
from trelay.credentials.ice_uris import PlacedUris
from trelay.credentials.token_api import TokenApiContext, token_routes
from trelay.fleet.directory import NodeDirectory
from trelay.fleet.registry import NodeEntry
from trelay.fleet.store import RedisStore
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http

REFRESH = 0.1
STATIC = ("turn:static.example.org:3478?transport=udp",)
PLACEMENT = PlacementSettings(
    count=2,
    refresh_seconds=REFRESH,
    neighbours=(("eu-central", ("eu-west", "us-east")),),
)


def node(node_id: str, region: str, allocations: int = 0, *, draining: bool = False) -> NodeEntry:
    return NodeEntry(
        node_id=node_id, region=region,
        public_uris=(f"stun:{node_id}.example.org:3478",
                     f"turn:{node_id}.example.org:3478?transport=udp"),
        ready=True, draining=draining, allocations=allocations, relayed_bps=0.0,
        cpu_share=0.0, updated_at=0.0,
    )  # fmt: skip


@dataclass
class Api:
    address: tuple[str, int]
    store: RedisStore
    directory: NodeDirectory
    token: str

    async def get(self, path: str, headers: dict[str, str] | None = None) -> HttpResponse:
        auth = {"Authorization": f"Bearer {self.token}"}
        return await http_request(self.address, path, headers=auth | (headers or {}))

    async def placed(self, path: str = "/v1/ice-servers", **headers: str) -> list[str]:
        """The hosts of the TURN URIs /v1/ice-servers hands out, in order."""
        response = await self.get(path, headers)
        assert response.status == 200, response.text
        body = response.json()
        assert isinstance(body, dict)
        turn = [s for s in body["iceServers"] if "username" in s]
        return [url.split(":")[1].split(".")[0] for url in turn[0]["urls"]]


@asynccontextmanager
async def placement_api(
    server: RedisServer, placement: PlacementSettings = PLACEMENT, *, ttl: float = 15.0
) -> AsyncIterator[Api]:
    store = new_store(server)
    directory = NodeDirectory(store, ttl, refresh_seconds=placement.refresh_seconds)
    context = TokenApiContext(
        keys=lambda: KEYS,
        secret=lambda: TURN_SECRET,
        uris=PlacedUris(directory, placement, "eu-central", STATIC),
    )
    app = build_app(NodeStatus(), extra_routes=token_routes(context))
    async with store.opened(), trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await store.wait_connected()
        await nursery.start(directory.run)
        address = await nursery.start(serve_http, "127.0.0.1", 0, app)
        token = mint_token(KEY, "alice", time.time())
        yield Api(address, store, directory, token)
        nursery.cancel_scope.cancel()


async def test_the_near_region_first_then_neighbours_at_most_count(
    redis_server: RedisServer,
) -> None:
    async with placement_api(redis_server) as api:
        for entry in (
            node("fra1", "eu-central", 5), node("fra2", "eu-central", 1),
            node("fra3", "eu-central", 9), node("dub1", "eu-west"), node("nyc1", "us-east"),
        ):  # fmt: skip
            await publish(api.store, entry)
        # The API node's own region (eu-central), two nodes, least loaded first.
        assert await api.placed() == ["fra2", "fra1"]
        # Asked by parameter or header: that region's, then (none listed) the rest by load.
        assert await api.placed("/v1/ice-servers?region=us-east") == ["nyc1", "dub1"]
        assert await api.placed(**{"X-Trelay-Region": "eu-west"}) == ["dub1", "nyc1"]
        # A region nobody serves: the rest, least loaded first.
        assert await api.placed("/v1/ice-servers?region=mars") == ["dub1", "nyc1"]
        bad = await api.get("/v1/ice-servers?region=eu%2Fcentral")
        assert bad.status == 400 and bad.json() == {
            "error": "bad_region",
            "message": bad.json()["message"],  # type: ignore[index]
        }


async def test_neighbours_in_order_when_the_region_has_no_node(redis_server: RedisServer) -> None:
    async with placement_api(redis_server) as api:
        for entry in (node("nyc1", "us-east"), node("dub1", "eu-west", 50), node("sg1", "ap")):
            await publish(api.store, entry)
        assert await api.placed() == ["dub1", "nyc1"]


async def test_the_client_network_gives_the_region(redis_server: RedisServer) -> None:
    loopback = ClientNetwork(ipaddress.ip_network("127.0.0.0/8"), "us-east")
    placement = PlacementSettings(count=1, refresh_seconds=REFRESH, client_networks=(loopback,))
    async with placement_api(redis_server, placement) as api:
        await publish(api.store, node("fra1", "eu-central"))
        await publish(api.store, node("nyc1", "us-east", 100))
        assert await api.placed() == ["nyc1"]
        # X-Forwarded-For from an untrusted peer is ignored.
        assert await api.placed(**{"X-Forwarded-For": "203.0.113.9"}) == ["nyc1"]
        # An explicit region beats the network.
        assert await api.placed(**{"X-Trelay-Region": "eu-central"}) == ["fra1"]


async def test_a_draining_node_disappears_and_none_left_is_503(redis_server: RedisServer) -> None:
    async with placement_api(redis_server) as api:
        await publish(api.store, node("fra1", "eu-central"))
        await publish(api.store, node("fra2", "eu-central", 3))
        assert await api.placed() == ["fra1", "fra2"]
        await publish(api.store, node("fra1", "eu-central", draining=True))

        async def fra1_gone() -> bool:
            return await api.placed() == ["fra2"]

        await eventually(fra1_gone)
        await publish(api.store, node("fra2", "eu-central", 3, draining=True))

        async def refused() -> bool:
            return (await api.get("/v1/ice-servers")).status == 503

        await eventually(refused)
        answer = await api.get("/v1/ice-servers")
        assert answer.json() == {
            "error": "no_relay",
            "message": "no relay node can take a client now; retry later",
        }


async def test_the_static_list_once_redis_is_away_past_the_ttl(redis_server: RedisServer) -> None:
    async with placement_api(redis_server, ttl=0.5) as api:
        await publish(api.store, node("fra1", "eu-central"))
        assert await api.placed() == ["fra1"]
        redis_server.stop()

        async def static() -> bool:
            return await api.placed() == ["static"]

        await eventually(static)


def basic_header() -> dict[str, str]:
    pair = f"{KEY.sid}:{KEY.secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


async def test_every_route_hands_out_placed_uris(redis_server: RedisServer) -> None:
    async with placement_api(redis_server) as api:
        await publish(api.store, node("fra1", "eu-central"))
        turn = "turn:fra1.example.org:3478?transport=udp"
        nts = await http_request(
            api.address, f"/2010-04-01/Accounts/{ACCOUNT}/Tokens.json", "POST", basic_header()
        )
        assert nts.status == 201
        body = nts.json()
        assert isinstance(body, dict)
        assert [s["url"] for s in body["ice_servers"]] == ["stun:fra1.example.org:3478", turn]
        rest = await api.get("/v1/turn-credentials?service=turn")
        assert rest.status == 200 and rest.json()["uris"] == [turn]  # type: ignore[index]
        config = await http_request(
            api.address, "/v1/iceconfig", "POST", {"Authorization": f"Bearer {api.token}"}
        )
        assert config.status == 200
        parsed = json.loads(config.body)
        servers = [RTCIceServer(**server) for server in parsed["iceServers"]]
        RTCConfiguration(iceServers=servers)  # what a client would build from it
        assert servers[1].urls == [turn]
    assert (servers[1].username or "").endswith(":alice")
