"""Settings of the credential side: the token API (`[api]`) and RFC 7635 (`[auth.third_party]`).

Owns two sections of the settings tree (`trelay.config.settings` composes them):

    [api]                          # the token API on the operator HTTP port
    keys_file = "keys.toml"        # API keys (`trelay keys create`)
    fleet_keys = false             # also the fleet's keys in Redis (`trelay fleet api-key`)
    ice_urls = ["turn:turn.example.org:3478?transport=udp"]  # absent: from the listeners
    default_ttl = 86400            # seconds a minted TURN credential lives
    max_ttl = 86400
    [auth.third_party]             # RFC 7635 ACCESS-TOKEN (third-party authorization)
    server_name = "turn.example.org"          # the AEAD's associated data
    authorization_server = "https://auth.example.org"  # announced in 401s
    keys = { kid1 = "base64 of 16 or 32 bytes" }        # kid -> AES-GCM key
    token_lifetime = 3600          # what the API's /v1/access-tokens grants at most

The token API is served when `keys_file` is set or `fleet_keys` is true (with `[fleet]`:
a key added to Redis works on every API node within seconds, `trelay.fleet.api_keys`).
Paths are relative to the settings file; keys are checked (sizes, base64) when loaded.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

from trelay.config.api_keys import ApiKeyError, ApiKeys, load_keys
from trelay.config.values import (
    SettingsError,
    Table,
    check_text,
    read_bool,
    read_count,
    read_path,
    toml_type,
)

DEFAULT_TTL = 86400  # Twilio's default and maximum for a Network Traversal token
AEAD_KEY_SIZES = (16, 32)  # A128GCM, A256GCM (RFC 7635 §6.2)
URI_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    keys_file: Path | None = None
    # The keys `keys_file` held when the settings were loaded (a bad file never starts).
    keys: ApiKeys | None = field(default=None, repr=False)
    fleet_keys: bool = False
    ice_urls: tuple[str, ...] = ()
    default_ttl: int = DEFAULT_TTL
    max_ttl: int = DEFAULT_TTL

    @property
    def served(self) -> bool:
        """Whether the token API is served (it has, or may get, API keys)."""
        return self.keys is not None or self.fleet_keys


@dataclass(frozen=True, slots=True)
class ThirdPartySettings:
    server_name: str
    authorization_server: str
    keys: dict[str, bytes] = field(repr=False)
    token_lifetime: int = 3600


def read_api(table: Table, base: Path) -> ApiSettings:
    urls_value = table.take("ice_urls")
    urls: tuple[str, ...] = ()
    if urls_value is not None:
        key = table.key("ice_urls")
        if not isinstance(urls_value, list):
            raise SettingsError(
                key, f"expected a list of stun:/turn: URIs, got {toml_type(urls_value)}"
            )
        urls = tuple(_check_uri(f"{key}[{i}]", v) for i, v in enumerate(urls_value))
    keys_file = read_path(table, "keys_file", base)
    settings = ApiSettings(
        keys_file=keys_file,
        keys=None if keys_file is None else load_api_keys(table.key("keys_file"), keys_file),
        ice_urls=urls,
        fleet_keys=read_bool(table, "fleet_keys", False),
        default_ttl=read_count(table, "default_ttl", DEFAULT_TTL),
        max_ttl=read_count(table, "max_ttl", DEFAULT_TTL),
    )
    if not 0 < settings.default_ttl <= settings.max_ttl:
        raise SettingsError(table.key("default_ttl"), "must be > 0 and <= api.max_ttl")
    return settings


def read_third_party(table: Table) -> ThirdPartySettings | None:
    """`[auth.third_party]`, or None when the table is absent or empty."""
    server_name = table.take("server_name")
    authorization_server = table.take("authorization_server")
    keys_value = table.take("keys")
    lifetime = read_count(table, "token_lifetime", 3600)
    if server_name is None and authorization_server is None and keys_value is None:
        return None
    name = check_text(table.key("server_name"), server_name)
    server = check_text(table.key("authorization_server"), authorization_server)
    keys_key = table.key("keys")
    if not isinstance(keys_value, dict) or not keys_value:
        raise SettingsError(keys_key, "expected a table of kid = base64 key")
    keys = {
        check_text(f"{keys_key}.{kid}", kid): _aead_key(f"{keys_key}.{kid}", value)
        for kid, value in keys_value.items()
    }
    if lifetime <= 0:
        raise SettingsError(table.key("token_lifetime"), "must be > 0")
    return ThirdPartySettings(name, server, keys, lifetime)


def load_api_keys(key: str, path: Path) -> ApiKeys:
    try:
        return load_keys(path)
    except ApiKeyError as exc:
        raise SettingsError(key, str(exc)) from exc


def _check_uri(key: str, value: object) -> str:
    text = check_text(key, value)
    if not text.startswith(URI_SCHEMES):
        raise SettingsError(key, f"expected a stun:, stuns:, turn: or turns: URI, got {text!r}")
    return text


def _aead_key(key: str, value: object) -> bytes:
    text = check_text(key, value)
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise SettingsError(key, "not base64") from None
    if len(raw) not in AEAD_KEY_SIZES:
        raise SettingsError(key, f"expected a 16- or 32-byte key, got {len(raw)} bytes")
    return raw
