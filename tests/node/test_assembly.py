"""trelay.node.assembly: one start-up for every node, on real loopback sockets.

`start_node` binds what the settings name and serves TURN on it; the revocations file is
read before anything binds (a bad one is a `SettingsError` naming the key, and no
listener starts) and its identities are refused; a prepared core (the test kit's) is
served as given, and learns the endpoints it must deny as peers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.helpers.turn_client import TurnError, udp_client
from trelay.config.flags import Flags
from trelay.config.settings import Settings, load_settings
from trelay.config.values import SettingsError
from trelay.node.assembly import loopback_turn_server, start_node
from trelay.node.listeners import Listeners
from trelay.turn.addressing import Address
from trelay.turn.config import TurnConfig

TIMEOUT = 10.0


def settings_with(**flags: object) -> Settings:
    base = {"users": ("alice:wonderland",), "allow_loopback_peers": True}
    return load_settings(None, Flags(**{**base, **flags}))  # type: ignore[arg-type]


async def test_a_node_from_settings_binds_every_listener_and_relays() -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            running = await start_node(nursery, settings_with())
            bound = running.bound
            assert (len(bound.udp), len(bound.tcp), len(bound.tls)) == (1, 1, 1)
            async with udp_client(bound.udp[0]) as client:
                relayed = await client.allocate()
            assert relayed[0] == "127.0.0.1"
            assert len(running.node.server.allocations) == 1
        assert running.revocations is None
        nursery.cancel_scope.cancel()


async def test_a_revoked_identity_is_refused(tmp_path: Path) -> None:
    revoked = tmp_path / "revoked.toml"
    revoked.write_text('[[revoked]]\nidentity = "alice"\nuntil = 4102444800\n')
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            running = await start_node(nursery, settings_with(revocations_file=str(revoked)))
            assert running.revocations is not None
            async with udp_client(running.bound.udp[0]) as client:
                with pytest.raises(TurnError) as refused:
                    await client.allocate()
        assert refused.value.code == 401
        assert not running.node.server.allocations
        nursery.cancel_scope.cancel()


async def test_a_bad_revocations_file_fails_before_any_listener(tmp_path: Path) -> None:
    revoked = tmp_path / "revoked.toml"
    revoked.write_text("[[revoked]]\nidentity = \n")
    settings = settings_with(revocations_file=str(revoked))
    started: list[str] = []

    async def udp(*args: object, **kwargs: object) -> None:
        started.append("udp")  # pragma: no cover - must not be reached

    async def stream(*args: object, **kwargs: object) -> None:
        started.append("stream")  # pragma: no cover - must not be reached

    with pytest.raises(ExceptionGroup) as group:
        async with trio.open_nursery() as nursery:
            await start_node(nursery, settings, listeners=Listeners(udp=udp, stream=stream))
    (error,) = group.value.exceptions
    assert isinstance(error, SettingsError)
    assert error.key == "auth.revocations_file"
    assert started == []


async def test_a_prepared_core_is_served_and_denies_its_own_endpoints() -> None:
    config = TurnConfig(realm="assembly.test", relay_host="127.0.0.1")
    server = loopback_turn_server(config, {"alice": "wonderland"})
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            running = await start_node(nursery, settings_with(), server=server)
            assert running.node.server is server
            listener: Address = running.bound.udp[0]
            assert not server.policy.permits_endpoint(*listener)
            assert server.policy.permits_endpoint(listener[0], listener[1] + 1)
            async with udp_client(listener) as client:
                await client.allocate()
            assert len(server.allocations) == 1
        nursery.cancel_scope.cancel()
