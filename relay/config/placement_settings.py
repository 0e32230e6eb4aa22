"""Settings of placement (`[fleet.placement]`): how the token API picks the nodes it hands out.

Owns one sub-section of `[fleet]` (`trelay.config.fleet_settings` composes it; design §9):

    [fleet.placement]
    count = 2                      # nodes handed to a client (Firezone hands out two)
    refresh_seconds = 1.0          # the API reads the live nodes from Redis at most this often
    trusted_proxies = ["10.0.0.0/8"]  # X-Forwarded-For is believed only from these
    [fleet.placement.neighbours]   # where to look, in order, when a region has no node
    eu-central = ["eu-west", "us-east"]
    [[fleet.placement.client_networks]]  # the client's region from its address
    cidr = "203.0.113.0/24"
    region = "eu-central"

Invariants: every value is checked at load and a bad one is a `SettingsError` naming its
key (`fleet.placement.client_networks[1].cidr`); region names are the registry's (letters,
digits, '-', '_', '.'); two client networks may overlap (the longest prefix wins, as in
a routing table) but the same network may not name two regions.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from trelay.config.values import SettingsError, Table, check_text, toml_type

DEFAULT_COUNT = 2
MAX_COUNT = 16
DEFAULT_REFRESH = 1.0

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientNetwork:
    """Clients whose address is in `network` are in `region`."""

    network: IpNetwork
    region: str


@dataclass(frozen=True, slots=True)
class PlacementSettings:
    count: int = DEFAULT_COUNT
    refresh_seconds: float = DEFAULT_REFRESH
    # (region, its neighbours nearest first), in file order; a tuple so settings compare.
    neighbours: tuple[tuple[str, tuple[str, ...]], ...] = ()
    client_networks: tuple[ClientNetwork, ...] = ()
    trusted_proxies: tuple[IpNetwork, ...] = ()

    def neighbours_of(self, region: str) -> tuple[str, ...]:
        for name, near in self.neighbours:
            if name == region:
                return near
        return ()


def check_region_name(key: str, value: object) -> str:
    """A region or node name: it becomes part of Redis keys, so no separators or spaces."""
    text = check_text(key, value)
    if not all(c.isalnum() or c in "-_." for c in text):
        raise SettingsError(key, f"only letters, digits, '-', '_' and '.', got {text!r}")
    return text


def read_placement(table: Table) -> PlacementSettings:
    """`[fleet.placement]` (every key optional)."""
    count = table.take("count")
    refresh = table.take("refresh_seconds")
    settings = PlacementSettings(
        count=_count(table.key("count"), count),
        refresh_seconds=_refresh(table.key("refresh_seconds"), refresh),
        neighbours=_neighbours(table.key("neighbours"), table.take("neighbours")),
        client_networks=_client_networks(
            table.key("client_networks"), table.take("client_networks")
        ),
        trusted_proxies=_networks(table.key("trusted_proxies"), table.take("trusted_proxies")),
    )
    table.finish()
    return settings


def _count(key: str, value: object) -> int:
    if value is None:
        return DEFAULT_COUNT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise SettingsError(key, f"expected a number of nodes from 1 to {MAX_COUNT}, got {value!r}")
    return value


def _refresh(key: str, value: object) -> float:
    if value is None:
        return DEFAULT_REFRESH
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(key, f"expected seconds (a number), got {toml_type(value)}")
    if not (math.isfinite(value) and 0 < value <= 60):
        raise SettingsError(key, f"expected seconds from 0 to 60, got {value}")
    return float(value)


def _neighbours(key: str, table: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if table is None:
        return ()
    if not isinstance(table, dict):
        raise SettingsError(key, f"expected a table of region = [...], got {toml_type(table)}")
    found: list[tuple[str, tuple[str, ...]]] = []
    for region, value in table.items():
        region_key = f"{key}.{region}"
        check_region_name(region_key, region)
        if not isinstance(value, list):
            raise SettingsError(
                region_key, f"expected a list of region names, got {toml_type(value)}"
            )
        near = tuple(check_region_name(f"{region_key}[{i}]", v) for i, v in enumerate(value))
        if region in near:
            raise SettingsError(region_key, f"{region!r} lists itself as a neighbour")
        if len(set(near)) != len(near):
            raise SettingsError(region_key, "a region is listed twice")
        found.append((region, near))
    return tuple(found)


def _network(key: str, value: object) -> IpNetwork:
    text = check_text(key, value)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SettingsError(key, f"not a CIDR network: {text!r}") from None


def _networks(key: str, value: object) -> tuple[IpNetwork, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SettingsError(key, f"expected a list of CIDR networks, got {toml_type(value)}")
    return tuple(_network(f"{key}[{i}]", v) for i, v in enumerate(value))


def _client_networks(key: str, value: object) -> tuple[ClientNetwork, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SettingsError(key, f"expected [[{key}]] tables, got {toml_type(value)}")
    found: dict[IpNetwork, ClientNetwork] = {}
    for index, item in enumerate(value):
        name = f"{key}[{index}]"
        if not isinstance(item, dict):
            raise SettingsError(name, f"expected a table (cidr, region), got {toml_type(item)}")
        entry = Table(item, name)
        network = _network(entry.key("cidr"), entry.take("cidr"))
        region = check_region_name(entry.key("region"), entry.take("region"))
        entry.finish()
        earlier = found.get(network)
        if earlier is not None and earlier.region != region:
            raise SettingsError(
                entry.key("cidr"), f"{network} is already mapped to region {earlier.region!r}"
            )
        found[network] = ClientNetwork(network, region)
    return tuple(found.values())
