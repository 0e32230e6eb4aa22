"""The client-side kit: prove in tests that calls work through the relay, and only through it.

The names users import, from here:

- the ICE-policy shim (`trelay.icekit.ice_shim`): `assert_relayed`, `selected_pairs`,
  `ice_connection`, `rtc_configuration`, `connect_pair`, `parse_ice_servers`,
  `choose_turn_server`;
- the throw-away relay (`trelay.icekit.loopback_relay`): `throwaway_relay` (a sync
  context manager, the node in a thread), `open_loopback_relay` (trio), `LoopbackRelay`.

The pytest plugin (`trelay.icekit.pytest_plugin`, entry point `trelay`) gives the
`turn_server` and `relayed_pair` fixtures and the `relay_only` marker. The names are
loaded on first use, so that pytest, which imports the plugin at start-up in every
project where trelay is installed, does not pay for trio and the node until a test
asks for a relay. The kit builds its relay through `trelay.node.assembly` only
(import contract).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trelay.icekit.ice_shim import (
        assert_relayed,
        choose_turn_server,
        connect_pair,
        ice_connection,
        parse_ice_servers,
        rtc_configuration,
        selected_pairs,
    )
    from trelay.icekit.loopback_relay import LoopbackRelay, open_loopback_relay, throwaway_relay

_HOMES = {
    "assert_relayed": "ice_shim",
    "choose_turn_server": "ice_shim",
    "connect_pair": "ice_shim",
    "ice_connection": "ice_shim",
    "parse_ice_servers": "ice_shim",
    "rtc_configuration": "ice_shim",
    "selected_pairs": "ice_shim",
    "LoopbackRelay": "loopback_relay",
    "open_loopback_relay": "loopback_relay",
    "throwaway_relay": "loopback_relay",
}

__all__ = [
    "LoopbackRelay",
    "assert_relayed",
    "choose_turn_server",
    "connect_pair",
    "ice_connection",
    "open_loopback_relay",
    "parse_ice_servers",
    "rtc_configuration",
    "selected_pairs",
    "throwaway_relay",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'trelay.icekit' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trelay.icekit.{home}"), name)
