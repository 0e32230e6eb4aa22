"""Settings of usage records (`[usage]`): how often a live allocation is metered, and the
bounds of the fleet's usage stream.

Owns one section of the settings tree (`trelay.config.settings` composes it):

    [usage]
    enabled = true                 # false: no usage records at all
    interval_seconds = 60.0        # a record per live allocation this often, and one at its end
    stream_max_entries = 1000000   # the Redis stream's length bound (XADD MAXLEN ~), with [fleet]
    queue_max_records = 10000      # records kept in memory while Redis is lost; then log lines

The records themselves are `trelay.node.usage`; the Redis stream `trelay.fleet.usage_stream`
(design §9). Invariants: every value is checked at load, a bad one is a `SettingsError`
naming its key; the section absent means the defaults above (records on, written as
JSON log lines without a fleet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trelay.config.values import SettingsError, Table, read_bool, toml_type

DEFAULT_INTERVAL = 60.0
DEFAULT_STREAM_MAX_ENTRIES = 1_000_000
DEFAULT_QUEUE_MAX_RECORDS = 10_000
# Below a second, per-allocation records would cost more than the traffic they describe.
MIN_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class UsageSettings:
    enabled: bool = True
    interval_seconds: float = DEFAULT_INTERVAL
    stream_max_entries: int = DEFAULT_STREAM_MAX_ENTRIES
    queue_max_records: int = DEFAULT_QUEUE_MAX_RECORDS


def read_usage(table: Table) -> UsageSettings:
    """`[usage]`; the defaults for what it does not say."""
    interval = table.take("interval_seconds")
    stream_max = table.take("stream_max_entries")
    queue_max = table.take("queue_max_records")
    return UsageSettings(
        enabled=read_bool(table, "enabled", True),
        interval_seconds=_interval(table.key("interval_seconds"), interval),
        stream_max_entries=_positive(
            table.key("stream_max_entries"), stream_max, DEFAULT_STREAM_MAX_ENTRIES
        ),
        queue_max_records=_positive(
            table.key("queue_max_records"), queue_max, DEFAULT_QUEUE_MAX_RECORDS
        ),
    )


def _interval(key: str, value: object) -> float:
    if value is None:
        return DEFAULT_INTERVAL
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(key, f"expected seconds (a number), got {toml_type(value)}")
    if not (math.isfinite(value) and value >= MIN_INTERVAL):
        raise SettingsError(key, f"expected at least {MIN_INTERVAL:g} seconds, got {value}")
    return float(value)


def _positive(key: str, value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(key, f"expected a positive integer, got {value!r}")
    return value
