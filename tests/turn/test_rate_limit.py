"""The limits on requests that do not authenticate (`trelay.turn.rate_limit`): the
buckets themselves, and the bound on what one IP gets under a flood with forged sources
(the reflection bound, issue 15)."""

from __future__ import annotations

import random

import pytest

from tests.helpers.turn_harness import SERVER_ADDRESS, Client, make_server
from trelay.stun.attributes import RequestedTransport
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, encode_message
from trelay.turn.actions import SendToClient
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.config import TurnConfig
from trelay.turn.rate_limit import MAX_SOURCES, RateLimiter, UnauthenticatedLimits
from trelay.turn.stats import Drop

# --- the buckets --------------------------------------------------------------------


def test_bucket_spends_and_refills() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.allow("ip", 0) for _ in range(4)] == [True, True, True, False]
    assert not limiter.allow("ip", 0.25)  # half a token back
    assert limiter.allow("ip", 0.75)  # one token back since the last spend
    assert limiter.allow("other", 0)  # per key
    limiter.prune(100)
    assert len(limiter) == 0


def test_bucket_costs_in_units() -> None:
    limiter = RateLimiter(rate=100, burst=250)  # bytes
    assert limiter.allow("ip", 0, 200)
    assert not limiter.allow("ip", 0, 100)  # 50 left
    assert limiter.admits("ip", 0, 50) and not limiter.admits("ip", 0, 51)
    assert limiter.allow("ip", 1, 150)  # 100 more after a second


def test_admits_spends_nothing_and_charge_goes_into_debt() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    assert limiter.admits("a", 0) and len(limiter) == 0
    for _ in range(5):
        limiter.charge("a", 0)  # failures already paid for with work
    assert not limiter.admits("a", 0, cost=0)  # 3 beyond the burst
    assert not limiter.admits("a", 2.9, cost=0)
    assert limiter.admits("a", 3, cost=0)  # paid back to the burst
    assert not limiter.allow("a", 3)  # but no token to spend yet
    assert limiter.allow("a", 4)


def test_retune_keeps_the_buckets_and_applies_the_new_rate_and_burst() -> None:
    """A reload: the debt in time is kept (a key full again at its `tat`), spending
    and refilling follow the new rate, up to the new burst."""
    limiter = RateLimiter(rate=1, burst=2)
    assert [limiter.allow("spent", 0) for _ in range(3)] == [True, True, False]
    limiter.retune(rate=2, burst=4)  # the bucket of "spent" is full again at t=2
    assert (limiter.rate, limiter.burst, len(limiter)) == (2, 4, 1)
    # At t=0: the new burst (2 s of tolerance at 2/s) less the 2 s still owed: nothing.
    assert not limiter.allow("spent", 0)
    assert [limiter.allow("fresh", 0) for _ in range(5)] == [True] * 4 + [False]
    # At t=1: "spent" owes 1 s, so 1 s of tolerance is left: 2 tokens at the new rate.
    assert [limiter.allow("spent", 1) for _ in range(3)] == [True, True, False]
    with pytest.raises(ValueError, match="rate"):
        limiter.retune(rate=0, burst=4)
    assert (limiter.rate, limiter.burst) == (2, 4)


def test_unauthenticated_limits_retune_both_tables_or_neither() -> None:
    limits = UnauthenticatedLimits(20, 40, 131072, 262144)
    with pytest.raises(ValueError, match="rates"):
        limits.retune(10, 20, 65536, 0)
    assert (limits.per_source.rate, limits.per_destination.burst) == (20, 262144)
    limits.retune(10, 20, 65536, 2048)
    assert (limits.per_source.rate, limits.per_source.burst) == (10, 20)
    assert (limits.per_destination.rate, limits.per_destination.burst) == (65536, 2048)


def test_table_is_bounded_least_recently_used_first() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_sources=3)
    for index in range(10):
        limiter.allow(f"ip{index}", 0)
    assert len(limiter) == 3
    limiter.allow("ip7", 0)  # touched: now the most recent
    limiter.allow("new", 0)  # evicts ip8, the least recently used
    assert not limiter.allow("ip7", 0)  # still there, still empty
    assert limiter.allow("ip8", 0)  # forgotten: starts full


def test_prune_forgets_refilled_buckets_at_most_once_a_second() -> None:
    limiter = RateLimiter(rate=1, burst=10)
    limiter.allow("a", 0)  # full again at 1
    limiter.allow("b", 0, 5)  # full again at 5
    limiter.prune(2)
    assert len(limiter) == 1
    limiter.allow("c", 2)
    limiter.prune(6.5)
    assert len(limiter) == 0
    limiter.allow("d", 6.5, 0.5)  # full again at 7
    limiter.prune(7.4)  # within a second of the last scan: not scanned
    assert len(limiter) == 1
    limiter.prune(7.5)
    assert len(limiter) == 0


@pytest.mark.parametrize(
    "rate, burst, sources", [(0, 1, 1), (1, 0.5, 1), (float("nan"), 1, 1), (1, 1, 0)]
)
def test_arguments(rate: float, burst: float, sources: int) -> None:
    with pytest.raises(ValueError, match=r"rate|max_sources"):
        RateLimiter(rate, burst, sources)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"unauthenticated_rate": 0.0}, "unauthenticated"),
        ({"unauthenticated_burst": 0.5}, "unauthenticated"),
        ({"reflection_rate": float("nan")}, "reflection"),
        ({"reflection_burst": 1279.0}, "reflection"),
    ],
)
def test_config_refuses_limits_that_cannot_work(fields: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TurnConfig(**fields)  # type: ignore[arg-type]


def test_stream_answers_are_not_reflection() -> None:
    limits = UnauthenticatedLimits(rate=1, burst=1, reflection_rate=100, reflection_burst=100)
    udp = FiveTuple(ClientTransport.UDP, ("192.0.2.9", 1), SERVER_ADDRESS)
    tcp = FiveTuple(ClientTransport.TCP, ("192.0.2.9", 2), SERVER_ADDRESS)
    assert limits.answer(udp, 100, 0) is None
    assert limits.answer(udp, 1, 0) is Drop.REFLECTION_LIMITED
    assert limits.request(FiveTuple(ClientTransport.UDP, ("192.0.2.9", 3), SERVER_ADDRESS), 0) is (
        Drop.REFLECTION_LIMITED
    )
    assert limits.request(tcp, 0) is None  # the handshake proved the source
    assert limits.answer(tcp, 1000, 0) is None
    assert limits.request(tcp, 0) is Drop.RATE_LIMITED  # its own source's limit holds
    assert len(limits) == 3  # two sources that asked, one destination answered


# --- reflection: what one IP gets from forged requests ---------------------------------

VICTIM = "198.51.100.77"
FLOOD_RATE = 10_000  # forged requests per second, each from a new port of the victim
SECONDS = 5


def _forged(rng: random.Random, kind: int) -> bytes:
    tid = rng.randbytes(12)
    if kind == 0:  # the 401 challenge, the largest answer (5x)
        message = Message(Method.ALLOCATE, MessageClass.REQUEST, tid, (RequestedTransport(17),))
        return encode_message(message)
    if kind == 1:  # a Binding success (2.6x)
        return encode_signed(Message(Method.BINDING, MessageClass.REQUEST, tid), None)
    # a method the core does not serve: 400
    return encode_message(Message(0x00B, MessageClass.REQUEST, tid))


def test_reflection_to_one_address_stays_bounded() -> None:
    server = make_server()
    config = server.config
    rng = random.Random(5)
    sent: list[tuple[float, int]] = []  # (when, bytes) sent to the victim
    for tick in range(FLOOD_RATE * SECONDS):
        now = tick / FLOOD_RATE
        five_tuple = FiveTuple(ClientTransport.UDP, (VICTIM, 1024 + tick % 60000), SERVER_ADDRESS)
        for action in server.handle_message(_forged(rng, tick % 3), five_tuple, now):
            assert isinstance(action, SendToClient) and action.five_tuple.client[0] == VICTIM
            sent.append((now, len(action.data)))
        if tick % FLOOD_RATE == 0:
            server.handle_timer(now)
    total = sum(size for _, size in sent)
    # At most the burst and the rate over the time: the bound holds to the byte.
    assert total <= config.reflection_burst + config.reflection_rate * SECONDS
    # Every second after the burst, too: no window gets more than burst + rate.
    for start in range(SECONDS):
        window = sum(size for when, size in sent if start <= when < start + 1)
        assert window <= config.reflection_burst + config.reflection_rate
    # The bound is what refused the rest (each forged port is new: no source limit
    # applies), and it let through most of what it allows (it is not a lower cap).
    dropped = server.stats.dropped
    assert dropped[Drop.REFLECTION_LIMITED] == FLOOD_RATE * SECONDS - len(sent)
    assert dropped[Drop.RATE_LIMITED] == 0
    assert total >= config.reflection_rate * SECONDS * 0.9
    # The tables held a key per forged port, within their bound.
    assert len(server.limits.per_source) <= MAX_SOURCES
    assert len(server.limits.per_destination) == 1


def test_a_client_behind_a_reflected_address_still_allocates_over_tcp() -> None:
    """Past the UDP bound an IP's users can still reach the server over TCP (and any
    user who holds a nonce, over UDP too: signed requests are not refused by it)."""
    server = make_server(TurnConfig(realm="example.org", relay_host="198.51.100.1",
                                    reflection_rate=1, reflection_burst=1280))  # fmt: skip
    udp = Client(server, address=(VICTIM, 1))
    udp.authenticate()
    for port in range(2, 40):  # forged: empty the victim's UDP budget
        Client(server, address=(VICTIM, port)).send_raw(_forged(random.Random(port), 0))
    late = Client(server, address=(VICTIM, 50))
    assert late.send_raw(_forged(random.Random(1), 0)) == []
    assert server.stats.dropped[Drop.REFLECTION_LIMITED] > 0
    tcp = Client(server, address=(VICTIM, 60), transport=ClientTransport.TCP)
    assert tcp.allocate().message_class is MessageClass.SUCCESS
    assert udp.allocate().message_class is MessageClass.SUCCESS  # it had its nonce
