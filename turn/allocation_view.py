"""The operator's read-only view of live allocations (session admin), sans I/O.

Owns `AllocationView`, one live allocation as an operator lists it (coturn's CLI
`ps`, `eturnalctl sessions`): the client's 5-tuple (transport, client and server
addresses, RFC 8656 §2), the relayed address (§7.2), the identity quotas count, its age
and the lifetime it has left (§7), and how many permissions (§9) and channels (§12) it
holds. A dual allocation (§7.2, ADDITIONAL-ADDRESS-FAMILY) also shows its second
relayed address (`second_relayed`, `second_reported_relayed`; None for a single-family
one; `first_withdrawn` when the client deleted the first family alone, §7.3, its
address kept until the end), and a TCP allocation (RFC 6062 §5.1) how many peer
connections it holds (`peer_connections`: connecting, waiting for a ConnectionBind or
spliced; None for a UDP allocation). Traffic is the runtime's to count
(`trelay.node.sessions`); the core counts no bytes.

A view is a frozen copy taken at `now` (monotonic seconds from the caller): it never
reaches back into the allocation, so it can be handed to another task, pickled to a
supervisor or serialised without the core changing under it. It carries no key and no
password; the identity is shown because only an authenticated operator sees views.
"""

from __future__ import annotations

from dataclasses import dataclass

from trelay.turn.addressing import Address, FiveTuple
from trelay.turn.allocation import Allocation


@dataclass(frozen=True, slots=True)
class AllocationView:
    """One live allocation at one moment, as the operator sees it.

    `relayed` is the bound relay socket's address, `reported_relayed` what
    XOR-RELAYED-ADDRESS told the client (they differ behind a 1:1 NAT or with a
    wildcard relay address). `age` and `lifetime_left` are seconds. The fields after
    `channels` default to what a single-family UDP allocation shows.
    """

    five_tuple: FiveTuple
    relayed: Address
    reported_relayed: Address
    identity: str
    age: float
    lifetime_left: float
    permissions: int
    channels: int
    second_relayed: Address | None = None
    second_reported_relayed: Address | None = None
    peer_connections: int | None = None
    first_withdrawn: bool = False


def view_of(
    allocation: Allocation, now: float, peer_connections: int | None = None
) -> AllocationView:
    """`allocation` as the operator sees it at `now`; `peer_connections` is the count
    of a TCP allocation's peer connections (None for a UDP one)."""
    return AllocationView(
        five_tuple=allocation.five_tuple,
        relayed=allocation.relayed,
        reported_relayed=allocation.reported_relayed,
        identity=allocation.identity,
        age=max(0.0, now - allocation.created_at),
        lifetime_left=max(0.0, allocation.expires_at - now),
        permissions=len(allocation.permissions),
        channels=len(allocation.channels),
        second_relayed=allocation.second,
        second_reported_relayed=allocation.second_reported,
        peer_connections=peer_connections,
        first_withdrawn=allocation.first_withdrawn,
    )
