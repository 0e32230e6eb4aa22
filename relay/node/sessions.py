"""Session admin on a running node: the core's view of each allocation plus its traffic.

Owns `Session`, what an operator lists for one live allocation (coturn's CLI `ps`,
`eturnalctl sessions`, STUNner's sessions): the core's `AllocationView` (5-tuple,
relayed address, identity, age, lifetime left, permissions, channels; RFC 8656 §2, §7,
§9, §12) and `Traffic`, the datagrams and payload bytes relayed each way, copied from
the runtime's per-allocation counters (`trelay.node.data_path.RelaySenders`) at the same
moment. `TurnNode.sessions` builds them; `TurnNode.end_sessions` ends allocations
through the core (`TurnServer.end_allocation`, `end_identity`).

Sessions are plain frozen values: the HTTP app serialises them and a worker pickles them
to its supervisor (`trelay.process.worker`). Nothing here is exported as a metric
(design §6: no per-user or per-allocation label).
"""

from __future__ import annotations

from dataclasses import dataclass

from trelay.node.data_path import RelaySenders
from trelay.turn.allocation_view import AllocationView


@dataclass(frozen=True, slots=True)
class Traffic:
    """Datagrams and payload bytes one allocation relayed, each way, since it began."""

    client_to_peer_datagrams: int = 0
    client_to_peer_bytes: int = 0
    peer_to_client_datagrams: int = 0
    peer_to_client_bytes: int = 0

    @classmethod
    def of(cls, senders: object) -> Traffic:
        """The counters of an allocation's runtime record (none yet: zeros)."""
        if not isinstance(senders, RelaySenders):
            return cls()
        return cls(
            senders.client_to_peer_datagrams,
            senders.client_to_peer_bytes,
            senders.peer_to_client_datagrams,
            senders.peer_to_client_bytes,
        )


@dataclass(frozen=True, slots=True)
class Session:
    """One live allocation as the operator lists it: the core's view, the runtime's traffic."""

    view: AllocationView
    traffic: Traffic
