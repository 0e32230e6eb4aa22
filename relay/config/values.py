"""One settings value at a time: how TOML values and flags are read and checked.

Owns `SettingsError` and the small readers every settings section uses: a `Table` that
hands out its keys one by one and calls what is left unknown, and one function per kind
of value (text, booleans, counts, paths, IP addresses, CIDR networks, "host:port",
port ranges). Each reader names the dotted key (or the flag) in its error, so an
operator sees exactly what to edit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# RFC 8489 §14.9 (REALM) and §14.14 (SOFTWARE): fewer than 128 characters.
MAX_TEXT_CHARACTERS = 127


class SettingsError(ValueError):
    """A setting that cannot be used: `key` names it, `problem` says what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One address to listen on; `host` is a normalised IP literal, port 0 = ephemeral."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_host_port(self.host, self.port)


def format_host_port(host: str, port: int) -> str:
    """ "host:port", with IPv6 hosts in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(key: str, value: object) -> ListenAddress:
    """Parse "192.0.2.1:3478" or "[2001:db8::1]:3478" into a `ListenAddress`."""
    if not isinstance(value, str):
        raise SettingsError(key, f'expected a "host:port" string, got {toml_type(value)}')
    expected = SettingsError(key, f"expected host:port, got {value!r}")
    bracketed = value.startswith("[")
    if bracketed:
        host, closed, rest = value[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise expected
        port_text = rest[1:]
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise expected
        if ":" in host:
            raise SettingsError(key, f"put IPv6 addresses in brackets: '[{host}]:{port_text}'")
    if not host:
        raise expected
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SettingsError(key, f"expected an IP address, got {host!r}") from None
    if bracketed and address.version != 6:
        raise SettingsError(key, f"brackets are for IPv6 addresses, got {value!r}")
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise SettingsError(key, f"expected a port number, got {port_text!r}")
    port = int(port_text)
    if port > 65535:
        raise SettingsError(key, f"port {port} is out of range 0-65535")
    return ListenAddress(str(address), port)


class Table:
    """A TOML table being read: values are taken one by one, what is left is unknown."""

    def __init__(self, data: Mapping[str, object], path: str) -> None:
        self._data = dict(data)
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def take(self, name: str) -> object | None:
        return self._data.pop(name, None)

    def table(self, name: str) -> Table:
        value = self.take(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise SettingsError(self.key(name), f"expected a table, got {toml_type(value)}")
        return Table(value, self.key(name))

    def finish(self) -> None:
        for name in self._data:
            raise SettingsError(self.key(name), "unknown key")


def read_bool(table: Table, name: str, default: bool) -> bool:
    value = table.take(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SettingsError(table.key(name), f"expected true or false, got {toml_type(value)}")
    return value


def read_count(table: Table, name: str, default: int) -> int:
    value = table.take(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingsError(table.key(name), f"expected an integer >= 0, got {value!r}")
    return value


def read_networks(table: Table, name: str) -> tuple[str, ...]:
    value = table.take(name)
    if value is None:
        return ()
    key = table.key(name)
    if not isinstance(value, list):
        raise SettingsError(key, f"expected a list of CIDR networks, got {toml_type(value)}")
    for index, item in enumerate(value):
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            raise SettingsError(f"{key}[{index}]", f"not a CIDR network: {item!r}") from None
    return tuple(str(item) for item in value)


def check_ip(key: str, value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise SettingsError(key, f"not an IP address: {value!r}") from None
    return value


def read_optional_ip(table: Table, name: str, *, v6: bool = False) -> str | None:
    value = table.take(name)
    if value is None:
        return None
    key = table.key(name)
    text = check_text(key, value)
    return check_ipv6(key, text) if v6 else check_ip(key, text)


def check_ipv6(key: str, value: str) -> str:
    check_ip(key, value)
    if ":" not in value:
        raise SettingsError(key, f"not an IPv6 address: {value!r}")
    return value


def check_ports(key: str, value: object) -> tuple[int, int]:
    if isinstance(value, str):
        low_text, _, high_text = value.partition("-")
        value = [low_text, high_text]
    problem = f'expected [min, max] or "min-max", got {value!r}'
    if not (isinstance(value, list) and len(value) == 2):
        raise SettingsError(key, problem)
    try:
        low, high = (int(str(v)) for v in value)
    except ValueError:
        raise SettingsError(key, problem) from None
    if not 1024 <= low <= high <= 65535:
        # design §5: Chrome refuses relayed ports below 1024 (except 53, 80, 443).
        raise SettingsError(key, f"expected 1024 <= min <= max <= 65535, got {low}-{high}")
    return low, high


def read_addresses(table: Table, name: str) -> tuple[ListenAddress, ...] | None:
    value = table.take(name)
    if value is None:
        return None
    key = table.key(name)
    if not isinstance(value, list):
        raise SettingsError(key, f'expected a list of "host:port", got {toml_type(value)}')
    return tuple(parse_host_port(f"{key}[{i}]", item) for i, item in enumerate(value))


def read_path(table: Table, name: str, base: Path) -> Path | None:
    value = table.take(name)
    if value is None:
        return None
    key = table.key(name)
    if not isinstance(value, str) or not value:
        raise SettingsError(key, f"expected a file path, got {toml_type(value)}")
    # Relative paths are relative to the file that names them, not to the working directory.
    return check_file(key, base / value)


def check_file(key: str, path: Path) -> Path:
    if not path.exists():
        raise SettingsError(key, f"file not found: {path}")
    if not path.is_file():
        raise SettingsError(key, f"not a file: {path}")
    return path


def read_text(table: Table, name: str, default: str) -> str:
    value = table.take(name)
    return default if value is None else check_text(table.key(name), value)


def check_text(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise SettingsError(key, f"expected a string, got {toml_type(value)}")
    if not value:
        raise SettingsError(key, "must not be empty")
    if len(value) > MAX_TEXT_CHARACTERS:
        raise SettingsError(key, f"{len(value)} characters, at most {MAX_TEXT_CHARACTERS}")
    if not value.isprintable():
        raise SettingsError(key, f"contains control characters: {value!r}")
    return value


def toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), "a date or time")
