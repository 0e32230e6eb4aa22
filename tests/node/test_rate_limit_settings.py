"""The limits on requests that do not authenticate, set by the operator, on a real node.

`[quotas] unauthenticated_per_second / unauthenticated_burst` (and the reflection pair)
go from the settings file through `trelay.node.turn_setup` into the core's limiter
(`trelay.turn.rate_limit`): a node started with a burst of 3 answers 3 Binding requests
from one client socket and drops the rest (`Drop.RATE_LIMITED`); a reload raising the
burst applies at once and keeps the buckets: the socket that spent 3 gets the rest of the
new burst, a fresh socket all of it. The rate is tiny (one token per 1000 s), so the
counts do not depend on how fast the machine sends.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from trelay.config.flags import Flags
from trelay.config.reload import Reload, reload_settings
from trelay.config.settings import load_settings
from trelay.node.assembly import RunningNode, start_node
from trelay.node.live_settings import apply_live
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn.stats import Drop

TIMEOUT = 10.0
RATE = 0.001  # per second: no token comes back during a test


def settings_text(burst: int, reflection_burst: int = 262144) -> str:
    return f"""
[listen]
udp = ["127.0.0.1:0"]
tcp = []
tls = []
[auth]
realm = "limits.test"
users = {{ alice = "wonderland" }}
[quotas]
unauthenticated_per_second = {RATE}
unauthenticated_burst = {burst}
reflection_bytes_per_second = 131072
reflection_burst_bytes = {reflection_burst}
"""


@asynccontextmanager
async def node(config: Path) -> AsyncIterator[RunningNode]:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            yield await start_node(nursery, load_settings(config))
        nursery.cancel_scope.cancel()


async def bindings_answered(sock: trio.socket.SocketType, server: tuple[str, int], sent: int,
                            running: RunningNode) -> int:  # fmt: skip
    """Send `sent` Binding requests; once the node has handled them all (each answered
    or counted as rate limited), the number of answers that came back."""
    stats = running.node.server.stats
    before = stats.dropped[Drop.RATE_LIMITED]
    tids = [index.to_bytes(12, "big") for index in range(sent)]
    for tid in tids:
        await sock.sendto(
            encode_message(Message(Method.BINDING, MessageClass.REQUEST, tid)), server
        )
    answered = 0
    with trio.fail_after(TIMEOUT):
        while answered + stats.dropped[Drop.RATE_LIMITED] - before < sent:
            with trio.move_on_after(0.05):
                reply = decode_message(await sock.recv(2048))
                assert reply.message_class is MessageClass.SUCCESS
                assert reply.transaction_id in tids
                answered += 1
    return answered


def udp_socket() -> trio.socket.SocketType:
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


async def test_a_low_burst_refuses_beyond_it_and_a_reload_raises_it_keeping_buckets(
    tmp_path: Path,
) -> None:
    config = tmp_path / "trelay.toml"
    config.write_text(settings_text(burst=3))
    async with node(config) as running:
        (server,) = running.bound.udp
        limits = running.node.server.limits.per_source
        assert (limits.rate, limits.burst) == (RATE, 3.0)
        with udp_socket() as first:
            await first.bind(("127.0.0.1", 0))
            assert await bindings_answered(first, server, 8, running) == 3
            current = load_settings(config)
            config.write_text(settings_text(burst=10))
            result = reload_settings(current, config, Flags())
            assert isinstance(result, Reload), result
            applied = apply_live(running, result)
            assert applied.changed == ("quotas.unauthenticated_burst: 3.0 -> 10.0",)
            assert result.restart == ()
            assert running.node.server.config.unauthenticated_burst == 10.0
            # The bucket that spent 3 is kept: 7 more, not a fresh 10.
            assert await bindings_answered(first, server, 12, running) == 7
            with udp_socket() as fresh:
                await fresh.bind(("127.0.0.1", 0))
                assert await bindings_answered(fresh, server, 12, running) == 10


async def test_the_reflection_limits_reach_the_core(tmp_path: Path) -> None:
    config = tmp_path / "trelay.toml"
    config.write_text(settings_text(burst=3, reflection_burst=4096))
    async with node(config) as running:
        per_destination = running.node.server.limits.per_destination
        assert (per_destination.rate, per_destination.burst) == (131072.0, 4096.0)
