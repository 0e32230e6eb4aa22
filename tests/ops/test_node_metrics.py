"""Every trelay_* metric after a scripted sequence on a real TurnNode on loopback.

Two clients (UDP and TCP) allocate, install a permission and channels, relay
ChannelData both ways; Send indications go to a denied peer and to a peer without
permission; ChannelData comes from a source without an allocation; a client fails
authentication; the TCP allocation is deleted and (with the autojump clock) a UDP one
expires. The registry is read as Prometheus reads it (text format, parsed back).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from tests.helpers.scrape import Samples, scrape, series, value
from tests.helpers.turn_client import (
    LocalNode,
    TurnClient,
    TurnError,
    peer,
    start_node,
    tcp_client,
    udp_client,
)
from trelay.ops.metrics import NodeSnapshot, combine, counters_only, node_registry
from trelay.stun.channel_data import encode_channel_data
from trelay.turn.stats import LATENCY_BUCKETS

DENIED_PEER = ("10.1.2.3", 9)  # private: denied by the default policy (design §6)
UNPERMITTED_PEER = ("127.0.0.2", 9)  # loopback is allowed here, but nobody permitted it


@pytest.fixture
async def local() -> AsyncIterator[LocalNode]:
    async with trio.open_nursery() as nursery:
        yield await start_node(nursery)
        nursery.cancel_scope.cancel()


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for labels, v in series(samples, name).items()}


async def test_every_metric_after_a_scripted_sequence(local: LocalNode) -> None:
    registry = node_registry(local.node, ready=lambda: True)
    async with (
        udp_client(local.udp) as a,
        tcp_client(local.tcp) as b,
        udp_client(local.udp) as stranger,
        peer() as far,
    ):
        await a.allocate()
        await b.allocate()
        await a.create_permission(far.address)
        await a.channel_bind(0x4001, far.address)
        await b.channel_bind(0x4002, far.address)
        for payload in (b"0123456789", b"abcdefghij"):
            await a.send_channel_data(0x4001, payload)
            assert (await far.receive())[0] == payload
        await b.send_channel_data(0x4002, b"12345")
        assert (await far.receive())[0] == b"12345"
        assert a.relayed is not None and b.relayed is not None
        await far.send(a.relayed, b"to-a-77")
        assert await a.receive_data() == (0x4001, b"to-a-77")
        await far.send(b.relayed, b"tob")
        assert await b.receive_data() == (0x4002, b"tob")
        await a.send_indication(DENIED_PEER, b"never")
        await a.send_indication(UNPERMITTED_PEER, b"never")
        await stranger.send_raw(encode_channel_data(0x4001, b"no allocation"))
        wrong = TurnClient(stranger.transport, password="not the password")
        with pytest.raises(TurnError, match="401"):
            await wrong.allocate()
        # The Binding below is answered after the indications and the stray ChannelData
        # (one socket, in order): they have been counted by then.
        await a.binding()
        during = scrape(registry)
        await b.refresh(0)
        after = scrape(registry)

    assert by_label(during, "trelay_allocations_active", "transport") == {
        "udp": 1, "tcp": 1, "tls": 0, "dtls": 0,
    }  # fmt: skip
    assert by_label(after, "trelay_allocations_active", "transport") == {
        "udp": 1, "tcp": 0, "tls": 0, "dtls": 0,
    }  # fmt: skip
    assert by_label(after, "trelay_allocations_created_total", "transport") == {
        "udp": 1, "tcp": 1, "tls": 0, "dtls": 0,
    }  # fmt: skip
    ended = {tuple(dict(k).values()): v for k, v in
             series(after, "trelay_allocations_ended_total").items()}  # fmt: skip
    assert ended[("deleted", "tcp")] == 1
    assert sum(ended.values()) == 1 and len(ended) == 16  # 4 transports x 4 reasons
    # A: one permission (CreatePermission and ChannelBind name the same IP), B: one.
    assert value(during, "trelay_permissions_active") == 2
    assert value(during, "trelay_channels_active") == 2
    assert value(after, "trelay_channels_active") == 1

    def relayed(kind: str, direction: str, transport: str) -> float:
        name = f"trelay_relayed_{kind}_total"
        return value(after, name, direction=direction, transport=transport)

    assert relayed("datagrams", "client_to_peer", "udp") == 2
    assert relayed("bytes", "client_to_peer", "udp") == 20
    assert relayed("datagrams", "peer_to_client", "udp") == 1
    assert relayed("bytes", "peer_to_client", "udp") == 7
    assert relayed("datagrams", "client_to_peer", "tcp") == 1
    assert relayed("bytes", "client_to_peer", "tcp") == 5
    assert relayed("datagrams", "peer_to_client", "tcp") == 1
    assert relayed("bytes", "peer_to_client", "tcp") == 3
    assert relayed("bytes", "client_to_peer", "tls") == 0

    dropped = by_label(after, "trelay_dropped_datagrams_total", "reason")
    assert dropped == {
        "denied_peer": 1, "no_permission": 1, "no_allocation": 1, "no_channel": 0,
        "malformed": 0, "send_failed": 0, "queue_full": 0, "rate_limited": 0,
        "reflection_limited": 0, "lost_framing": 0, "socket_buffer": 0,
        "bandwidth_allocation": 0, "bandwidth_identity": 0, "bandwidth_node": 0,
    }  # fmt: skip

    requests = {(dict(k)["method"], dict(k)["code"]): v
                for k, v in series(after, "trelay_requests_total").items()}  # fmt: skip
    assert requests == {
        ("allocate", "401"): 4,  # A, B and the stranger unsigned; the stranger's wrong key
        ("allocate", "200"): 2,
        ("create_permission", "200"): 1,
        ("channel_bind", "200"): 2,
        ("binding", "200"): 1,
        ("refresh", "200"): 1,
    }
    # A, B and the stranger each started with a request without credentials: three
    # challenges; only the stranger's wrong key is a failure.
    assert value(after, "trelay_auth_challenges_total") == 3
    failures = by_label(after, "trelay_auth_failures_total", "reason")
    assert failures == {
        "wrong_credentials": 1, "bad_request": 0, "stale_nonce": 0, "expired": 0, "revoked": 0,
        "lifetime_too_long": 0,
    }  # fmt: skip
    assert set(by_label(after, "trelay_quota_rejections_total", "quota").values()) == {0}
    assert not series(after, "trelay_relay_ports")  # no port range configured: absent
    handovers = by_label(after, "trelay_worker_handovers_total", "kind")
    assert handovers == {  # one process: nothing crosses to another worker
        "connection_proxied": 0, "connection_adopted": 0, "request_handed_over": 0,
        "client_captured": 0,
    }  # fmt: skip

    counts = by_label(after, "trelay_request_duration_seconds_count", "method")
    assert counts == {
        "allocate": 6, "create_permission": 1, "channel_bind": 2, "binding": 1, "refresh": 1,
    }  # fmt: skip
    assert value(after, "trelay_request_duration_seconds_sum", method="allocate") > 0
    buckets = [
        value(after, "trelay_request_duration_seconds_bucket", method="allocate", le=le)
        for le in [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 6  # cumulative, ending at count

    assert value(after, "trelay_ready") == 1
    assert value(after, "trelay_draining") == 0
    [build] = series(after, "trelay_build_info")
    assert dict(build).keys() == {"version", "python"}
    # This process's CPU time (the collector reads /proc in clock ticks, rounded down).
    assert 0 < value(after, "process_cpu_seconds_total") <= time.process_time()


async def test_an_allocation_that_expires_is_counted_as_expired(
    local: LocalNode, autojump_clock: trio.testing.MockClock
) -> None:
    registry = node_registry(local.node, ready=lambda: False, process=False)
    async with udp_client(local.udp) as client:
        await client.allocate(lifetime=600)
        assert value(scrape(registry), "trelay_allocations_active", transport="udp") == 1
        await trio.sleep(601)
    samples = scrape(registry)
    assert value(samples, "trelay_allocations_active", transport="udp") == 0
    assert value(samples, "trelay_allocations_ended_total", transport="udp", reason="expired") == 1
    assert value(samples, "trelay_ready") == 0
    assert not [name for name, _ in samples if name.startswith("process_")]


async def test_drain_counts_the_allocations_it_ends_as_shutdown(local: LocalNode) -> None:
    registry = node_registry(local.node, ready=lambda: True, process=False)
    async with udp_client(local.udp) as client:
        await client.allocate()
        assert value(scrape(registry), "trelay_draining") == 0
        await local.node.drain(0)
    samples = scrape(registry)
    assert value(samples, "trelay_draining") == 1
    assert value(samples, "trelay_allocations_ended_total", transport="udp", reason="shutdown") == 1
    assert value(samples, "trelay_allocations_active", transport="udp") == 0


def test_draining_is_a_flag_across_workers_not_a_sum() -> None:
    def worker(draining: float) -> NodeSnapshot:
        return NodeSnapshot(draining={(): draining}, auth_challenges={(): 2.0})

    both = combine((worker(1.0), worker(1.0)))
    assert both.draining == {(): 1.0}
    assert both.auth_challenges == {(): 4.0}  # counters still add up
    assert combine((worker(0.0), worker(1.0))).draining == {(): 1.0}
    assert combine((worker(0.0), worker(0.0))).draining == {(): 0.0}
    assert counters_only(worker(1.0)).draining == {}
