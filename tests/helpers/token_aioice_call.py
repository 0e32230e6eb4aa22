"""aioice against the TURN server an `iceServers` list names (tests/aioice_call does the
calls): which server that is, and whether an agent gathers a relay candidate there."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from tests.helpers.aioice_call import TIMEOUT, relay_only_agent


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


def gathered_relay_candidates(server: tuple[str, int], username: str, password: str) -> int:
    """How many relay candidates one relay-only agent gathers (0 when TURN refuses it)."""

    async def gather() -> int:
        agent = relay_only_agent(server, username, password, controlling=True)
        try:
            await asyncio.wait_for(agent.gather_candidates(), TIMEOUT)
            return sum(1 for c in agent.local_candidates if c.type == "relay")
        except ConnectionError:
            return 0
        finally:
            await agent.close()

    return asyncio.run(gather())
