"""Settings of RFC 5780 NAT behaviour discovery (`[nat_discovery]`): opt-in, a second IP.

Owns one section of the settings tree (`trelay.config.settings` composes it):

    [nat_discovery]                # absent, or enabled = false: plain Binding (CHANGE-REQUEST: 420)
    enabled = true
    alternate_host = "192.0.2.2"   # a second IP address of this host, family of listen.udp[0]
    alternate_port = 3479          # a second port, not listen.udp[0]'s

The primary address is the first UDP listen address, `listen.udp[0]`: with the alternate
host and port it makes the four UDP addresses of RFC 5780 §6 (primary / alternate IP x
primary / alternate port), which the node listens on (`ListenSettings.nat` holds the
three besides the primary; with `--workers` they are held by the supervisor like
`listen.udp`) and the core answers on (`trelay.turn.nat_discovery`). RFC 5780 runs over
UDP: TCP and TLS listeners do no NAT discovery.

Invariants (each a `SettingsError` naming the key to edit, before anything binds):
`enabled` needs `alternate_host` (an IP address) and `alternate_port` (1-65535);
`listen.udp[0]` must exist, be a specific address (it is told to clients in
RESPONSE-ORIGIN and OTHER-ADDRESS: a wildcard is not an address to answer from) of the
alternate host's family, other than it, with a fixed port other than the alternate one;
and none of the three extra addresses may be listed in `listen.udp` or `listen.dtls`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from trelay.config.values import ListenAddress, SettingsError, Table, read_bool, toml_type
from trelay.turn.nat_discovery import NatDiscovery

SECTION = "nat_discovery"


@dataclass(frozen=True, slots=True)
class NatDiscoverySettings:
    """`[nat_discovery]`; `primary` is `listen.udp[0]`, set once the listen addresses are
    known (`resolve_nat_discovery`)."""

    enabled: bool = False
    alternate_host: str | None = None
    alternate_port: int | None = None
    primary: ListenAddress | None = None

    def core(self) -> NatDiscovery | None:
        """The core's value (`TurnConfig.nat_discovery`); None while not enabled."""
        if not self.enabled or self.primary is None:
            return None
        assert self.alternate_host is not None and self.alternate_port is not None
        primary = (self.primary.host, self.primary.port)
        return NatDiscovery(primary, (self.alternate_host, self.alternate_port))

    def extra_listen(self) -> tuple[ListenAddress, ...]:
        """The three UDP addresses the node listens on besides `listen.udp[0]`."""
        nat = self.core()
        if nat is None:
            return ()
        return tuple(ListenAddress(host, port) for host, port in nat.addresses[1:])


def read_nat_discovery(table: Table) -> NatDiscoverySettings:
    """`[nat_discovery]` from the file (its `table`); checks each key alone."""
    enabled = read_bool(table, "enabled", False)
    host = _read_host(table, "alternate_host")
    port = _read_port(table, "alternate_port")
    if enabled:
        for name, value in (("alternate_host", host), ("alternate_port", port)):
            if value is None:
                raise SettingsError(table.key(name), f"missing: {SECTION}.enabled needs it")
    return NatDiscoverySettings(enabled, host, port)


def _read_host(table: Table, name: str) -> str | None:
    value = table.take(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SettingsError(table.key(name), f"expected an IP address, got {toml_type(value)}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise SettingsError(table.key(name), f"not an IP address: {value!r}") from None
    if address.is_unspecified:
        problem = f"a wildcard cannot be told to clients (OTHER-ADDRESS): {value}"
        raise SettingsError(table.key(name), problem)
    return str(address)


def _read_port(table: Table, name: str) -> int | None:
    value = table.take(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 0xFFFF:
        raise SettingsError(table.key(name), f"expected a port from 1 to 65535, got {value!r}")
    return value


def resolve_nat_discovery(
    nat: NatDiscoverySettings,
    udp: tuple[ListenAddress, ...],
    dtls: tuple[ListenAddress, ...] = (),
) -> NatDiscoverySettings:
    """`nat` with its primary address, `udp[0]` (the UDP listen addresses in force, after
    the flags; `dtls`, the DTLS ones, share UDP's ports); checks the sections against
    each other (module docstring)."""
    if not nat.enabled:
        return nat
    if not udp:
        raise SettingsError(f"{SECTION}.enabled", "needs a UDP listen address (listen.udp)")
    primary = udp[0]
    ip = ipaddress.ip_address(primary.host)
    if ip.is_unspecified:
        problem = f"{SECTION} answers from this address: give a specific IP, not {primary.host}"
        raise SettingsError("listen.udp[0]", problem)
    if primary.port == 0:
        problem = f"{SECTION} pairs its ports with this one: give a fixed port, not 0"
        raise SettingsError("listen.udp[0]", problem)
    assert nat.alternate_host is not None and nat.alternate_port is not None
    alternate = ipaddress.ip_address(nat.alternate_host)
    if alternate.version != ip.version:
        problem = f"must be of listen.udp[0]'s family (IPv{ip.version}), got {nat.alternate_host}"
        raise SettingsError(f"{SECTION}.alternate_host", problem)
    if alternate == ip:
        problem = f"must differ from listen.udp[0]'s IP ({primary.host})"
        raise SettingsError(f"{SECTION}.alternate_host", problem)
    if nat.alternate_port == primary.port:
        problem = f"must differ from listen.udp[0]'s port ({primary.port})"
        raise SettingsError(f"{SECTION}.alternate_port", problem)
    resolved = replace(nat, primary=primary)
    for address in resolved.extra_listen():
        for name, listed in (("udp", udp), ("dtls", dtls)):
            if address in listed:
                index = listed.index(address)
                problem = f"{address} (one of its addresses) is already listen.{name}[{index}]"
                raise SettingsError(f"{SECTION}.alternate_port", problem)
    return resolved
