"""Settings of the bandwidth limits (`[bandwidth]`, issue 14 part 7): relayed bytes per
second per allocation, per identity and in all.

Owns one section of the settings tree (`trelay.config.settings` composes it):

    [bandwidth]                    # relayed payload bytes per second; 0 = unlimited
    per_allocation = 0             # one allocation, both directions together
    per_allocation_burst = 0       # bytes above the rate; 0 = one second of it
    per_identity = 0               # one identity's allocations on this node (each worker)
    per_identity_burst = 0
    node_total = 0                 # everything this node relays (shared by its workers)
    node_total_burst = 0

What counts, what happens over a limit and why (`trelay.turn.bandwidth`): the payload
bytes relayed either way (not the ChannelData or indication framing, nor IP/UDP headers);
a datagram over a limit is dropped and counted as `bandwidth_allocation`,
`bandwidth_identity` or `bandwidth_node` in `trelay_dropped_datagrams_total`; an RFC 6062
TCP splice waits instead. A burst is at least 1500 bytes (a datagram bigger than the
burst would never pass); left at 0 it is one second of the rate, and never less than 1500.

With `workers = N` each worker process keeps its own buckets: `node_total` and its burst
are split evenly between them (the kernel spreads clients across workers), while
`per_identity` applies in each worker (an identity's allocations on two workers may
relay up to twice it).

Invariants: every value is a finite number >= 0, checked at load (a `SettingsError` naming
its key); a burst without its rate is refused. Live on reload: the buckets are retuned in
place (`trelay.node.turn_node.TurnNode.use_bandwidth`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trelay.config.values import SettingsError, Table, toml_type
from trelay.turn.bandwidth import MIN_BURST, BandwidthLimits, Rate

LEVELS = ("per_allocation", "per_identity", "node_total")
KEYS = tuple(f"bandwidth.{name}{suffix}" for name in LEVELS for suffix in ("", "_burst"))


@dataclass(frozen=True, slots=True)
class BandwidthSettings:
    """Bytes per second and bursts in bytes, as written; 0 = unlimited / the default burst."""

    per_allocation: float = 0.0
    per_allocation_burst: float = 0.0
    per_identity: float = 0.0
    per_identity_burst: float = 0.0
    node_total: float = 0.0
    node_total_burst: float = 0.0

    def limits(self, workers: int = 1) -> BandwidthLimits:
        """The core's value, for one of `workers` processes (the node total split)."""
        share = max(1, workers)
        return BandwidthLimits(
            per_allocation=_rate(self.per_allocation, self.per_allocation_burst),
            per_identity=_rate(self.per_identity, self.per_identity_burst),
            node_total=_rate(self.node_total / share, self.node_total_burst / share),
        )


def _rate(rate: float, burst: float) -> Rate:
    if not rate:
        return Rate()
    return Rate(rate, max(burst or rate, MIN_BURST))


def read_bandwidth(table: Table) -> BandwidthSettings:
    """`[bandwidth]`; unlimited for what it does not say."""
    values = {name: _read(table, name) for name in (*LEVELS, *(f"{n}_burst" for n in LEVELS))}
    for name in LEVELS:
        burst = values[f"{name}_burst"]
        if burst and not values[name]:
            raise SettingsError(table.key(f"{name}_burst"), f"needs {table.key(name)} > 0")
        if burst and burst < MIN_BURST:
            raise SettingsError(
                table.key(f"{name}_burst"),
                f"expected 0 or a number >= {MIN_BURST} (a full-size datagram), got {burst!r}",
            )
    return BandwidthSettings(**values)


def _read(table: Table, name: str) -> float:
    value = table.take(name)
    if value is None:
        return 0.0
    key = table.key(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(key, f"expected a number of bytes, got {toml_type(value)}")
    if not math.isfinite(value) or value < 0:
        raise SettingsError(key, f"expected a finite number >= 0, got {value!r}")
    return float(value)
