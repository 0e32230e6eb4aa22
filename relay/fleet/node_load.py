"""Reading a running node's load for its registry entry, from the outside (design §9).

Owns `turn_node_load`: allocations active now, bytes relayed both ways so far, and this
process's CPU seconds; the registry turns the last two into rates. It reads plain
counters and tables in the node's trio thread, as a metrics scrape does, and awaits
nothing.
"""

from __future__ import annotations

import time

from trelay.fleet.registry import LoadSample
from trelay.node.turn_node import TurnNode


def turn_node_load(node: TurnNode) -> LoadSample:
    counters = node.counters
    return LoadSample(
        allocations=len(node.server.allocations),
        relayed_bytes=counters.client_to_peer_bytes + counters.peer_to_client_bytes,
        cpu_seconds=time.process_time(),
    )
