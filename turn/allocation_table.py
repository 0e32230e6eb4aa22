"""Who holds what: live allocations, Allocates waiting for their relay socket, quotas.

Owns the server's bookkeeping of allocations (RFC 8656 §5, §7.2 step 8 quotas):

- `allocations`: 5-tuple -> allocation, `by_relayed`: relayed address -> allocation (both
  addresses of a dual allocation, RFC 8656 §7.2 ADDITIONAL-ADDRESS-FAMILY), and
  one client-address -> allocation map per listening socket (`client_table`), which the
  runtime's UDP data path reads directly (one lookup per ChannelData packet);
- `pending`: Allocates whose relay socket the runtime is still binding; they count
  towards quotas and hold their relay port, so a burst cannot overshoot either;
- allocations per identity (the user quota) and the relay port pool;
- allocations and pending Allocates per source (`source_of`: the client's IPv4 address,
  or the /64 of its IPv6 address, which one host holds whole), for the per-source
  bounds (`TurnConfig.allocations_per_source`, `pending_per_source`; issue 15);
- `remote`: what the fleet says each identity holds on other nodes (the runtime fills it
  from Redis, `trelay.fleet.quotas`; at most `MAX_REMOTE_IDENTITIES` identities), which
  the user quota adds to the local count;
- `reservations`: token -> port reservation (RFC 8656 §7.2, `trelay.turn.reservations`).
  A reservation is a quota slot like an allocation (its identity's, its source's, the
  total's): an EVEN-PORT R=1 Allocate holds two slots while pending (`slots`), one goes
  to its allocation and one to the reservation; redeeming a token hands the slot over.

Invariants: the three maps always hold exactly the same allocations; an identity's
count, and a source's, is its allocations plus its pending Allocates' slots plus its
reservations; a source's pending count is its pending Allocates; no count is kept at 0
(the maps hold live sources and identities only); a port is in use exactly while an
allocation, a pending Allocate (its port, and port+1 when it reserves) or a reservation
holds it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from trelay.stun.codes import AddressFamily
from trelay.stun.message import Message
from trelay.turn.addressing import Address, ClientTransport, FiveTuple, is_ipv6, unmap_ipv4
from trelay.turn.allocation import Allocation
from trelay.turn.auth import Authenticated
from trelay.turn.port_pool import RelayPortPool
from trelay.turn.reservations import Reservation, new_token

# The remote counts are a cache of the identities this server holds (the runtime asks
# for no others); the bound keeps a runtime mistake from growing it without limit.
MAX_REMOTE_IDENTITIES = 100_000


def source_of(client: Address) -> str:
    """The source the per-source bounds count: an IPv4 address (IPv4-mapped IPv6 ones
    unmapped), or the /64 an IPv6 address is in (one host or LAN holds a /64 whole, so
    counting single IPv6 addresses would let it rotate past any bound)."""
    host = client[0]
    if ":" not in host:
        return host  # IPv4: the common case, five times per Allocate (issue 13 part 4)
    host = unmap_ipv4(host)
    return _ipv6_source(host) if is_ipv6(host) else host


@functools.lru_cache(maxsize=4096)
def _ipv6_source(host: str) -> str:
    """The /64 of an IPv6 address, kept for the clients seen lately: `ipaddress` costs
    some microseconds, and an Allocate asks five times."""
    try:
        network = ipaddress.IPv6Network((host.partition("%")[0], 64), strict=False)
    except ValueError:  # not an address a socket hands out; count it as it is
        return host
    return str(network)


@dataclass(slots=True)
class PendingAllocate:
    """An authenticated Allocate waiting for `relay_opened` / `relay_failed`."""

    request: Message
    auth: Authenticated
    lifetime: int
    family: AddressFamily
    port: int
    attempts: int = 1
    even: bool = False  # EVEN-PORT (§14.6)
    reserve: bool = False  # its R bit: port+1 is reserved too (a second quota slot)
    # The reservation whose token this Allocate redeems (§7.2 step 5): its port, no other.
    redeems: Reservation | None = None
    dual: bool = False  # ADDITIONAL-ADDRESS-FAMILY (§7.2 step 9): an IPv6 address too

    @property
    def slots(self) -> int:
        """Quota slots held: one, two when it reserves the next port."""
        return 2 if self.reserve else 1


class AllocationTable:
    __slots__ = (
        "_client_tables", "_pending_per_source", "_per_identity", "_per_source", "_remote",
        "_reserving", "allocations", "by_relayed", "pending", "ports", "reservations",
    )  # fmt: skip

    def __init__(self, ports: RelayPortPool | None) -> None:
        self.allocations: dict[FiveTuple, Allocation] = {}
        self.by_relayed: dict[Address, Allocation] = {}
        self.pending: dict[FiveTuple, PendingAllocate] = {}
        self.ports = ports
        self._client_tables: dict[tuple[ClientTransport, Address], dict[Address, Allocation]] = {}
        self._per_identity: dict[str, int] = {}
        self._per_source: dict[str, int] = {}  # allocations, pending ones included
        self._pending_per_source: dict[str, int] = {}
        self._remote: dict[str, int] = {}
        self.reservations: dict[bytes, Reservation] = {}
        self._reserving = 0  # pending Allocates with the R bit (their second slot)

    def client_table(
        self, transport: ClientTransport, server: Address
    ) -> dict[Address, Allocation]:
        """The live client-address -> allocation map of one listening socket."""
        return self._client_tables.setdefault((transport, server), {})

    @property
    def count(self) -> int:
        """Allocations, pending ones included."""
        return len(self.allocations) + len(self.pending)

    @property
    def slots(self) -> int:
        """Quota slots in use (the total quota counts them): allocations, pending ones
        (two for an R=1 Allocate) and reservations."""
        return self.count + self._reserving + len(self.reservations)

    def identity_count(self, identity: str) -> int:
        return self._per_identity.get(identity, 0)

    def source_count(self, client: Address) -> int:
        """Allocations (pending ones included) from `client`'s source (`source_of`)."""
        return self._per_source.get(source_of(client), 0)

    def pending_source_count(self, client: Address) -> int:
        """Pending Allocates from `client`'s source (`source_of`)."""
        return self._pending_per_source.get(source_of(client), 0)

    def sizes(self) -> dict[str, int]:
        """The length of each map (`TurnServer.state_sizes`)."""
        return {
            "allocations": len(self.allocations),
            "by_relayed": len(self.by_relayed),
            "client_tables": len(self._client_tables),
            "client_table_entries": sum(len(t) for t in self._client_tables.values()),
            "pending": len(self.pending),
            "identities": len(self._per_identity),
            "sources": len(self._per_source),
            "pending_sources": len(self._pending_per_source),
            "remote_identities": len(self._remote),
            "reservations": len(self.reservations),
        }

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
        """Record a pending Allocate: it holds its quota slots and its port (and port+1
        when it reserves) from now on."""
        self.pending[five_tuple] = pending
        slots = pending.slots
        _add(self._per_identity, pending.auth.credential.identity, slots)
        source = source_of(five_tuple.client)
        _add(self._per_source, source, slots)
        _add(self._pending_per_source, source, 1)
        self._reserving += slots - 1

    def take_pending(self, five_tuple: FiveTuple) -> PendingAllocate | None:
        """Take a pending Allocate to make its allocation: it keeps its quota slots (the
        identity's and the source's) and its port; it is no longer pending. The slot of
        its reservation, if it reserves, goes to `add_reservation` or `drop_slot`."""
        pending = self.pending.pop(five_tuple, None)
        if pending is not None:
            _add(self._pending_per_source, source_of(five_tuple.client), -1)
            self._reserving -= pending.slots - 1
        return pending

    def drop_pending(self, five_tuple: FiveTuple) -> PendingAllocate | None:
        """Forget a pending Allocate: its quota slots and its relay ports are free again."""
        pending = self.pending.pop(five_tuple, None)
        if pending is not None:
            slots = pending.slots
            _add(self._per_identity, pending.auth.credential.identity, -slots)
            source = source_of(five_tuple.client)
            _add(self._per_source, source, -slots)
            _add(self._pending_per_source, source, -1)
            self._reserving -= slots - 1
            self.release_ports(pending)
        return pending

    def release_ports(self, pending: PendingAllocate) -> None:
        """Give a pending Allocate's ports back to the pool (a failed bind, or its end)."""
        if self.ports is not None:
            self.ports.release(pending.port)
            if pending.reserve:
                self.ports.release(pending.port + 1)

    def add_reservation(self, reservation: Reservation) -> None:
        """The reserving Allocate's second slot (`take_pending`) goes to `reservation`."""
        self.reservations[reservation.token] = reservation

    def drop_slot(self, identity: str, client: Address) -> None:
        """Free a slot `take_pending` left over (a reservation the runtime did not make)."""
        _add(self._per_identity, identity, -1)
        _add(self._per_source, source_of(client), -1)

    def new_token(self, worker: int | None = None) -> bytes:
        """A RESERVATION-TOKEN no live reservation has, naming `worker` if given
        (`trelay.turn.reservations.new_token`)."""
        return new_token(worker, self.reservations)

    def take_reservation(self, token: bytes) -> Reservation | None:
        """Redeem a token: the reservation is gone and its slot with it (the redeeming
        Allocate's `hold` takes one); its port stays in use (the Allocate holds it)."""
        reservation = self.reservations.pop(token, None)
        if reservation is not None:
            _add(self._per_identity, reservation.identity, -1)
            _add(self._per_source, reservation.source, -1)
        return reservation

    def end_reservation(self, reservation: Reservation) -> bool:
        """A reservation expired (or the server stops): its slot and port are free.
        False if it was redeemed or ended already."""
        if self.reservations.get(reservation.token) is not reservation:
            return False
        self.take_reservation(reservation.token)
        if self.ports is not None:
            self.ports.release(reservation.relayed[1])
        return True

    def add(self, allocation: Allocation) -> None:
        """A pending Allocate became `allocation` (its quota slot and port carry over)."""
        five_tuple = allocation.five_tuple
        self.allocations[five_tuple] = allocation
        self.by_relayed[allocation.relayed] = allocation
        if allocation.second is not None:
            self.by_relayed[allocation.second] = allocation
        self.client_table(five_tuple.transport, five_tuple.server)[five_tuple.client] = allocation

    def move(self, allocation: Allocation, five_tuple: FiveTuple) -> None:
        """Re-key a live allocation under a new 5-tuple (RFC 8016 mobility): the maps by
        5-tuple and by client address, and the per-source counts, follow it; the quota
        slot, relayed address and port stay."""
        old = allocation.five_tuple
        del self.allocations[old]
        del self.client_table(old.transport, old.server)[old.client]
        _add(self._per_source, source_of(old.client), -1)
        allocation.five_tuple = five_tuple
        self.allocations[five_tuple] = allocation
        self.client_table(five_tuple.transport, five_tuple.server)[five_tuple.client] = allocation
        _add(self._per_source, source_of(five_tuple.client), 1)

    def drop_second(self, allocation: Allocation) -> Address | None:
        """A dual allocation's second family is deleted (§7.3): its address, if it had one.
        (A configured range's port is the primary's too: it stays in use.)"""
        second = allocation.drop_second()
        if second is not None:
            del self.by_relayed[second]
        return second

    def remove(self, allocation: Allocation) -> None:
        five_tuple = allocation.five_tuple
        del self.allocations[five_tuple]
        del self.by_relayed[allocation.relayed]
        if allocation.second is not None:
            del self.by_relayed[allocation.second]
        del self._client_tables[five_tuple.transport, five_tuple.server][five_tuple.client]
        _add(self._per_identity, allocation.identity, -1)
        _add(self._per_source, source_of(five_tuple.client), -1)
        if self.ports is not None:
            self.ports.release(allocation.relayed[1])


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    """Add `delta` to `counts[key]`, forgetting the key at 0."""
    count = counts.get(key, 0) + delta
    if count > 0:
        counts[key] = count
    else:
        counts.pop(key, None)
