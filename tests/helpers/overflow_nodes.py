"""In-process fleet nodes for the overflow and quota tests, on a real redis-server.

`start_node_in_fleet` starts a node from `Settings` (loopback UDP and TCP, port 0, a
TURN REST secret) and, once its ports are known, its registry heartbeat (its
`public_uris` name its bound UDP and TCP addresses), its overflow task and its quota
sync, each with the process's stores, in the caller's nursery: what `trelay serve`
runs beside a node. `rest_login` makes TURN REST credentials for an identity;
`allocate_reply` makes one Allocate with a fresh UDP client and returns the response.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import trio

from tests.helpers.fleet_store import WAIT
from tests.helpers.fleet_store import eventually as eventually  # the fleet tests' own
from tests.helpers.turn_client import udp_client
from trelay.config.auth_settings import AuthSettings
from trelay.config.fleet_settings import FleetSettings
from trelay.config.settings import ListenSettings, RelaySettings, Settings
from trelay.config.values import ListenAddress
from trelay.fleet.follow import run_steps
from trelay.fleet.node_load import turn_node_load
from trelay.fleet.overflow import OverflowTask
from trelay.fleet.quotas import QuotaSync, quota_sync_for
from trelay.fleet.registry import NodeRegistry, NodeView
from trelay.fleet.store import RedisStore
from trelay.node.assembly import RunningNode, start_node
from trelay.stun.attributes import RequestedTransport
from trelay.stun.codes import Method
from trelay.stun.message import Message
from trelay.turn.addressing import Address
from trelay.turn.credential_sources import rest_password

SECRET = "secret-of-the-overflow-tests"
HEARTBEAT = 0.2
TTL = 2.0


@dataclass
class FleetNode:
    running: RunningNode
    settings: FleetSettings
    registry: NodeRegistry
    overflow: OverflowTask
    quotas: QuotaSync

    @property
    def udp(self) -> Address:
        (address,) = self.running.bound.udp
        return address

    @property
    def tcp(self) -> Address:
        (address,) = self.running.bound.tcp
        return address


async def start_node_in_fleet(
    nursery: trio.Nursery,
    redis_url: str,
    node_id: str,
    *,
    region: str = "eu",
    max_allocations: int = 0,
    user_quota: int = 0,
) -> FleetNode:
    fleet = FleetSettings(
        redis_url=redis_url, node_id=node_id, region=region, heartbeat_seconds=HEARTBEAT,
        ttl_seconds=TTL, max_allocations=max_allocations,
    )  # fmt: skip
    settings = Settings(
        listen=ListenSettings(
            udp=(ListenAddress("127.0.0.1", 0),), tcp=(ListenAddress("127.0.0.1", 0),), tls=()
        ),
        auth=AuthSettings(secrets=(SECRET,)),
        relay=RelaySettings(user_quota=user_quota),
        fleet=fleet,
    )
    running = await start_node(nursery, settings)
    (udp,), (tcp,) = running.bound.udp, running.bound.tcp
    fleet = replace(
        fleet,
        public_uris=(
            f"turn:{udp[0]}:{udp[1]}?transport=udp",
            f"turn:{tcp[0]}:{tcp[1]}?transport=tcp",
        ),
    )
    server = running.node.server
    view = NodeView(
        load=lambda: turn_node_load(running.node),
        ready=lambda: True,
        draining=lambda: server.draining,
    )
    registry = NodeRegistry(RedisStore(fleet), fleet, view)
    await nursery.start(registry.run)
    store = RedisStore(fleet, backoff_max=0.2)  # the process's own, as the node link's
    overflow = OverflowTask(store, fleet, server, node_id)
    quotas = quota_sync_for(store, fleet, server, node_id)

    async def tasks(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with store.opened(), trio.open_nursery() as inner:
            await inner.start(run_steps, overflow)
            await inner.start(run_steps, quotas)
            task_status.started()

    await nursery.start(tasks)
    with trio.fail_after(WAIT):
        await store.wait_connected()
    return FleetNode(running, fleet, registry, overflow, quotas)


def rest_login(identity: str, seconds: int = 3600) -> tuple[str, str]:
    """A TURN REST username and password for `identity`, valid longer than the 600 s a
    test's allocation asks for (a lifetime is capped by the credential's)."""
    username = f"{int(time.time()) + seconds}:{identity}"
    return username, rest_password(SECRET.encode(), username)


async def allocate_reply(server: Address, identity: str) -> Message:
    """One Allocate from a fresh UDP client of `identity`: the final response."""
    async with udp_client(server) as client:
        client.username, client.password = rest_login(identity)
        return await client.request(Method.ALLOCATE, RequestedTransport(17))
