"""Settings of the fleet (`[fleet]`): where the shared Redis is and who this node is in it.

Owns one section of the settings tree (`trelay.config.settings` composes it):

    [fleet]                        # absent: a node alone, nothing touches Redis
    redis_url = "rediss://redis.example.org:6380/0"  # redis:// or rediss:// (TLS)
    redis_password_file = "redis.password"  # or the password in the URL; not both
    node_id = "fra-1"              # absent: generated once per process
    region = "eu-central"
    public_uris = ["turn:fra-1.example.org:3478?transport=udp"]
    heartbeat_seconds = 5.0        # how often the node refreshes its registry entry
    ttl_seconds = 15.0             # how long the entry lives without a refresh
    max_allocations = 0            # overloaded at this many allocations (0: no limit)
    max_cpu_share = 0.0            # overloaded at this CPU share, 1.0 = one core (0: none)
    [fleet.placement]              # which nodes the token API hands out (placement_settings)

Invariants: no `[fleet]` table (and no `--redis-url`) means `Settings.fleet is None`, the
embedded default; the password never appears in `repr`; `ttl_seconds` is more than
`heartbeat_seconds`, so one late refresh does not drop a live node. Paths are relative
to the settings file. A node over either load limit says `overloaded` in its registry
entry (the token API then leaves it out; design §9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from trelay.config.api_settings import URI_SCHEMES
from trelay.config.flags import Flags
from trelay.config.placement_settings import PlacementSettings, check_region_name, read_placement
from trelay.config.values import SettingsError, Table, check_text, read_path, toml_type

DEFAULT_HEARTBEAT = 5.0
DEFAULT_TTL = 15.0
DEFAULT_REGION = "default"
REDIS_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """The fleet's Redis and this node's entry in the registry (`trelay.fleet.registry`).

    `redis_password`: read from `redis_password_file` when that is set (None: the URL's
    own password, if any).
    """

    redis_url: str = field(repr=False)
    # None: the registry generates one per process (`trelay.fleet.registry`); not here,
    # so that re-reading the file on SIGHUP compares equal.
    node_id: str | None = None
    region: str = DEFAULT_REGION
    public_uris: tuple[str, ...] = ()
    heartbeat_seconds: float = DEFAULT_HEARTBEAT
    ttl_seconds: float = DEFAULT_TTL
    max_allocations: int = 0  # 0: no limit
    max_cpu_share: float = 0.0  # 0: no limit
    redis_password_file: Path | None = None
    redis_password: str | None = field(default=None, repr=False)
    placement: PlacementSettings = field(default_factory=PlacementSettings)

    def overloaded(self, allocations: int, cpu_share: float) -> bool:
        """At or over a configured load limit (none configured: never)."""
        if self.max_allocations and allocations >= self.max_allocations:
            return True
        return bool(self.max_cpu_share) and cpu_share >= self.max_cpu_share


def read_fleet(table: Table, base: Path) -> FleetSettings | None:
    """`[fleet]`, or None when the table is absent or empty (the embedded default)."""
    url = table.take("redis_url")
    password_file = read_path(table, "redis_password_file", base)
    node_id = table.take("node_id")
    region = table.take("region")
    uris = table.take("public_uris")
    heartbeat = table.take("heartbeat_seconds")
    ttl = table.take("ttl_seconds")
    max_allocations = table.take("max_allocations")
    max_cpu = table.take("max_cpu_share")
    placement_given = table.take("placement")
    placement_key = table.key("placement")
    placement = read_placement(Table(_table(placement_key, placement_given), placement_key))
    given = (url, password_file, node_id, region, uris, heartbeat, ttl, max_allocations, max_cpu)
    if all(v is None for v in given) and not placement_given:
        return None
    if url is None:
        raise SettingsError(table.key("redis_url"), "missing: [fleet] needs a Redis URL")
    settings = FleetSettings(
        redis_url=check_redis_url(table.key("redis_url"), url),
        node_id=None if node_id is None else _check_name(table.key("node_id"), node_id),
        region=DEFAULT_REGION if region is None else _check_name(table.key("region"), region),
        public_uris=_read_uris(table.key("public_uris"), uris),
        heartbeat_seconds=_seconds(table.key("heartbeat_seconds"), heartbeat, DEFAULT_HEARTBEAT),
        ttl_seconds=_seconds(table.key("ttl_seconds"), ttl, DEFAULT_TTL),
        max_allocations=_limit(table.key("max_allocations"), max_allocations),
        max_cpu_share=_cpu_share(table.key("max_cpu_share"), max_cpu),
        redis_password_file=password_file,
        redis_password=None
        if password_file is None
        else _read_password(table.key("redis_password_file"), password_file),
        placement=placement,
    )
    if password_file is not None and urlsplit(settings.redis_url).password:
        raise SettingsError(
            table.key("redis_password_file"), "the URL has a password already; give one"
        )
    if settings.ttl_seconds <= settings.heartbeat_seconds:
        raise SettingsError(table.key("ttl_seconds"), "must be more than fleet.heartbeat_seconds")
    return settings


def fleet_flags(fleet: FleetSettings | None, flags: Flags) -> FleetSettings | None:
    """`--redis-url` (which alone turns the fleet on), `--redis-password-file`, `--region`,
    `--node-id` and `--public-uri` (repeatable: the list replaces fleet.public_uris)."""
    if flags.redis_url is not None:
        url = check_redis_url("--redis-url", flags.redis_url)
        fleet = FleetSettings(redis_url=url) if fleet is None else replace(fleet, redis_url=url)
    given = {
        "--redis-password-file": flags.redis_password_file,
        "--region": flags.region,
        "--node-id": flags.node_id,
        "--public-uri": flags.public_uris,
    }
    for flag, value in given.items():
        if value is not None and fleet is None:
            raise SettingsError(flag, "needs a fleet: give --redis-url or [fleet] redis_url")
    if fleet is None:
        return None
    if flags.region is not None:
        fleet = replace(fleet, region=_check_name("--region", flags.region))
    if flags.node_id is not None:
        fleet = replace(fleet, node_id=_check_name("--node-id", flags.node_id))
    if flags.public_uris is not None:
        fleet = replace(fleet, public_uris=_read_uris("--public-uri", list(flags.public_uris)))
    if flags.redis_password_file is not None:
        path = Path(flags.redis_password_file)
        if urlsplit(fleet.redis_url).password:
            raise SettingsError("--redis-password-file", "the URL has a password already")
        password = _read_password("--redis-password-file", path)
        fleet = replace(fleet, redis_password_file=path, redis_password=password)
    return fleet


def check_redis_url(key: str, value: object) -> str:
    text = check_text(key, value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise SettingsError(key, f"not a URL: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES or not parts.hostname:
        raise SettingsError(key, f"expected redis://host[:port][/db] or rediss://..., got {text!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise SettingsError(key, f"the database must be a number, got {path!r}")
    return text


def _check_name(key: str, value: object) -> str:
    # Ids and regions become parts of Redis keys: no separators, no spaces.
    return check_region_name(key, value)


def _table(key: str, value: object) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingsError(key, f"expected a table, got {toml_type(value)}")
    return value


def _read_uris(key: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SettingsError(key, f"expected a list of stun:/turn: URIs, got {toml_type(value)}")
    uris = tuple(check_text(f"{key}[{i}]", v) for i, v in enumerate(value))
    for index, uri in enumerate(uris):
        if not uri.startswith(URI_SCHEMES):
            raise SettingsError(f"{key}[{index}]", f"expected a stun:/turn: URI, got {uri!r}")
    return uris


def _seconds(key: str, value: object, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(key, f"expected seconds (a number), got {toml_type(value)}")
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(key, f"expected a positive number of seconds, got {value}")
    return float(value)


def _limit(key: str, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingsError(key, f"expected a count (an integer, 0: no limit), got {value!r}")
    return value


def _cpu_share(key: str, value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(key, f"expected a CPU share (a number), got {toml_type(value)}")
    if not (math.isfinite(value) and value >= 0):
        raise SettingsError(key, f"expected a CPU share >= 0 (1.0: one core), got {value}")
    return float(value)


def _read_password(key: str, path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(key, f"cannot read {path}: {exc}") from None
    if not text:
        raise SettingsError(key, f"{path} is empty")
    return text
