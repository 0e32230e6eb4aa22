"""Properties of the bounds and of the timer queue (issue 15), over random request runs.

Whatever a client sends (CreatePermission with one to five peers, ChannelBind, Refresh
with any lifetime, time passing), after every step: an allocation holds at most
`permissions_per_allocation` permissions and `channels_per_allocation` channels; a
refused request (508) changed nothing; every live allocation, permission and channel
has exactly one live timer and nothing else has one; the timer heap holds at most twice
the live entries plus its slack.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.turn_harness import REALM, Client, error_code, make_server, run_timers
from trelay.turn.addressing import Address
from trelay.turn.config import TurnConfig
from trelay.turn.server import TurnServer

PERMISSIONS, CHANNELS = 3, 2
CONFIG = TurnConfig(
    realm=REALM, relay_host="198.51.100.1", permissions_per_allocation=PERMISSIONS,
    channels_per_allocation=CHANNELS, peers_per_request=4,
)  # fmt: skip
PEERS: tuple[Address, ...] = tuple((f"127.0.0.{i + 1}", 4000 + i) for i in range(6))

_permit = st.tuples(st.just("permit"), st.lists(st.sampled_from(PEERS), min_size=1, max_size=5))
_bind = st.tuples(st.just("bind"), st.integers(0x4000, 0x4003), st.sampled_from(PEERS))
_refresh = st.tuples(st.just("refresh"), st.sampled_from([0, 30, 600, 3600]))
_wait = st.tuples(st.just("wait"), st.floats(0, 700, allow_nan=False))
_step = st.one_of(_permit, _bind, _refresh, _wait)


def _state(server: TurnServer, client: Client) -> object:
    allocation = server.allocations.get(client.five_tuple)
    if allocation is None:
        return None
    return dict(allocation.permissions), dict(allocation.channels)


def _check(server: TurnServer) -> None:
    sizes = server.state_sizes()
    for allocation in server.allocations.values():
        assert len(allocation.permissions) <= PERMISSIONS
        assert len(allocation.channels) <= CHANNELS
    held = sizes["allocations"] + sizes["permissions"] + sizes["channels"]
    assert sizes["timers_live"] == held, sizes
    assert sizes["timer_owners"] == sizes["allocations"], sizes
    assert sizes["timer_entries"] <= 2 * sizes["timers_live"] + 64, sizes


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, max_size=40))
def test_bounds_and_timers_hold_over_any_run(steps: list[tuple[object, ...]]) -> None:
    server = make_server(CONFIG)
    client = Client(server, retry_stale=True)
    client.allocate()
    for step in steps:
        before = _state(server, client)
        if step[0] == "wait":
            assert isinstance(step[1], float)
            client.now += step[1]
            run_timers(server, client.now)
            _check(server)
            continue
        if before is None:
            reply = client.allocate()
            assert error_code(reply) is None
            before = _state(server, client)
        if step[0] == "permit":
            assert isinstance(step[1], list)
            reply = client.permit(*step[1])
        elif step[0] == "bind":
            number, peer = step[1], step[2]
            assert isinstance(number, int) and isinstance(peer, tuple)
            reply = client.bind(number, peer)
        else:
            assert isinstance(step[1], int)
            reply = client.refresh(step[1])
        if error_code(reply) in (400, 508):
            assert _state(server, client) == before, "a refused request changed state"
        else:
            assert error_code(reply) is None
        _check(server)
