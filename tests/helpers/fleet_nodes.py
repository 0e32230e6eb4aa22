"""Relay nodes in a fleet, started in-process on loopback: for the fleet-state tests.

`start_fleet_node` starts a node as `trelay serve` does (`trelay.node.assembly.start_node`
from `Settings` with `[fleet]` and a TURN REST secret) and its link to the fleet
(`trelay.fleet.node_link.run_node_link`), in the caller's nursery. `allocate_code` makes
one Allocate with a fresh UDP client and says how it ended (0 for success, else the
error code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import trio

from tests.helpers.fleet_store import WAIT
from tests.helpers.turn_client import TurnError, udp_client
from trelay.config.auth_settings import AuthSettings
from trelay.config.fleet_settings import FleetSettings
from trelay.config.settings import ListenSettings, Settings
from trelay.config.values import ListenAddress
from trelay.fleet.node_link import NodeLink, run_node_link
from trelay.node.assembly import RunningNode, start_node
from trelay.turn.addressing import Address
from trelay.turn.credential_sources import rest_password

CONFIGURED_SECRET = "configured-secret-of-the-fleet-tests"


@dataclass
class FleetNode:
    running: RunningNode
    link: NodeLink

    @property
    def udp(self) -> Address:
        (address,) = self.running.bound.udp
        return address


async def start_fleet_node(
    nursery: trio.Nursery, redis_url: str, node_id: str, *, secrets: tuple[str, ...] = ()
) -> FleetNode:
    settings = Settings(
        listen=ListenSettings(udp=(ListenAddress("127.0.0.1", 0),), tcp=(), tls=()),
        auth=AuthSettings(secrets=secrets or (CONFIGURED_SECRET,)),
        fleet=FleetSettings(redis_url=redis_url, node_id=node_id),
    )
    running = await start_node(nursery, settings)
    link = await nursery.start(run_node_link, settings, running)
    assert isinstance(link, NodeLink)
    with trio.fail_after(WAIT):
        await link.store.wait_connected()
    return FleetNode(running, link)


def credential(secret: str, identity: str, seconds: int = 600) -> tuple[str, str]:
    """A TURN REST username and password for `identity` under `secret`."""
    username = f"{int(time.time()) + seconds}:{identity}"
    return username, rest_password(secret.encode(), username)


async def allocate_code(server: Address, username: str, password: str) -> int:
    """0 when an Allocate with these credentials succeeds, else its error code."""
    async with udp_client(server) as client:
        client.username, client.password = username, password
        try:
            await client.allocate()
        except TurnError as exc:
            return exc.code
        await client.refresh(0)  # done: leave nothing allocated
        return 0
