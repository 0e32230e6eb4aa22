"""Run inside a private network namespace by `test_self_relay_netns`: never on its own.

A node listening on the wildcard 0.0.0.0 (loopback peers allowed, 192.0.2.0/24 allowed
too), with 192.0.2.7 added to `lo`: a ChannelBind to any local address with a
listener's port must be 403 (design §6, issue 15), and the same addresses with other
ports stay ordinary peers. Prints "ok" when every check held; any failure raises.
"""

from __future__ import annotations

import subprocess

import trio

from tests.helpers.turn_client import TurnClient, TurnError, peer, udp_client
from tests.helpers.turn_relay import make_turn_server
from trelay.config.settings import ListenSettings, Settings
from trelay.config.values import ListenAddress
from trelay.node.assembly import start_node
from trelay.turn.policy import PeerPolicy

EXTRA_ADDRESS = "192.0.2.7"


async def _refused(client: TurnClient, peer_address: tuple[str, int]) -> int:
    try:
        await client.channel_bind(0x4000, peer_address)
    except TurnError as exc:
        return exc.code
    return 200


async def main() -> None:
    wildcard = (ListenAddress("0.0.0.0", 0),)  # a private namespace
    settings = Settings(listen=ListenSettings(udp=wildcard, tcp=(), tls=()))
    server = make_turn_server()
    server.use_policy(PeerPolicy.from_strings(allow=["192.0.2.0/24"], allow_loopback=True))
    async with trio.open_nursery() as nursery:
        running = await start_node(nursery, settings, server=server)
        ((_, port),) = running.bound.udp
        async with udp_client(("127.0.0.1", port)) as client, peer() as far:
            await client.allocate()
            for host in ("127.0.0.1", "127.0.0.2", "127.255.255.254", EXTRA_ADDRESS):
                code = await _refused(client, (host, port))
                assert code == 403, f"ChannelBind to {host}:{port} got {code}, not 403"
                await client.create_permission((host, port))  # the IP itself: a peer
            await client.channel_bind(0x4001, far.address)  # a peer on another port
            await client.channel_bind(0x4002, (EXTRA_ADDRESS, far.address[1]))
        nursery.cancel_scope.cancel()
    print("ok")


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    add = ["ip", "addr", "add", f"{EXTRA_ADDRESS}/32", "dev", "lo"]
    subprocess.run(add, check=True, timeout=10)
    trio.run(main)
