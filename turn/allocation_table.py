"""Who holds what: live allocations, Allocates waiting for their relay socket, quotas.

Owns the server's bookkeeping of allocations (RFC 8656 §5, §7.2 step 8 quotas):

- `allocations`: 5-tuple -> allocation, `by_relayed`: relayed address -> allocation, and
  one client-address -> allocation map per listening socket (`client_table`), which the
  runtime's UDP data path reads directly (one lookup per ChannelData packet);
- `pending`: Allocates whose relay socket the runtime is still binding; they count
  towards quotas and hold their relay port, so a burst cannot overshoot either;
- allocations per identity (the user quota) and the relay port pool;
- `remote`: what the fleet says each identity holds on other nodes (the runtime fills it
  from Redis, `trelay.fleet.quotas`; at most `MAX_REMOTE_IDENTITIES` identities), which
  the user quota adds to the local count.

Invariants: the three maps always hold exactly the same allocations; an identity's
count is its allocations plus its pending Allocates; a port is in use exactly while an
allocation or a pending Allocate holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from trelay.stun.codes import AddressFamily
from trelay.stun.message import Message
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.allocation import Allocation
from trelay.turn.auth import Authenticated
from trelay.turn.port_pool import RelayPortPool

# The remote counts are a cache of the identities this server holds (the runtime asks
# for no others); the bound keeps a runtime mistake from growing it without limit.
MAX_REMOTE_IDENTITIES = 100_000


@dataclass(slots=True)
class PendingAllocate:
    """An authenticated Allocate waiting for `relay_opened` / `relay_failed`."""

    request: Message
    auth: Authenticated
    lifetime: int
    family: AddressFamily
    port: int
    attempts: int = 1


class AllocationTable:
    __slots__ = (
        "_client_tables", "_per_identity", "_remote", "allocations", "by_relayed", "pending",
        "ports",
    )  # fmt: skip

    def __init__(self, ports: RelayPortPool | None) -> None:
        self.allocations: dict[FiveTuple, Allocation] = {}
        self.by_relayed: dict[Address, Allocation] = {}
        self.pending: dict[FiveTuple, PendingAllocate] = {}
        self.ports = ports
        self._client_tables: dict[tuple[ClientTransport, Address], dict[Address, Allocation]] = {}
        self._per_identity: dict[str, int] = {}
        self._remote: dict[str, int] = {}

    def client_table(
        self, transport: ClientTransport, server: Address
    ) -> dict[Address, Allocation]:
        """The live client-address -> allocation map of one listening socket."""
        return self._client_tables.setdefault((transport, server), {})

    @property
    def count(self) -> int:
        """Allocations, pending ones included (the total quota counts both)."""
        return len(self.allocations) + len(self.pending)

    def identity_count(self, identity: str) -> int:
        return self._per_identity.get(identity, 0)

    def identity_counts(self) -> Mapping[str, int]:
        """Identity -> its allocations here, pending ones included (a read-only view)."""
        return MappingProxyType(self._per_identity)

    def remote_count(self, identity: str) -> int:
        """The allocations the fleet last said `identity` holds on other nodes."""
        return self._remote.get(identity, 0)

    def use_remote_counts(self, counts: Mapping[str, int]) -> None:
        """Replace the remote counts (positive ones only, at most `MAX_REMOTE_IDENTITIES`)."""
        remote: dict[str, int] = {}
        for identity, count in counts.items():
            if len(remote) >= MAX_REMOTE_IDENTITIES:
                break
            if count > 0:
                remote[identity] = count
        self._remote = remote

    def hold(self, five_tuple: FiveTuple, pending: PendingAllocate) -> None:
        """Record a pending Allocate: it holds a quota slot and its port from now on."""
        self.pending[five_tuple] = pending
        identity = pending.auth.credential.identity
        self._per_identity[identity] = self.identity_count(identity) + 1

    def drop_pending(self, five_tuple: FiveTuple) -> PendingAllocate | None:
        """Forget a pending Allocate: its quota slot and its relay port are free again."""
        pending = self.pending.pop(five_tuple, None)
        if pending is not None:
            self._forget_identity(pending.auth.credential.identity)
            if self.ports is not None:
                self.ports.release(pending.port)
        return pending

    def add(self, allocation: Allocation) -> None:
        """A pending Allocate became `allocation` (its quota slot and port carry over)."""
        five_tuple = allocation.five_tuple
        self.allocations[five_tuple] = allocation
        self.by_relayed[allocation.relayed] = allocation
        self.client_table(five_tuple.transport, five_tuple.server)[five_tuple.client] = allocation

    def remove(self, allocation: Allocation) -> None:
        five_tuple = allocation.five_tuple
        del self.allocations[five_tuple]
        del self.by_relayed[allocation.relayed]
        del self.client_table(five_tuple.transport, five_tuple.server)[five_tuple.client]
        self._forget_identity(allocation.identity)
        if self.ports is not None:
            self.ports.release(allocation.relayed[1])

    def _forget_identity(self, identity: str) -> None:
        remaining = self._per_identity.get(identity, 0) - 1
        if remaining > 0:
            self._per_identity[identity] = remaining
        else:
            self._per_identity.pop(identity, None)
