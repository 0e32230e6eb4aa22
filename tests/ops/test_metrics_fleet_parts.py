"""The metrics of the fleet's moving parts on a real TurnNode, without Redis: usage records
by sink, the overflow flag and its 300 answers, revocations by source; how the
supervisor of workers adds them up. The registry is read as Prometheus reads it.
(On a real redis-server: tests/fleet/test_metrics_fleet.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from prometheus_client import CollectorRegistry

from tests.helpers.scrape import scrape, series, value
from tests.helpers.turn_client import LocalNode, TurnError, start_node, udp_client
from trelay.config.revocations import FILE, FLEET, Revocation, Revocations
from trelay.ops.metrics import (
    NodeSnapshot,
    RevocationCollector,
    combine,
    counters_only,
    node_registry,
)
from trelay.turn.redirection import Alternate


@pytest.fixture
async def local() -> AsyncIterator[LocalNode]:
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery)
        nursery.cancel_scope.cancel()


async def test_usage_records_of_a_node_alone_go_to_the_log(local: LocalNode) -> None:
    registry = node_registry(local.node, ready=lambda: True, process=False)
    before = scrape(registry)
    # Served from the start, at 0 (queries and the alert resolve on a fresh node).
    assert value(before, "trelay_usage_records_total", sink="log") == 0
    assert value(before, "trelay_usage_records_total", sink="stream") == 0
    assert value(before, "trelay_usage_queue_records") == 0
    async with udp_client(local.udp) as alice:
        await alice.allocate()
        await local.node.usage.meter_pass()  # one interval record
        assert await alice.refresh(0) == 0  # and the final one
    after = scrape(registry)
    assert value(after, "trelay_usage_records_total", sink="log") == 2
    assert value(after, "trelay_usage_records_total", sink="stream") == 0
    assert value(after, "trelay_usage_queue_records") == 0


async def test_redirecting_is_one_while_allocates_get_300_and_they_are_counted(
    local: LocalNode,
) -> None:
    registry = node_registry(local.node, ready=lambda: True, process=False)
    assert value(scrape(registry), "trelay_fleet_redirecting") == 0
    # What the overflow task does when it picks a node of the fleet.
    local.node.server.redirect_new_allocations((Alternate(("127.0.0.1", 9)),))
    during = scrape(registry)
    assert value(during, "trelay_fleet_redirecting") == 1
    async with udp_client(local.udp) as bob:
        with pytest.raises(TurnError, match="300"):
            await bob.allocate()
    answered = scrape(registry)
    # The 300 is a response like any other: counted by method and code.
    assert value(answered, "trelay_requests_total", method="allocate", code="300") == 1
    local.node.server.redirect_new_allocations(())
    assert value(scrape(registry), "trelay_fleet_redirecting") == 0
    async with udp_client(local.udp) as carol:
        await carol.allocate()  # served here again


def test_workers_add_usage_records_and_any_worker_redirecting_flags_the_node() -> None:
    one = NodeSnapshot(
        redirecting={(): 1.0},
        usage_records={("log",): 1, ("stream",): 10},
        usage_queue={(): 3},
    )
    other = NodeSnapshot(
        redirecting={(): 1.0},
        usage_records={("log",): 2, ("stream",): 20},
        usage_queue={(): 4},
    )
    summed = combine((one, other))
    assert summed.redirecting == {(): 1.0}  # a flag, not "2"
    assert summed.usage_records == {("log",): 3, ("stream",): 30}
    assert summed.usage_queue == {(): 7}
    # An ended worker keeps adding its counters, not its queue or its flag.
    ended = counters_only(one)
    assert ended.usage_records == one.usage_records
    assert ended.usage_queue == {} and ended.redirecting == {}


def revocation_series(revocations: Revocations | None) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(RevocationCollector(lambda: revocations))
    found = series(scrape(registry), "trelay_revocations")
    return {dict(labels)["source"]: v for labels, v in found.items()}


def test_revocations_by_source() -> None:
    held = Revocations([Revocation("alice", 2e9), Revocation("bob", 2e9)])
    assert revocation_series(held) == {FILE: 2, FLEET: 0}
    held.add(Revocation("mallory", 2e9), FLEET)
    held.add(Revocation("alice", 2e9), FLEET)  # in both sources: counted in each
    assert revocation_series(held) == {FILE: 2, FLEET: 2}
    # No revocations file and no fleet: both sources served, at 0.
    assert revocation_series(None) == {FILE: 0, FLEET: 0}
