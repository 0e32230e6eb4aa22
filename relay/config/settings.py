"""The relay's settings: one frozen tree, read from a TOML file and overridden by flags.

Owns the configuration schema, its defaults and every check on it. The tree mirrors the
TOML file, so an error's key is the dotted path a user would edit:

    software = "trelay"            # SOFTWARE in every response (RFC 8489 §14.14)
    log_level = "info"             # debug, info, warning, error, critical
    workers = 1                    # processes sharing the listen ports (`trelay.process.workers`)
    [listen]                       # "host:port", IPv6 as "[::1]:3478"; port 0 = any free
    udp = ["127.0.0.1:3478"]
    tcp = ["127.0.0.1:3478"]
    tls = ["127.0.0.1:5349"]
    dtls = ["127.0.0.1:5349"]      # DTLS over UDP (RFC 7350); may share TLS's port number
    [tls]                          # paths relative to the file; both or neither; TLS and DTLS
    cert = "cert.pem"
    key = "key.pem"
    [stream]
    idle_timeout = 30.0            # seconds a TCP/TLS client may stay silent
    [auth]
    realm = "example.org"          # REALM (RFC 8489 §14.9)
    users = { alice = "secret" }   # static long-term users
    secrets = ["s3cret"]           # TURN REST API shared secrets, newest first
    secrets_file = "secrets.txt"   # more of them, one per line; re-read when it changes
    strict_expiry = true           # check REST expiry on Refresh too
    revocations_file = "revoked.toml"  # identities refused (`trelay.config.revocations`)
    [relay]
    address = "127.0.0.1"          # where relay sockets bind (IPv4 or IPv6)
    address_v6 = "::1"             # and IPv6 ones, for a dual-stack relay
    external_address = "203.0.113.7"  # told to clients (1:1 NAT, wildcard address)
    ports = [49152, 65535]         # relay port range; absent: any free port
    allow_loopback_peers = false   # tests only
    mobility = true                # RFC 8016 tickets: allocations follow moving UDP clients
    allow_peers = ["203.0.113.0/24"]
    deny_peers = ["198.51.100.7/32"]
    [quotas]                       # counts: 0 = unlimited for each (`trelay.turn.config`)
    user = 0                       # allocations per user (486)
    total = 0                      # allocations in all (508)
    permissions_per_allocation = 128  # peer IPs one allocation may permit (508)
    channels_per_allocation = 128  # channels one allocation may bind (508)
    peers_per_request = 32         # XOR-PEER-ADDRESSes in one CreatePermission (508)
    allocations_per_source = 1000  # allocations from one IPv4 address or IPv6 /64 (486)
    pending_per_source = 64        # Allocates from one source still binding a port (508)
    peer_connections_per_allocation = 32  # RFC 6062 TCP connections to/from peers (508)
    unauthenticated_per_second = 20.0  # requests that do not authenticate, per client
    unauthenticated_burst = 40     #   address and port (`trelay.turn.rate_limit`); > 0
    reflection_bytes_per_second = 131072  # answers to them over UDP, per destination IP
    reflection_burst_bytes = 262144  #   (the bound on reflection); burst >= 1280
    [lifetimes]
    default = 600                  # allocation lifetime (RFC 8656 §7.2)
    max = 3600
    [http]                         # the operator port: /metrics, /healthz, /readyz
    listen = ["127.0.0.1:9478"]    # default ["127.0.0.1:0"]; [] = no HTTP port
    selftest = false               # serve /selftest (hands out TURN credentials)
    admin_token_file = "admin.token"  # serve /v1/sessions and /v1/drain to its bearer
    log_format = "human"           # or "json" (top level, beside log_level)
    log_usernames = false          # usernames in logs; otherwise a keyed reference
    [drain]                        # SIGTERM/SIGINT: stop taking allocations, keep calls
    timeout = 3600.0               # seconds existing allocations may run on; 0 = none
    alternate_server = "198.51.100.7:3478"  # new Allocates meanwhile: 300 Try Alternate

`[auth]` is read by `trelay.config.auth_settings`; `[api]` and `[auth.third_party]` are described
in `trelay.config.api_settings`; `[fleet]` (absent: a node alone) in `trelay.config.fleet_settings`;
`[usage]` (usage records: interval, stream bounds) in `trelay.config.usage_settings`;
`[bandwidth]` (relayed bytes per second per allocation, identity, node) in
`trelay.config.bandwidth_settings`;
`[nat_discovery]` (RFC 5780, opt-in: alternate_host, alternate_port) in
`trelay.config.nat_discovery_settings`; `[dtls]` (what each DTLS listener keeps at most)
in `trelay.config.dtls_settings`.

Invariants:
- Every problem is a `SettingsError(key, problem)`, raised by `load_settings` before
  anything binds; keys are dotted paths (`listen.udp[1]`) or, for flags, the flag.
- Unknown keys and wrong types are errors; nothing is silently ignored.
- Nothing given means the dev default (`Settings()`): UDP, TCP and TLS (no DTLS) on 127.0.0.1 with
  ephemeral ports, TLS with a throw-away self-signed certificate, realm "trelay.local" and
  a freshly generated dev secret. Once any listen address is named (file or flag), only
  the named transports listen; a flag replaces the file's list for its transport.
- Secrets never appear in `repr`, so settings can be logged.
- What needs another section says so where sections meet (`_apply_flags`, after the
  flags): `http.selftest` and `api.keys_file` need a TURN REST secret, `api.fleet_keys`
  a fleet.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import tomllib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from importlib import metadata
from pathlib import Path

from trelay.config.admin_token import read_admin_token
from trelay.config.api_settings import (
    ApiSettings,
    load_api_keys,
    read_api,
)
from trelay.config.auth_settings import AuthSettings, auth_flags, read_auth
from trelay.config.bandwidth_settings import BandwidthSettings, read_bandwidth
from trelay.config.dtls_settings import DtlsSettings, read_dtls
from trelay.config.flags import Flags
from trelay.config.fleet_settings import FleetSettings, fleet_flags, read_fleet
from trelay.config.nat_discovery_settings import (
    NatDiscoverySettings,
    read_nat_discovery,
    resolve_nat_discovery,
)
from trelay.config.usage_settings import UsageSettings, read_usage
from trelay.config.values import (
    ListenAddress,
    SettingsError,
    Table,
    check_file,
    check_ip,
    check_ipv6,
    check_ports,
    parse_host_port,
    read_addresses,
    read_bool,
    read_count,
    read_networks,
    read_optional_ip,
    read_path,
    read_text,
    toml_type,
)
from trelay.turn.config import MIN_REFLECTION_BURST, TurnConfig

DEFAULT_HOST = "127.0.0.1"
# The core's defaults (the limits on requests that do not authenticate start there).
_CORE = TurnConfig()
DEFAULT_IDLE_TIMEOUT = 30.0
# Long enough for the calls running when SIGTERM comes to end on their own (an hour is
# what TURN's own maximum allocation lifetime is, RFC 8656 §7.2); the process supervisor's
# stop timeout (systemd TimeoutStopSec, Kubernetes terminationGracePeriodSeconds) must be
# longer.
DEFAULT_DRAIN_TIMEOUT = 3600.0
TRANSPORTS = ("udp", "tcp", "tls", "dtls")
LOG_FORMATS = ("human", "json")  # trelay.ops.logs.LogFormat
MAX_WORKERS = 64


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def logging_level(self) -> int:
        return logging.getLevelNamesMapping()[self.name]


_DEV_LISTEN = (ListenAddress(DEFAULT_HOST, 0),)


@dataclass(frozen=True, slots=True)
class ListenSettings:
    udp: tuple[ListenAddress, ...] = _DEV_LISTEN
    tcp: tuple[ListenAddress, ...] = _DEV_LISTEN
    tls: tuple[ListenAddress, ...] = _DEV_LISTEN
    # Opt-in: browsers do not speak DTLS to TURN servers (`trelay.node.dtls_listener`).
    dtls: tuple[ListenAddress, ...] = ()
    # UDP addresses `[nat_discovery]` adds (RFC 5780: the three besides listen.udp[0]);
    # derived, never written in the file.
    nat: tuple[ListenAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The operator HTTP port(s) (`trelay.ops.http_app`); an empty tuple serves none.

    `selftest` serves `/selftest`, whose credential endpoint hands working TURN
    credentials to whoever reaches the port: off unless asked for.
    `admin_token_file`: serve the session admin routes (`trelay.ops.admin_routes`) to
    requests bearing the token it holds (`admin_token`, read and checked at load,
    `trelay.config.admin_token`); None serves no admin route at all.
    """

    listen: tuple[ListenAddress, ...] = _DEV_LISTEN
    selftest: bool = False
    admin_token_file: Path | None = None
    admin_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Certificate chain and key files (PEM); neither means a throw-away self-signed one."""

    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def self_signed(self) -> bool:
        return self.cert_file is None


@dataclass(frozen=True, slots=True)
class StreamSettings:
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """What SIGTERM does (design §4): allocations get `timeout` seconds to end on their own.

    `alternate_server`: where new Allocates are sent meanwhile (300 Try Alternate with
    ALTERNATE-SERVER, RFC 8489 §10); None answers them 508.
    """

    timeout: float = DEFAULT_DRAIN_TIMEOUT
    alternate_server: ListenAddress | None = None


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Relay sockets and the peer policy (RFC 8656 §7.2, design §6)."""

    address: str = DEFAULT_HOST
    # A second relay address of the other family (REQUESTED-ADDRESS-FAMILY, RFC 8656 §7.2).
    address_v6: str | None = None
    # What clients are told (XOR-RELAYED-ADDRESS) when the relay sits behind a 1:1 NAT,
    # as on cloud VMs, or binds a wildcard address.
    external_address: str | None = None
    external_address_v6: str | None = None
    ports: tuple[int, int] | None = None
    allow_loopback_peers: bool = False
    # RFC 8016 mobility: MOBILITY-TICKETs for UDP/DTLS clients; off, such Allocates get 405.
    mobility: bool = True
    allow_peers: tuple[str, ...] = ()
    deny_peers: tuple[str, ...] = ()
    user_quota: int = 0
    total_quota: int = 0
    # Bounds on what one client can make the relay keep (issue 15); 0 = unlimited.
    permissions_per_allocation: int = 128
    channels_per_allocation: int = 128
    peers_per_request: int = 32
    allocations_per_source: int = 1000
    pending_per_source: int = 64
    peer_connections_per_allocation: int = 32  # RFC 6062 (`trelay.turn.tcp_relay`)
    # Requests that do not authenticate (`trelay.turn.rate_limit`): per client address
    # and port, and bytes of answers over UDP per destination IP; live on reload.
    unauthenticated_rate: float = _CORE.unauthenticated_rate
    unauthenticated_burst: float = _CORE.unauthenticated_burst
    reflection_rate: float = _CORE.reflection_rate
    reflection_burst: float = _CORE.reflection_burst
    default_lifetime: int = 600
    max_lifetime: int = 3600


def default_software() -> str:
    try:
        return f"trelay {metadata.version('trelay')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "trelay"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `trelay serve` needs; `Settings()` is the dev default of `make run`."""

    listen: ListenSettings = field(default_factory=ListenSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    drain: DrainSettings = field(default_factory=DrainSettings)
    # The shared Redis and this node's registry entry; None: a node alone (design §9).
    fleet: FleetSettings | None = None
    # Usage records per allocation (`trelay.node.usage`, `trelay.fleet.usage_stream`).
    usage: UsageSettings = field(default_factory=UsageSettings)
    # Relayed bytes per second (`trelay.config.bandwidth_settings`); unlimited by default.
    bandwidth: BandwidthSettings = field(default_factory=BandwidthSettings)
    # RFC 5780 NAT behaviour discovery (`trelay.config.nat_discovery_settings`); opt-in.
    nat_discovery: NatDiscoverySettings = field(default_factory=NatDiscoverySettings)
    # What each DTLS listener keeps at most (`trelay.config.dtls_settings`).
    dtls: DtlsSettings = field(default_factory=DtlsSettings)
    software: str = field(default_factory=default_software)
    log_level: LogLevel = LogLevel.INFO
    log_format: str = LOG_FORMATS[0]
    log_usernames: bool = False
    # Worker processes sharing the listen ports (SO_REUSEPORT); 1 = this process serves.
    workers: int = 1


# --- loading ----------------------------------------------------------------------------


def load_settings(config: Path | None = None, flags: Flags | None = None) -> Settings:
    """Read `config` (TOML) if given, apply `flags`, check everything, or raise."""
    flags = flags or Flags()
    settings, file_listen = _read_file(config) if config is not None else (Settings(), _no_listen())
    return _with_nat_discovery(_apply_flags(settings, file_listen, flags))


def _with_nat_discovery(settings: Settings) -> Settings:
    """`[nat_discovery]` checked against the UDP listen addresses in force (after the
    flags), with its primary address and its three extra UDP addresses (`listen.nat`)."""
    nat = resolve_nat_discovery(settings.nat_discovery, settings.listen.udp, settings.listen.dtls)
    listen = replace(settings.listen, nat=nat.extra_listen())
    return replace(settings, nat_discovery=nat, listen=listen)


def _no_listen() -> dict[str, tuple[ListenAddress, ...] | None]:
    return dict.fromkeys(TRANSPORTS)


def _read_file(path: Path) -> tuple[Settings, dict[str, tuple[ListenAddress, ...] | None]]:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise SettingsError("--config", f"file not found: {path}") from None
    except OSError as exc:
        raise SettingsError("--config", f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(str(path), f"invalid TOML: {exc}") from None
    base = path.parent
    root = Table(document, "")
    listen_table = root.table("listen")
    listen = {t: read_addresses(listen_table, t) for t in TRANSPORTS}
    tls_table = root.table("tls")
    tls = TlsSettings(read_path(tls_table, "cert", base), read_path(tls_table, "key", base))
    stream_table = root.table("stream")
    stream = StreamSettings(_read_idle_timeout(stream_table))
    auth_table = root.table("auth")
    auth = read_auth(auth_table, base)
    relay_table, quota_table, lifetime_table = (
        root.table(n) for n in ("relay", "quotas", "lifetimes")
    )
    relay = _read_relay(relay_table, quota_table, lifetime_table)
    http_table = root.table("http")
    http_listen = read_addresses(http_table, "listen")
    token_file = read_path(http_table, "admin_token_file", base)
    http = HttpSettings(
        _DEV_LISTEN if http_listen is None else http_listen,
        read_bool(http_table, "selftest", False),
        token_file,
        None
        if token_file is None
        else read_admin_token(http_table.key("admin_token_file"), token_file),
    )
    api_table = root.table("api")
    api = read_api(api_table, base)
    drain_table = root.table("drain")
    drain = _read_drain(drain_table)
    fleet_table = root.table("fleet")
    fleet = read_fleet(fleet_table, base)
    usage_table = root.table("usage")
    usage = read_usage(usage_table)
    nat_table = root.table("nat_discovery")
    nat_discovery = read_nat_discovery(nat_table)
    dtls_table = root.table("dtls")
    dtls = read_dtls(dtls_table)
    bandwidth = read_bandwidth(bandwidth_table := root.table("bandwidth"))
    software = read_text(root, "software", default_software())
    level = root.take("log_level")
    log_level = LogLevel.INFO if level is None else _parse_log_level("log_level", level)
    log_format = _check_log_format("log_format", root.take("log_format"))
    log_usernames = read_bool(root, "log_usernames", False)
    workers_value = root.take("workers")
    workers = 1 if workers_value is None else _check_workers("workers", workers_value)
    tables = [listen_table, tls_table, stream_table, auth_table, relay_table, quota_table]
    tables += [lifetime_table, http_table, api_table, drain_table, fleet_table, usage_table]
    tables += [nat_table, dtls_table, bandwidth_table]
    for table in (*tables, root):
        table.finish()
    return Settings(
        tls=tls, stream=stream, auth=auth, relay=relay, http=http, api=api, drain=drain,
        fleet=fleet, usage=usage, software=software, nat_discovery=nat_discovery, dtls=dtls,
        log_level=log_level, log_format=log_format, log_usernames=log_usernames,
        workers=workers, bandwidth=bandwidth,
    ), listen  # fmt: skip


def _check_log_format(key: str, value: object) -> str:
    if value is None:
        return LOG_FORMATS[0]
    if value not in LOG_FORMATS:
        raise SettingsError(key, f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    assert isinstance(value, str)
    return value


def _read_relay(relay: Table, quotas: Table, lifetimes: Table) -> RelaySettings:
    address = read_text(relay, "address", DEFAULT_HOST)
    check_ip(relay.key("address"), address)
    address_v6 = read_optional_ip(relay, "address_v6", v6=True)
    external = read_optional_ip(relay, "external_address")
    external_v6 = read_optional_ip(relay, "external_address_v6", v6=True)
    ports_value = relay.take("ports")
    ports = None if ports_value is None else check_ports(relay.key("ports"), ports_value)
    settings = RelaySettings(
        address=address,
        address_v6=address_v6,
        external_address=external,
        external_address_v6=external_v6,
        ports=ports,
        allow_loopback_peers=read_bool(relay, "allow_loopback_peers", False),
        mobility=read_bool(relay, "mobility", True),
        allow_peers=read_networks(relay, "allow_peers"),
        deny_peers=read_networks(relay, "deny_peers"),
        user_quota=read_count(quotas, "user", 0),
        total_quota=read_count(quotas, "total", 0),
        permissions_per_allocation=read_count(quotas, "permissions_per_allocation", 128),
        channels_per_allocation=read_count(quotas, "channels_per_allocation", 128),
        peers_per_request=read_count(quotas, "peers_per_request", 32),
        allocations_per_source=read_count(quotas, "allocations_per_source", 1000),
        pending_per_source=read_count(quotas, "pending_per_source", 64),
        peer_connections_per_allocation=read_count(quotas, "peer_connections_per_allocation", 32),
        unauthenticated_rate=_read_rate(
            quotas, "unauthenticated_per_second", _CORE.unauthenticated_rate, 0
        ),
        unauthenticated_burst=_read_rate(
            quotas, "unauthenticated_burst", _CORE.unauthenticated_burst, 1
        ),
        reflection_rate=_read_rate(quotas, "reflection_bytes_per_second", _CORE.reflection_rate, 0),
        reflection_burst=_read_rate(
            quotas, "reflection_burst_bytes", _CORE.reflection_burst, MIN_REFLECTION_BURST
        ),
        default_lifetime=read_count(lifetimes, "default", 600),
        max_lifetime=read_count(lifetimes, "max", 3600),
    )
    if not 0 < settings.default_lifetime <= settings.max_lifetime:
        raise SettingsError(lifetimes.key("default"), "must be > 0 and <= lifetimes.max")
    _check_bounds(quotas, settings)
    return settings


def _read_rate(table: Table, name: str, default: float, least: float) -> float:
    """A rate or burst of the limits on requests that do not authenticate: a finite
    number, > 0 for a rate (`least` 0), at least `least` for a burst."""
    value = table.take(name)
    if value is None:
        return default
    key = table.key(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(key, f"expected a number, got {toml_type(value)}")
    wanted = "> 0" if least == 0 else f">= {least:g}"
    if not math.isfinite(value) or value < least or value <= 0:
        raise SettingsError(key, f"expected a finite number {wanted}, got {value!r}")
    return float(value)


def _check_bounds(quotas: Table, relay: RelaySettings) -> None:
    peers, permissions = relay.peers_per_request, relay.permissions_per_allocation
    if permissions and peers > permissions:
        # A CreatePermission with more peers than an allocation may hold always fails.
        raise SettingsError(
            quotas.key("peers_per_request"),
            f"must be <= quotas.permissions_per_allocation ({permissions})",
        )


def _check_relay_addresses(relay: RelaySettings) -> None:
    """Refuse relay/external address combinations that cannot work, naming the key."""
    v6 = ":" in relay.address
    if relay.address_v6 is not None and v6:
        raise SettingsError("relay.address_v6", "relay.address is IPv6 already; give IPv4 there")
    if relay.external_address is not None and (":" in relay.external_address) != v6:
        raise SettingsError("relay.external_address", "must be of relay.address's family")
    # A wildcard relay socket receives on every local address; which one the client
    # must send to is something only the operator knows.
    pairs = [("relay.external_address", relay.address, relay.external_address)]
    if relay.address_v6 is not None:
        pairs.append(("relay.external_address_v6", relay.address_v6, relay.external_address_v6))
    for key, bound, external in pairs:
        if ipaddress.ip_address(bound).is_unspecified and external is None:
            raise SettingsError(key, f"needed when the relay binds {bound}")


def _apply_flags(
    settings: Settings, listen: dict[str, tuple[ListenAddress, ...] | None], flags: Flags
) -> Settings:
    by_flag = {
        "udp": flags.listen_udp,
        "tcp": flags.listen_tcp,
        "tls": flags.listen_tls,
        "dtls": flags.listen_dtls,
    }
    for transport, values in by_flag.items():
        if values is not None:
            key = f"--listen-{transport}"
            listen[transport] = tuple(parse_host_port(key, v) for v in values)
    tls = settings.tls
    if flags.tls_cert is not None:
        tls = replace(tls, cert_file=check_file("--tls-cert", Path(flags.tls_cert)))
    if flags.tls_key is not None:
        tls = replace(tls, key_file=check_file("--tls-key", Path(flags.tls_key)))
    if (tls.cert_file is None) != (tls.key_file is None):
        missing = "tls.key" if tls.key_file is None else "tls.cert"
        raise SettingsError(missing, "missing: give both tls.cert and tls.key, or neither")
    log_level = settings.log_level
    if flags.log_level is not None:
        log_level = _parse_log_level("--log-level", flags.log_level)
    log_format = settings.log_format
    if flags.log_format is not None:
        log_format = _check_log_format("--log-format", flags.log_format)
    http = settings.http
    if flags.listen_http is not None:
        listen_http = tuple(parse_host_port("--listen-http", v) for v in flags.listen_http)
        http = replace(http, listen=listen_http)
    if flags.selftest:
        http = replace(http, selftest=True)
    if flags.admin_token_file is not None:
        path = check_file("--admin-token-file", Path(flags.admin_token_file))
        token = read_admin_token("--admin-token-file", path)
        http = replace(http, admin_token_file=path, admin_token=token)
    api = settings.api
    if flags.api_keys is not None:
        path = check_file("--api-keys", Path(flags.api_keys))
        api = replace(api, keys_file=path, keys=load_api_keys("--api-keys", path))
    auth = auth_flags(settings.auth, flags)
    if (http.selftest or api.keys_file) and not auth.shared_secrets:
        key = "http.selftest" if http.selftest else "api.keys_file"
        raise SettingsError(key, "needs a TURN REST secret (auth.secrets or auth.secrets_file)")
    resolved = _resolve_listen(listen)
    workers = settings.workers
    if flags.workers is not None:
        workers = _check_workers("--workers", flags.workers)
    relay = _relay_flags(settings.relay, flags)
    drain = _drain_flags(settings.drain, flags)
    _check_port_range_split(relay.ports, workers)
    # The operator port is TCP too: it must not take a TCP or TLS listener's fixed port.
    _check_unique([("listen.tcp", resolved.tcp), ("listen.tls", resolved.tls),
                   ("http.listen", http.listen)])  # fmt: skip
    fleet = fleet_flags(settings.fleet, flags)
    if api.fleet_keys and fleet is None:
        # Keys in Redis need a Redis: without one the operator's keys would silently not work.
        problem = "needs a fleet ([fleet] redis_url or redis_sentinels, or --redis-url)"
        raise SettingsError("api.fleet_keys", problem)
    return replace(
        settings,
        listen=resolved,
        tls=tls,
        auth=auth,
        relay=relay,
        http=http,
        api=api,
        drain=drain,
        fleet=fleet,
        log_level=log_level,
        log_format=log_format,
        log_usernames=settings.log_usernames or flags.log_usernames,
        workers=workers,
    )


def _check_workers(key: str, value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise SettingsError(key, f"expected an integer from 1 to {MAX_WORKERS}, got {value!r}")
    return value


def _check_port_range_split(ports: tuple[int, int] | None, workers: int) -> None:
    # Each worker gets its own slice of the relay port range (`trelay.process.workers`).
    if ports is not None and ports[1] - ports[0] + 1 < workers:
        raise SettingsError(
            "relay.ports", f"{ports[0]}-{ports[1]} has fewer ports than the {workers} workers"
        )


def _relay_flags(relay: RelaySettings, flags: Flags) -> RelaySettings:
    if flags.relay_address is not None:
        relay = replace(relay, address=check_ip("--relay-address", flags.relay_address))
    if flags.relay_address_v6 is not None:
        relay = replace(relay, address_v6=check_ipv6("--relay-address-v6", flags.relay_address_v6))
    if flags.external_address is not None:
        external = check_ip("--external-address", flags.external_address)
        relay = replace(relay, external_address=external)
    _check_relay_addresses(relay)
    if flags.relay_ports is not None:
        relay = replace(relay, ports=check_ports("--relay-ports", flags.relay_ports))
    if flags.allow_loopback_peers:
        relay = replace(relay, allow_loopback_peers=True)
    return relay


def _resolve_listen(listen: dict[str, tuple[ListenAddress, ...] | None]) -> ListenSettings:
    if all(v is None for v in listen.values()):
        return ListenSettings()
    resolved = ListenSettings(*(listen[t] or () for t in TRANSPORTS))
    if not (resolved.udp or resolved.tcp or resolved.tls or resolved.dtls):
        raise SettingsError("listen", "no address to listen on")
    # A fixed port can be bound once per protocol: UDP and DTLS share UDP's port space,
    # TCP and TLS share TCP's (so TLS and DTLS may have the same port number).
    _check_unique([("listen.udp", resolved.udp), ("listen.dtls", resolved.dtls)])
    _check_unique([("listen.tcp", resolved.tcp), ("listen.tls", resolved.tls)])
    return resolved


def _check_unique(groups: list[tuple[str, tuple[ListenAddress, ...]]]) -> None:
    seen: dict[ListenAddress, str] = {}
    for prefix, addresses in groups:
        for index, address in enumerate(addresses):
            key = f"{prefix}[{index}]"
            if address.port and address in seen:
                raise SettingsError(key, f"{address} is already listed as {seen[address]}")
            seen.setdefault(address, key)


def _read_drain(table: Table) -> DrainSettings:
    timeout = table.take("timeout")
    alternate = table.take("alternate_server")
    return DrainSettings(
        DEFAULT_DRAIN_TIMEOUT
        if timeout is None
        else check_drain_timeout(table.key("timeout"), timeout),
        None
        if alternate is None
        else check_alternate_server(table.key("alternate_server"), alternate),
    )


def _drain_flags(drain: DrainSettings, flags: Flags) -> DrainSettings:
    if flags.drain_timeout is not None:
        drain = replace(drain, timeout=check_drain_timeout("--drain-timeout", flags.drain_timeout))
    if flags.alternate_server is not None:
        alternate = check_alternate_server("--alternate-server", flags.alternate_server)
        drain = replace(drain, alternate_server=alternate)
    return drain


def check_drain_timeout(key: str, value: object) -> float:
    """Seconds >= 0 (0: end the allocations at once), from TOML or a flag's text."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SettingsError(key, f"expected seconds (a number), got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(key, f"expected seconds (a number), got {toml_type(value)}")
    if not (math.isfinite(value) and value >= 0):
        raise SettingsError(key, f"expected a number of seconds >= 0, got {value}")
    return float(value)


def check_alternate_server(key: str, value: object) -> ListenAddress:
    """An IP address and port clients can be sent to (ALTERNATE-SERVER carries an IP
    address, not a name: RFC 8489 §14.15)."""
    address = parse_host_port(key, value)
    if address.port == 0:
        raise SettingsError(key, "needs a port other than 0")
    if ipaddress.ip_address(address.host).is_unspecified:
        raise SettingsError(key, f"{address.host} is no address a client can be sent to")
    return address


def _read_idle_timeout(table: Table) -> float:
    value = table.take("idle_timeout")
    if value is None:
        return DEFAULT_IDLE_TIMEOUT
    key = table.key("idle_timeout")
    # bool is an int in Python, but `idle_timeout = true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(key, f"expected seconds (a number), got {toml_type(value)}")
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(key, f"expected a positive number of seconds, got {value}")
    return float(value)


def _parse_log_level(key: str, value: object) -> LogLevel:
    if isinstance(value, str):
        try:
            return LogLevel(value.lower())
        except ValueError:
            pass
    choices = ", ".join(level.value for level in LogLevel)
    raise SettingsError(key, f"expected one of {choices}, got {value!r}")
