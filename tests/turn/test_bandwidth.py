"""Bandwidth buckets (`trelay.turn.bandwidth`): the rate bound over any interval, a sender
within the rate never refused, all-or-nothing across levels, identity buckets shared and
forgotten, reload."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trelay.turn.bandwidth import (
    MIN_BURST,
    Bandwidth,
    BandwidthLimits,
    Bucket,
    Meter,
    Rate,
    SingleMeter,
)
from trelay.turn.stats import Drop


class Holder:
    """What a runtime's senders look like to `Bandwidth`."""

    def __init__(self) -> None:
        self.meter: Meter | None = None


rates = st.floats(min_value=100.0, max_value=1e7)
bursts = st.floats(min_value=MIN_BURST, max_value=1e6)
# (seconds since the previous datagram, its size)
traffic = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=0.5), st.integers(min_value=0, max_value=1500)),
    min_size=1,
    max_size=200,
)


@settings(max_examples=200)
@given(rate=rates, burst=bursts, arrivals=traffic)
def test_never_more_than_rate_times_t_plus_burst(
    rate: float, burst: float, arrivals: list[tuple[float, int]]
) -> None:
    meter = Meter((Bucket(Rate(rate, burst), Drop.BANDWIDTH_ALLOCATION),))
    now = 1000.0
    passed: list[tuple[float, int]] = []
    for gap, size in arrivals:
        now += gap
        if meter.spend(size, now) is None:
            passed.append((now, size))
    # Every interval [passed[i].time, passed[j].time]: what passed in it.
    for i in range(len(passed)):
        total = 0
        for j in range(i, len(passed)):
            total += passed[j][1]
            elapsed = passed[j][0] - passed[i][0]
            assert total <= rate * elapsed + burst + 1e-6 * (total + burst)


@settings(max_examples=200)
@given(rate=rates, burst=bursts, sizes=st.lists(st.integers(0, MIN_BURST), min_size=1))
def test_within_the_rate_everything_passes(rate: float, burst: float, sizes: list[int]) -> None:
    """Datagrams spaced by their own cost at the rate (and each within the burst) all pass."""
    meter = Meter((Bucket(Rate(rate, burst), Drop.BANDWIDTH_ALLOCATION),))
    now = 50.0
    for size in sizes:
        assert meter.spend(size, now) is None
        now += size / rate * (1 + 1e-9)


@settings(max_examples=100)
@given(rate=rates, burst=bursts, arrivals=traffic)
def test_the_one_bucket_meter_decides_as_the_general_one(
    rate: float, burst: float, arrivals: list[tuple[float, int]]
) -> None:
    single = SingleMeter((Bucket(Rate(rate, burst), Drop.BANDWIDTH_NODE),))
    general = Meter((Bucket(Rate(rate, burst), Drop.BANDWIDTH_NODE),))
    now = 7.0
    for gap, size in arrivals:
        now += gap
        assert single.spend(size, now) == general.spend(size, now)


def test_bandwidth_gives_the_one_bucket_meter_when_one_level_is_set() -> None:
    holder = Holder()
    Bandwidth(BandwidthLimits(per_allocation=Rate(1000, 2000))).open(holder, "alice")
    assert type(holder.meter) is SingleMeter
    Bandwidth(BandwidthLimits(Rate(1000, 2000), node_total=Rate(1000, 2000))).open(holder, "a")
    assert type(holder.meter) is Meter


def test_a_full_bucket_passes_its_burst_then_refuses_until_it_refills() -> None:
    meter = Meter((Bucket(Rate(10_000, 20_000), Drop.BANDWIDTH_ALLOCATION),))
    passed = sum(1 for _ in range(100) if meter.spend(1000, 0.0) is None)
    assert passed == 20
    assert meter.spend(1000, 0.0) is Drop.BANDWIDTH_ALLOCATION
    assert meter.spend(1000, 0.1) is None  # 0.1 s at 10 kB/s: 1000 bytes
    assert meter.spend(1000, 0.1) is Drop.BANDWIDTH_ALLOCATION


def test_all_or_nothing_and_the_refusing_level_is_named() -> None:
    own = Bucket(Rate(1e6, 10_000), Drop.BANDWIDTH_ALLOCATION)
    node = Bucket(Rate(1e6, 3000), Drop.BANDWIDTH_NODE)
    meter = Meter((own, node))
    assert meter.spend(2000, 0.0) is None
    assert meter.spend(2000, 0.0) is Drop.BANDWIDTH_NODE
    # The refused datagram spent nothing from the allocation's bucket either.
    assert own.fits(8000, 0.0)
    assert not own.fits(8001, 0.0)


def test_delay_is_when_it_fits() -> None:
    meter = Meter((Bucket(Rate(1000, MIN_BURST), Drop.BANDWIDTH_ALLOCATION),))
    assert meter.delay(1500, 0.0) == 0.0
    meter.charge(1500, 0.0)
    wait = meter.delay(500, 0.0)
    assert wait == pytest.approx(0.5)
    assert meter.spend(500, wait) is None
    # A cost over the burst is waited for as the burst (it could never fit otherwise).
    meter.charge(10_000, 1.0)
    assert meter.delay(10_000, 1.0) == pytest.approx(11.0)  # full again at 12


def test_no_limit_no_meter() -> None:
    bandwidth = Bandwidth(BandwidthLimits())
    holder = Holder()
    bandwidth.open(holder, "alice")
    assert holder.meter is None


def test_identity_bucket_is_shared_and_goes_with_its_last_allocation() -> None:
    limits = BandwidthLimits(per_identity=Rate(1000, 4000))
    bandwidth = Bandwidth(limits)
    first, second, other = Holder(), Holder(), Holder()
    bandwidth.open(first, "alice")
    bandwidth.open(second, "alice")
    bandwidth.open(other, "bob")
    assert first.meter is not None and second.meter is not None and other.meter is not None
    assert first.meter.spend(3000, 0.0) is None
    assert second.meter.spend(2000, 0.0) is Drop.BANDWIDTH_IDENTITY  # alice's 4000 shared
    assert other.meter.spend(3000, 0.0) is None  # bob's own
    assert bandwidth.identities() == 2
    bandwidth.close(first)
    assert first.meter is None and bandwidth.identities() == 2
    bandwidth.close(second)
    bandwidth.close(other)
    assert bandwidth.identities() == 0 and len(bandwidth) == 0
    again = Holder()
    bandwidth.open(again, "alice")  # a new bucket, full
    assert again.meter is not None and again.meter.spend(4000, 0.0) is None


def test_node_total_is_shared_by_everybody() -> None:
    bandwidth = Bandwidth(BandwidthLimits(node_total=Rate(1000, 5000)))
    a, b = Holder(), Holder()
    bandwidth.open(a, "alice")
    bandwidth.open(b, "bob")
    assert a.meter is not None and b.meter is not None
    assert a.meter.spend(4000, 0.0) is None
    assert b.meter.spend(2000, 0.0) is Drop.BANDWIDTH_NODE


def test_retune_keeps_debt_turns_levels_on_and_off() -> None:
    bandwidth = Bandwidth(BandwidthLimits(per_allocation=Rate(1000, 2000)))
    holder = Holder()
    bandwidth.open(holder, "alice")
    assert holder.meter is not None and holder.meter.spend(2000, 0.0) is None
    # A higher rate: the debt (full again at t=2) is kept, refills at the new rate.
    bandwidth.retune(BandwidthLimits(per_allocation=Rate(100_000, 2000)))
    assert holder.meter is not None
    assert holder.meter.spend(100, 0.0) is Drop.BANDWIDTH_ALLOCATION
    assert holder.meter.spend(1500, 2.0) is None
    # Off: no meter at all (no cost on the data path).
    bandwidth.retune(BandwidthLimits())
    assert holder.meter is None
    # An identity limit turned on: a full bucket, shared.
    bandwidth.retune(BandwidthLimits(per_identity=Rate(1000, 3000)))
    assert holder.meter is not None
    assert holder.meter.spend(3000, 2.0) is None
    assert holder.meter.spend(100, 2.0) is Drop.BANDWIDTH_IDENTITY


def test_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="burst"):
        Rate(1000, 100)
    with pytest.raises(ValueError, match="bytes_per_second"):
        Rate(-1, MIN_BURST)
    with pytest.raises(ValueError, match="bytes_per_second"):
        Rate(float("nan"), MIN_BURST)
    assert not Rate().limited
