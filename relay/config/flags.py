"""The command line's overrides of the settings file, as typed: `Flags`.

Owns the one value that carries `trelay serve`'s flags (`trelay.process.cli` fills it)
to the settings readers (`trelay.config.settings` and the sections it composes), which
check each value and name the flag in any error. None means "not given": the file's
value, or the default, stands.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Flags:
    """Command-line overrides, as typed (unparsed); None means "not given"."""

    listen_udp: tuple[str, ...] | None = None
    listen_tcp: tuple[str, ...] | None = None
    listen_tls: tuple[str, ...] | None = None
    listen_dtls: tuple[str, ...] | None = None
    listen_http: tuple[str, ...] | None = None
    realm: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str | None = None
    users: tuple[str, ...] | None = None  # "name:password"
    secrets: tuple[str, ...] | None = None
    secrets_file: str | None = None
    relay_address: str | None = None
    relay_address_v6: str | None = None
    external_address: str | None = None
    relay_ports: str | None = None  # "min-max"
    allow_loopback_peers: bool = False
    selftest: bool = False
    api_keys: str | None = None
    revocations_file: str | None = None
    log_format: str | None = None
    log_usernames: bool = False
    workers: str | None = None
    drain_timeout: str | None = None  # seconds
    alternate_server: str | None = None  # "host:port"
    redis_url: str | None = None  # [fleet] redis_url
    region: str | None = None  # [fleet] region
    node_id: str | None = None  # [fleet] node_id
    public_uris: tuple[str, ...] | None = None  # [fleet] public_uris
    redis_password_file: str | None = None  # [fleet] redis_password_file
    admin_token_file: str | None = None
