"""Two aioice agents, relay-only, through the TURN server an `iceServers` list names."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import aioice

TIMEOUT = 20.0


def turn_server(ice_servers: list[dict[str, Any]], transport: str) -> tuple[Any, ...]:
    """((host, port), username, credential) of the first turn: URL with `transport`."""
    for server in ice_servers:
        urls = server["urls"] if isinstance(server["urls"], list) else [server["urls"]]
        for url in urls:
            scheme, _, rest = url.partition(":")
            authority, _, query = rest.partition("?")
            if scheme != "turn" or parse_qs(query).get("transport") != [transport]:
                continue
            host, _, port = authority.rpartition(":")
            return (host, int(port)), server["username"], server["credential"]
    raise AssertionError(f"no turn: URL with transport={transport} in {ice_servers}")


async def relayed_call(
    server: tuple[str, int], username: str, password: str, transport: str = "udp"
) -> list[str]:
    """Connect two relay-only agents, exchange a message each way; the pair's kinds."""

    def agent(controlling: bool) -> aioice.Connection:
        return aioice.Connection(
            ice_controlling=controlling,
            components=1,
            turn_server=server,
            turn_username=username,
            turn_password=password,
            turn_transport=transport,
            transport_policy=aioice.TransportPolicy.RELAY,
            use_ipv6=False,
        )

    left, right = agent(True), agent(False)
    try:
        await asyncio.wait_for(
            asyncio.gather(left.gather_candidates(), right.gather_candidates()), TIMEOUT
        )
        for a, b in ((left, right), (right, left)):
            for candidate in a.local_candidates:
                await b.add_remote_candidate(candidate)
            await b.add_remote_candidate(None)
            b.remote_username = a.local_username
            b.remote_password = a.local_password
        await asyncio.wait_for(asyncio.gather(left.connect(), right.connect()), TIMEOUT)
        await left.send(b"ping via a minted credential")
        assert await asyncio.wait_for(right.recv(), TIMEOUT) == b"ping via a minted credential"
        await right.send(b"pong")
        assert await asyncio.wait_for(left.recv(), TIMEOUT) == b"pong"
        kinds: list[str] = []
        for agent_ in (left, right):
            pair = agent_._nominated[1]  # aioice keeps the nominated pair per component
            kinds += [pair.local_candidate.type, pair.remote_candidate.type]
        return kinds
    finally:
        await left.close()
        await right.close()


def gathered_relay_candidates(server: tuple[str, int], username: str, password: str) -> int:
    """How many relay candidates one relay-only agent gathers (0 when TURN refuses it)."""

    async def gather() -> int:
        agent = aioice.Connection(
            ice_controlling=True,
            components=1,
            turn_server=server,
            turn_username=username,
            turn_password=password,
            transport_policy=aioice.TransportPolicy.RELAY,
            use_ipv6=False,
        )
        try:
            await asyncio.wait_for(agent.gather_candidates(), TIMEOUT)
            return sum(1 for c in agent.local_candidates if c.type == "relay")
        except ConnectionError:
            return 0
        finally:
            await agent.close()

    return asyncio.run(gather())
