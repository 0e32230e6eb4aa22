"""A neighbour cannot lock out a shared address (issue 15, deliver 6), in the pure core.

Users behind one NAT or carrier-grade NAT share a source IP. Before the fix the limit on
unauthenticated requests was one token bucket per source IP (20/s, burst 40): a neighbour
sending 200 unauthenticated requests per second from that IP kept it empty, and the
first (unsigned) Allocate of every other user behind the IP was dropped, retransmission
after retransmission (on the real node, 4 of 6 Allocates failed). The limits are now
per client transport address (IP and port), and the one per-IP bound left is on the
bytes of unauthenticated answers (`trelay.turn.rate_limit`), high enough for thousands
of users. These tests replay the issue over simulated time: a neighbour at 200 requests
per second, and 6 clients behind the same IP allocating as RFC 8489 §6.2.1 clients do
(UDP, RTO 500 ms doubling), each within a few seconds.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from tests.helpers.turn_harness import SERVER_ADDRESS, Client, make_server
from trelay.stun.attributes import Nonce, RequestedTransport
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, encode_message
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.server import TurnServer
from trelay.turn.stats import Drop

SHARED_IP = "203.0.113.7"
FLOOD_RATE = 200  # requests per second, the neighbour
STEP = 1 / FLOOD_RATE
RTO = 0.5  # RFC 8489 §6.2.1 initial retransmission timeout
DEADLINE = 4.0  # seconds a user waits for its allocation (sends at 0, 0.5, 1.5, 3.5 s)
USERS = 6
SIMULATED = 12.0  # seconds; the users start within the first 6, the flood runs throughout


class User:
    """One client behind the shared IP: an unsigned Allocate, then the signed one, each
    retransmitted (same transaction) at RTO, 2 RTO, 4 RTO... until answered."""

    def __init__(self, server: TurnServer, port: int, start: float) -> None:
        self.client = Client(server, address=(SHARED_IP, port), rng=random.Random(port))
        self.start = start
        self.done_at: float | None = None
        self._message: Message | None = None
        self._signed = False
        self._next = start
        self._rto = RTO

    def step(self, now: float) -> None:
        if self.done_at is not None or now < self._next:
            return
        if self._message is None:
            self._message = self.client.request(
                Method.ALLOCATE, RequestedTransport(17), sign=self._signed
            )
        client, message = self.client, self._message
        client.now = now
        reply = client.send(message, self._signed)
        if reply is None:  # dropped: retransmit later
            self._next, self._rto = now + self._rto, self._rto * 2
            return
        if not self._signed:  # the challenge: learn the nonce, sign from now on
            challenge = reply.get(Nonce)
            assert challenge is not None
            client.nonce = challenge.value
            self._signed, self._message, self._rto, self._next = True, None, RTO, now
            return
        assert reply.message_class is MessageClass.SUCCESS, reply
        self.done_at = now


def _anonymous(rng: random.Random) -> bytes:
    return encode_message(
        Message(Method.ALLOCATE, MessageClass.REQUEST, rng.randbytes(12), (RequestedTransport(17),))
    )


def _binding(rng: random.Random) -> bytes:
    return encode_signed(Message(Method.BINDING, MessageClass.REQUEST, rng.randbytes(12)), None)


Flood = Callable[[TurnServer, random.Random], Callable[[float], None]]


def one_port(make: Callable[[random.Random], bytes]) -> Flood:
    def flood(server: TurnServer, rng: random.Random) -> Callable[[float], None]:
        five_tuple = FiveTuple(ClientTransport.UDP, (SHARED_IP, 40000), SERVER_ADDRESS)
        return lambda now: _ignore(server.handle_message(make(rng), five_tuple, now))

    return flood


def many_ports(server: TurnServer, rng: random.Random) -> Callable[[float], None]:
    """The neighbour spreads its 200/s over 1,000 ports (a NAT maps each socket anew)."""
    ports = itertools.cycle(range(41000, 42000))

    def send(now: float) -> None:
        five_tuple = FiveTuple(ClientTransport.UDP, (SHARED_IP, next(ports)), SERVER_ADDRESS)
        _ignore(server.handle_message(_anonymous(rng), five_tuple, now))

    return send


def wrong_password(server: TurnServer, rng: random.Random) -> Callable[[float], None]:
    """Signed requests that fail the MAC (each costs the server an HMAC per candidate)."""
    bad = Client(server, address=(SHARED_IP, 40001), password="wrong", rng=rng)
    bad.authenticate()

    def send(now: float) -> None:
        bad.now = now
        _ignore(
            bad.send_raw(
                encode_signed(bad.request(Method.ALLOCATE, RequestedTransport(17)), bad.key)
            )
        )

    return send


def _ignore(_: object) -> None:
    pass


# Each flood, and what refuses it: its own source's limit, or nothing (200/s spread over
# 1,000 sockets is some 20 KB/s of challenges, far below the bound on one IP's answers).
FLOODS: dict[str, tuple[Flood, Drop | None]] = {
    "unsigned Allocates, one port": (one_port(_anonymous), Drop.RATE_LIMITED),
    "Bindings, one port": (one_port(_binding), Drop.RATE_LIMITED),
    "unsigned Allocates, 1000 ports": (many_ports, None),
    "wrong password, one port": (wrong_password, Drop.RATE_LIMITED),
}


@pytest.mark.parametrize("flood, refused_by", FLOODS.values(), ids=FLOODS.keys())
def test_a_flooding_neighbour_does_not_lock_out_the_others(
    flood: Flood, refused_by: Drop | None
) -> None:
    server = make_server()
    send = flood(server, random.Random(3))
    users = [User(server, 50000 + index, 0.5 + index * 0.9) for index in range(USERS)]
    for tick in range(int(SIMULATED * FLOOD_RATE)):
        now = tick * STEP
        send(now)
        for user in users:
            user.step(now + STEP / 2)  # between two flood requests
    late = [u.client.address for u in users if u.done_at is None or u.done_at > u.start + DEADLINE]
    assert late == []
    # What refused the neighbour is counted by reason; nothing else was refused.
    dropped = {reason: n for reason, n in server.stats.dropped.items() if n}
    if refused_by is None:
        assert dropped == {}
    else:
        assert dropped.keys() == {refused_by}
        # After its burst the neighbour got its source's rate, no more.
        assert dropped[refused_by] >= (FLOOD_RATE - server.config.unauthenticated_rate) * (
            SIMULATED - 1
        )
