"""Start-up checks that the settings alone cannot make: files and addresses, before any bind.

Owns what `trelay serve` checks after reading its settings and before it binds anything
(and what `trelay check-config FILE` checks without binding at all), so that a node that
cannot work says so at once, as one line naming the key and status 2, instead of
starting "ready" and failing later:

- `check_files`: the TLS certificate and key load and match (`tls.cert`, `tls.key`), and
  the revocations file parses (`auth.revocations_file`). The shared-secrets file is read
  by the settings loader already (`auth.secrets_file`). Nothing is bound.
- `check_relay_addresses`: the relay addresses (`relay.address`, `relay.address_v6`, or
  the flags that set them) belong to this machine. A relay address it does not have
  (the classic cloud mistake: the public address of a 1:1 NAT) would answer every
  Allocate with 508. Checked by binding a UDP socket on it, port 0, and closing it at
  once; the wildcard and loopback addresses always pass.

The operator HTTP ports are checked where they are held, `trelay.process.serve`.
"""

from __future__ import annotations

import ipaddress
import socket

from trelay.config.flags import Flags
from trelay.config.revocations import load_revocations
from trelay.config.settings import Settings
from trelay.config.values import SettingsError
from trelay.node.tls import server_context


def check_files(settings: Settings) -> None:
    """Load what the settings name and the node would load only later; no bind."""
    tls = settings.tls
    if tls.cert_file is not None and tls.key_file is not None:
        server_context(tls.cert_file, tls.key_file)  # SettingsError naming tls.cert/tls.key
    path = settings.auth.revocations_file
    if path is not None:
        try:
            load_revocations(path)
        except ValueError as exc:
            raise SettingsError("auth.revocations_file", str(exc)) from None


def check_relay_addresses(settings: Settings, flags: Flags | None = None) -> None:
    """Refuse relay addresses this machine does not have, naming the key (or flag) set."""
    flags = flags or Flags()
    relay = settings.relay
    given_v6 = flags.relay_address_v6 is not None
    check_local_address(
        "--relay-address" if flags.relay_address else "relay.address", relay.address
    )
    if relay.address_v6 is not None:
        key = "--relay-address-v6" if given_v6 else "relay.address_v6"
        check_local_address(key, relay.address_v6)


def check_local_address(key: str, host: str) -> None:
    """`SettingsError(key, ...)` unless a UDP socket can bind `host` (port 0) here."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified or address.is_loopback:
        return
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        problem = (
            f"{host} is not an address of this machine ({exc.strerror or exc}); behind a "
            "1:1 NAT, relay on the private address and give the public one as "
            "relay.external_address"
        )
        raise SettingsError(key, problem) from None
