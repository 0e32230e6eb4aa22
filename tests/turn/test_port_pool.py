"""RelayPortPool and its use by the server: reuse after release, even ports, 508 when
the range is exhausted, and ports coming back when Allocates fail or clients leave."""

from __future__ import annotations

import random

import pytest

from tests.helpers.turn_harness import REALM, Client, assert_error, assert_success, make_server
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import EvenPort, RequestedTransport
from trelay.stun.codes import Method
from trelay.turn.config import TurnConfig
from trelay.turn.port_pool import RelayPortPool
from trelay.turn.server import TurnServer


def pooled_server(low: int, high: int) -> TurnServer:
    return make_server(TurnConfig(realm=REALM, relay_host="198.51.100.1", port_range=(low, high)))


@pytest.mark.parametrize("low, high", [(0, 10), (10, 9), (1, 65536)])
def test_bad_range(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="bad relay port range"):
        RelayPortPool(low, high)


def test_hands_out_every_port_once_then_none() -> None:
    pool = RelayPortPool(50000, 50009, rng=random.Random(3))
    ports = [pool.acquire() for _ in range(10)]
    assert sorted(p for p in ports if p is not None) == list(range(50000, 50010))
    assert pool.in_use == pool.size == 10
    assert pool.acquire() is None and pool.acquire(even=True) is None


def test_released_port_is_reused_after_the_others() -> None:
    pool = RelayPortPool(50000, 50002, rng=random.Random(3))
    first = pool.acquire()
    assert first is not None
    pool.release(first)
    assert pool.in_use == 0
    following = [pool.acquire(), pool.acquire(), pool.acquire()]
    assert following[-1] == first  # the released port went to the back of the queue
    assert pool.acquire() is None


def test_release_is_idempotent_and_ignores_foreign_ports() -> None:
    pool = RelayPortPool(50000, 50001)
    port = pool.acquire()
    assert port is not None
    pool.release(port)
    pool.release(port)
    pool.release(12345)
    assert pool.in_use == 0
    assert {pool.acquire(), pool.acquire()} == {50000, 50001}
    assert pool.acquire() is None


def test_even_ports() -> None:
    pool = RelayPortPool(50001, 50006, rng=random.Random(5))
    evens = {pool.acquire(even=True) for _ in range(3)}
    assert evens == {50002, 50004, 50006}
    assert pool.acquire(even=True) is None  # odd ports are left, but no even one
    assert pool.acquire() is not None


def test_server_even_port_allocation_and_exhaustion() -> None:
    server = pooled_server(50001, 50003)
    c = Client(server)
    reply = c.allocate(EvenPort())
    assert_success(c, reply)
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None and relayed.port == 50002
    d = Client(server, address=("203.0.113.9", 1))
    assert_error(d, d.allocate(EvenPort()), 508, signed=True)
    assert_success(d, d.allocate())  # an odd port is still free
    assert server.ports is not None and server.ports.in_use == 2


def test_server_reuses_a_port_after_release() -> None:
    server = pooled_server(50000, 50000)
    c = Client(server)
    assert_success(c, c.allocate())
    d = Client(server, address=("203.0.113.9", 1))
    assert_error(d, d.allocate(), 508, signed=True)
    assert_success(c, c.refresh(0))
    assert server.ports is not None and server.ports.in_use == 0
    reply = d.allocate()
    assert_success(d, reply)
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None and relayed.port == 50000


def test_failed_binds_give_their_ports_back() -> None:
    server = pooled_server(50000, 50001)
    c = Client(server, auto_open=False)
    c.authenticate()
    request = c.request(Method.ALLOCATE, RequestedTransport(17))
    assert c.send(request) is None
    for _ in range(3):
        assert server.ports is not None and server.ports.in_use == 1
        server.relay_failed(c.five_tuple, 0)
    reply = c.response(server.relay_failed(c.five_tuple, 0), request)
    assert_error(c, reply, 508, signed=True)
    assert server.ports is not None and server.ports.in_use == 0
