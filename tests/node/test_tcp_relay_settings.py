"""`[quotas] peer_connections_per_allocation`: the RFC 6062 bound from the settings file to
the core (`trelay.node.turn_setup`), its errors named by key, and a reload that applies
it live (`trelay.config.reload`, `trelay.node.live_settings`); TCP allocations with
workers too; and a reloaded peer policy closing the TCP connections to peers it denies."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.helpers.settings_file import write
from tests.node.test_tcp_relay import TIMEOUT, allocate_tcp, connected, connection, echo_peer
from trelay.config.flags import Flags
from trelay.config.reload import Reload, reload_settings
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError
from trelay.node.assembly import start_node
from trelay.node.live_settings import apply_live
from trelay.node.turn_setup import turn_config
from trelay.turn.config import TurnConfig

BASE = '[listen]\nudp = ["127.0.0.1:0"]\ntcp = ["127.0.0.1:0"]\n[auth]\nrealm = "example.org"\n'
KEY = "quotas.peer_connections_per_allocation"


def test_the_default_is_the_cores(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, BASE))
    assert settings.relay.peer_connections_per_allocation == 32
    expected = TurnConfig().peer_connections_per_allocation
    assert turn_config(settings).peer_connections_per_allocation == expected


def test_the_file_sets_it(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, BASE + "[quotas]\npeer_connections_per_allocation = 4\n")
    )
    assert turn_config(settings).peer_connections_per_allocation == 4


@pytest.mark.parametrize("value", ["-1", '"many"', "1.5", "true"])
def test_bad_values_name_the_key(tmp_path: Path, value: str) -> None:
    config = write(tmp_path, BASE + f"[quotas]\npeer_connections_per_allocation = {value}\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(config)
    assert raised.value.key == KEY


def test_a_reload_applies_it_live(tmp_path: Path) -> None:
    config = write(tmp_path, BASE)
    current = load_settings(config)
    config.write_text(BASE + "[quotas]\npeer_connections_per_allocation = 2\n")
    result = reload_settings(current, config, Flags())
    assert isinstance(result, Reload), result
    assert [change.key for change in result.live] == [KEY]
    assert result.restart == ()
    assert result.settings.relay.peer_connections_per_allocation == 2


def test_tcp_allocations_with_any_number_of_workers(tmp_path: Path) -> None:
    # A ConnectionBind's new connection that reaches another worker than the
    # allocation's is proxied there (`trelay.node.bind_proxy`).
    one = load_settings(write(tmp_path, BASE))
    assert turn_config(one).tcp_allocations
    several = load_settings(write(tmp_path, "workers = 2\n" + BASE))
    assert several.workers == 2
    assert turn_config(several).tcp_allocations


LIVE = """
[listen]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
[auth]
realm = "interop.test"
users = { alice = "wonderland" }
[relay]
allow_loopback_peers = true
"""


async def test_a_reloaded_peer_policy_closes_tcp_connections_to_denied_peers(
    tmp_path: Path,
) -> None:
    config = write(tmp_path, LIVE)
    current = load_settings(config)
    async with echo_peer() as (peer, ended), trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            running = await start_node(nursery, current)
        (tcp,) = running.bound.tcp
        async with connection(tcp) as control:
            await allocate_tcp(control)
            await connected(control, peer)
            config.write_text(LIVE + 'deny_peers = ["127.0.0.1/32"]\n')
            result = reload_settings(current, config, Flags())
            assert isinstance(result, Reload), result
            applied = apply_live(running, result)
            assert "closed 1 TCP peer connection(s) to peers now denied" in applied.changed
            with trio.fail_after(TIMEOUT):
                await (await ended.receive()).wait()  # the relay closed it
            assert not running.node.server.tcp.connections
            assert running.node.server.allocation_count == 1  # the allocation lives on
        nursery.cancel_scope.cancel()
