"""Settings of the fleet (`[fleet]`): where the shared Redis is and who this node is in it.

Owns one section of the settings tree (`trelay.config.settings` composes it):

    [fleet]                        # absent: a node alone, nothing touches Redis
    redis_url = "rediss://redis.example.org:6380/0"  # redis:// or rediss:// (TLS)
    redis_password_file = "redis.password"  # or the password in the URL; not both
    # or, instead of redis_url, the primary that Redis Sentinel names (automatic failover):
    redis_sentinels = ["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"]
    redis_sentinel_service = "trelay"  # the master name the sentinels monitor
    redis_tls = true               # TLS to the sentinels and the primary (rediss:// for a URL)
    redis_tls_ca_file = "redis-ca.pem"  # trust these too (a URL: ?ssl_ca_certs=...)
    redis_database = 0             # the URL's /0
    redis_sentinel_password_file = "sentinel.password"  # the sentinels' own requirepass
    node_id = "fra-1"              # absent: generated once per process
    region = "eu-central"
    public_uris = ["turn:fra-1.example.org:3478?transport=udp"]
    heartbeat_seconds = 5.0        # how often the node refreshes its registry entry
    ttl_seconds = 15.0             # how long the entry lives without a refresh
    max_allocations = 0            # overloaded at this many allocations (0: no limit)
    max_cpu_share = 0.0            # overloaded at this CPU share, 1.0 = one core (0: none)
    [fleet.placement]              # which nodes the token API hands out (placement_settings)

Invariants: no `[fleet]` table (and no `--redis-url`) means `Settings.fleet is None`, the
embedded default; a fleet has exactly one of `redis_url` and `redis_sentinels` (and then a
service), and `--redis-url` replaces either; passwords never appear in `repr` or in
`redis_where`; `ttl_seconds` is more than
`heartbeat_seconds`, so one late refresh does not drop a live node. Paths are relative
to the settings file. A node over either load limit says `overloaded` in its registry
entry (the token API then leaves it out; design §9).
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trelay.config.api_settings import URI_SCHEMES
from trelay.config.flags import Flags
from trelay.config.placement_settings import PlacementSettings, check_region_name, read_placement
from trelay.config.values import SettingsError, Table, check_text, read_path, toml_type

DEFAULT_HEARTBEAT = 5.0
DEFAULT_TTL = 15.0
DEFAULT_REGION = "default"
REDIS_SCHEMES = ("redis", "rediss")
DEFAULT_SENTINEL_PORT = 26379
# The keys that only mean something with redis_sentinels (a URL says them itself).
SENTINEL_ONLY = ("redis_sentinel_service", "redis_tls", "redis_database",
                 "redis_sentinel_password_file", "redis_tls_ca_file")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    """One Redis Sentinel (`host:port`, port 26379 when omitted)."""

    host: str
    port: int = DEFAULT_SENTINEL_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """The fleet's Redis and this node's entry in the registry (`trelay.fleet.registry`).

    `redis_password`: read from `redis_password_file` when that is set (None: the URL's
    own password, if any); with sentinels, the primary's (and its replicas') password.
    Exactly one of `redis_url` and `redis_sentinels` is given; with sentinels,
    `redis_sentinel_service` names the primary, and `redis_tls`, `redis_database` and
    `redis_sentinel_password` (the sentinels' own) say what the URL would.
    """

    redis_url: str | None = field(default=None, repr=False)
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
    redis_sentinels: tuple[SentinelAddress, ...] = ()
    redis_sentinel_service: str | None = None
    redis_tls: bool = False
    redis_tls_ca_file: Path | None = None  # with redis_tls: trusted besides the system's CAs
    redis_database: int = 0
    redis_sentinel_password_file: Path | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.redis_url is None) == (not self.redis_sentinels):
            raise ValueError("a fleet's Redis is either redis_url or redis_sentinels")
        if bool(self.redis_sentinels) != (self.redis_sentinel_service is not None):
            raise ValueError("redis_sentinels and redis_sentinel_service go together")

    @property
    def redis_where(self) -> str:
        """Where the fleet's Redis is, for logs and errors: host:port, or the Sentinel
        service and its sentinels. Never a password."""
        if self.redis_url is not None:
            parts = urlsplit(self.redis_url)
            return f"{parts.hostname}:{parts.port or 6379}"
        sentinels = ",".join(str(s) for s in self.redis_sentinels)
        return f"service {self.redis_sentinel_service} via sentinels {sentinels}"

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
    sentinel = _SentinelKeys.take(table, base)
    given = (url, password_file, node_id, region, uris, heartbeat, ttl, max_allocations, max_cpu)
    if all(v is None for v in given) and not placement_given and sentinel.absent:
        return None
    if url is None and sentinel.sentinels is None:
        raise SettingsError(
            table.key("redis_url"), "missing: [fleet] needs a Redis URL or redis_sentinels"
        )
    settings = FleetSettings(
        redis_url=None if url is None else check_redis_url(table.key("redis_url"), url),
        **sentinel.read(table, url),
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
    if password_file is not None and _url_password(settings):
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
        # The flag says where Redis is: it replaces sentinels as well as a URL.
        fleet = (
            FleetSettings(redis_url=url)
            if fleet is None
            else replace(fleet, redis_url=url, **_NO_SENTINELS)
        )
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
        if _url_password(fleet):
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


def _url_password(fleet: FleetSettings) -> bool:
    return fleet.redis_url is not None and bool(urlsplit(fleet.redis_url).password)


_NO_SENTINELS: dict[str, Any] = {
    "redis_sentinels": (),
    "redis_sentinel_service": None,
    "redis_tls": False,
    "redis_tls_ca_file": None,
    "redis_database": 0,
    "redis_sentinel_password_file": None,
    "redis_sentinel_password": None,
}


@dataclass(frozen=True, slots=True)
class _SentinelKeys:
    """The sentinel keys of `[fleet]` as given (taken before the table is checked)."""

    sentinels: object | None
    service: object | None
    tls: object | None
    database: object | None
    password_file: Path | None
    ca_file: Path | None

    @classmethod
    def take(cls, table: Table, base: Path) -> _SentinelKeys:
        return cls(
            sentinels=table.take("redis_sentinels"),
            service=table.take("redis_sentinel_service"),
            tls=table.take("redis_tls"),
            database=table.take("redis_database"),
            password_file=read_path(table, "redis_sentinel_password_file", base),
            ca_file=read_path(table, "redis_tls_ca_file", base),
        )

    @property
    def absent(self) -> bool:
        given = (self.sentinels, self.service, self.tls, self.database, self.password_file)
        return all(v is None for v in given) and self.ca_file is None

    def read(self, table: Table, url: object | None) -> dict[str, Any]:
        """FleetSettings' sentinel fields (none without redis_sentinels)."""
        if self.sentinels is None:
            given = (self.service, self.tls, self.database, self.password_file, self.ca_file)
            for name, value in zip(SENTINEL_ONLY, given, strict=True):
                if value is not None:
                    problem = "only with redis_sentinels (a redis_url says it: rediss://, /db)"
                    raise SettingsError(table.key(name), problem)
            return {}
        if url is not None:
            problem = "give redis_url or redis_sentinels, not both"
            raise SettingsError(table.key("redis_sentinels"), problem)
        if self.service is None:
            problem = "missing: redis_sentinels need the name of the primary they monitor"
            raise SettingsError(table.key("redis_sentinel_service"), problem)
        tls = _flag(table.key("redis_tls"), self.tls)
        if self.ca_file is not None and not tls:
            raise SettingsError(table.key("redis_tls_ca_file"), "only with redis_tls = true")
        return {
            "redis_sentinels": _read_sentinels(table.key("redis_sentinels"), self.sentinels),
            "redis_sentinel_service": check_region_name(
                table.key("redis_sentinel_service"), self.service
            ),
            "redis_tls": tls,
            "redis_tls_ca_file": None
            if self.ca_file is None
            else _check_ca_file(table.key("redis_tls_ca_file"), self.ca_file),
            "redis_database": _database(table.key("redis_database"), self.database),
            "redis_sentinel_password_file": self.password_file,
            "redis_sentinel_password": None
            if self.password_file is None
            else _read_password(table.key("redis_sentinel_password_file"), self.password_file),
        }


def _read_sentinels(key: str, value: object) -> tuple[SentinelAddress, ...]:
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else toml_type(value)
        raise SettingsError(key, f'expected a list of sentinels ["host:port", ...], got {got}')
    addresses = tuple(_sentinel_address(f"{key}[{i}]", v) for i, v in enumerate(value))
    for index, address in enumerate(addresses):
        if address in addresses[:index]:
            raise SettingsError(f"{key}[{index}]", f"{address} is listed twice")
    return addresses


def _sentinel_address(key: str, value: object) -> SentinelAddress:
    text = check_text(key, value)
    try:
        parts = urlsplit(f"//{text}")
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or not parts.hostname or parts.username or parts.path or parts.query:
        raise SettingsError(key, f"expected host:port (or [v6]:port), got {text!r}")
    if port == 0:
        raise SettingsError(key, f"port 0 in {text!r}")
    return SentinelAddress(parts.hostname, DEFAULT_SENTINEL_PORT if port is None else port)


def _database(key: str, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingsError(key, f"expected a database number (an integer >= 0), got {value!r}")
    return value


def _check_ca_file(key: str, path: Path) -> Path:
    # Checked here, so that a bad file is a settings error, not a store that cannot start.
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(key, f"not PEM certificates: {path}: {exc}") from None
    return path


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool | None):
        raise SettingsError(key, f"expected true or false, got {toml_type(value)}")
    return bool(value)


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
