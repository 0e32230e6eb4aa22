"""The pieces of `trelay serve --workers N` that need no process: the `workers` setting,
the relay port split, the control messages (they cross a pipe, so they must pickle),
the supervisor's port reservation and readiness, and the counters an ended worker keeps.
"""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import pytest
import trio

from trelay.config.flags import Flags
from trelay.config.settings import ListenSettings, Settings, load_settings
from trelay.config.values import ListenAddress, SettingsError
from trelay.node.listeners import BoundAddresses, ListenError
from trelay.ops.metrics import NodeSnapshot, WorkerCollector, WorkerUsage, combine, counters_only
from trelay.process.listen_reservation import (
    reserve_listen_ports,
    split_port_range,
    worker_settings,
)
from trelay.process.worker import (
    ControlChannel,
    Drain,
    ReportRequest,
    StartFailed,
    WorkerAssignment,
    WorkerBound,
    WorkerReport,
)
from trelay.process.workers import WorkerSlot, WorkersStatus


def test_workers_defaults_to_one_and_reads_file_and_flag(tmp_path: Path) -> None:
    assert load_settings().workers == 1
    config = tmp_path / "trelay.toml"
    config.write_text("workers = 3\n")
    assert load_settings(config).workers == 3
    assert load_settings(config, Flags(workers="2")).workers == 2


@pytest.mark.parametrize("value", ["0", "65", "x", "-1"])
def test_a_bad_workers_flag_names_it(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, Flags(workers=value))
    assert caught.value.key == "--workers"


def test_a_bad_workers_key_names_it(tmp_path: Path) -> None:
    config = tmp_path / "trelay.toml"
    config.write_text('workers = "many"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert caught.value.key == "workers"


def test_a_relay_range_smaller_than_the_workers_is_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, Flags(workers="4", relay_ports="50000-50002"))
    assert caught.value.key == "relay.ports"


SPLITS = [(50000, 50009, 2), (50000, 50010, 3), (1024, 65535, 64), (50000, 50003, 4)]


@pytest.mark.parametrize(("low", "high", "count"), SPLITS)
def test_relay_port_slices_cover_the_range_without_overlap(low: int, high: int, count: int) -> None:
    slices = split_port_range((low, high), count)
    ports = [port for piece in slices if piece for port in range(piece[0], piece[1] + 1)]
    assert sorted(ports) == list(range(low, high + 1))  # every port once: no overlap, no gap
    assert all(piece is not None and piece[0] <= piece[1] for piece in slices)
    sizes = [piece[1] - piece[0] + 1 for piece in slices if piece]
    assert max(sizes) - min(sizes) <= 1
    assert split_port_range(None, count) == [None] * count


def test_worker_settings_get_their_slice_and_no_http_port() -> None:
    settings = load_settings(None, Flags(workers="2", relay_ports="50000-50009"))
    listen = ListenSettings(udp=(ListenAddress("127.0.0.1", 40000),), tcp=(), tls=())
    first, second = worker_settings(settings, listen)
    assert (first.relay.ports, second.relay.ports) == ((50000, 50004), (50005, 50009))
    assert first.listen == second.listen == listen
    assert first.http.listen == () and first.api.keys is None
    # One dev secret for all: a credential minted by the supervisor works on every worker.
    assert first.auth.dev_secret == second.auth.dev_secret == settings.auth.dev_secret


def test_control_messages_pickle() -> None:
    snapshot = NodeSnapshot(relayed_bytes={("client_to_peer", "udp"): 10.0},
                            latency={"allocate": ((1, 0, 2), 0.25)})  # fmt: skip
    messages = [
        WorkerAssignment(1, Settings(), b"n" * 32, b"u" * 32),
        Drain(3600.0),
        ReportRequest(),
        WorkerBound(1234, BoundAddresses(udp=(("127.0.0.1", 1),))),
        WorkerReport(snapshot, True, 1.5, 4096),
        StartFailed(1, "listen.udp[0]: cannot listen"),
    ]
    for message in messages:
        assert pickle.loads(pickle.dumps(message)) == message
    assert "nnnn" not in repr(messages[0])


async def test_the_control_channel_frames_messages_both_ways() -> None:
    left, right = socket.socketpair()
    a, b = ControlChannel.from_socket(left), ControlChannel.from_socket(right)
    report = WorkerReport(NodeSnapshot(channels_active={(): 2.0}), False, 0.5, 1)
    with trio.fail_after(5):
        await a.send(report)
        await a.send(Drain(2.5))
        assert await b.receive() == report
        assert await b.receive() == Drain(2.5)
        await a.stream.aclose()
        assert await b.receive() is None
    await b.stream.aclose()


def test_an_ended_worker_keeps_its_counters_not_its_gauges() -> None:
    live = NodeSnapshot(
        allocations_active={("udp",): 3.0},
        allocations_created={("udp",): 7.0},
        relayed_bytes={("client_to_peer", "udp"): 1000.0},
        relay_ports={("free",): 5.0, ("in_use",): 3.0},
        latency={"allocate": ((1, 2), 0.5)},
    )
    kept = counters_only(live)
    assert kept.allocations_active == {} and kept.relay_ports == {}
    assert kept.allocations_created == {("udp",): 7.0}
    assert kept.latency == live.latency
    after_restart = combine((kept, NodeSnapshot(relayed_bytes={("client_to_peer", "udp"): 5.0})))
    assert after_restart.relayed_bytes == {("client_to_peer", "udp"): 1005.0}


def test_per_worker_families_are_labelled_by_index() -> None:
    collector = WorkerCollector(lambda: [WorkerUsage(0, True, 2.0, 1.5, 100, 0),
                                         WorkerUsage(1, False, 0.0, 0.5, 50, 2)])  # fmt: skip
    families = {family.name: family for family in collector.collect()}
    up = {s.labels["worker"]: s.value for s in families["trelay_worker_up"].samples}
    assert up == {"0": 1.0, "1": 0.0}
    restarts = families["trelay_worker_restarts"].samples
    assert {(s.name, s.labels["worker"], s.value) for s in restarts} >= {
        ("trelay_worker_restarts_total", "1", 2.0)
    }


def test_readiness_needs_every_worker() -> None:
    slots = [WorkerSlot(0, Settings()), WorkerSlot(1, Settings())]
    status = WorkersStatus(slots=slots)
    status.mark_bound()
    slots[0].ready = True
    assert status.not_ready_reason == "worker 1 not running"
    slots[1].ready = True
    assert status.ready
    status.start_draining()
    assert status.not_ready_reason == "draining"


def test_reserving_ports_makes_port_zero_concrete_and_pairs_tcp_with_udp() -> None:
    zero = (ListenAddress("127.0.0.1", 0),)
    reservation = reserve_listen_ports(ListenSettings(udp=zero, tcp=zero, tls=zero), 2)
    held = [*reservation.probes, *(s for sockets in reservation.udp for s in sockets)]
    try:
        listen = reservation.listen
        [udp], [tcp], [tls] = listen.udp, listen.tcp, listen.tls
        assert udp.port and tls.port and tcp.port and tcp.port != tls.port
        # TCP takes UDP's port number when it is free for TCP (best effort): if it did
        # not, another process holds that port for TCP.
        if tcp.port != udp.port:
            with socket.socket() as probe, pytest.raises(OSError):
                probe.bind(("127.0.0.1", udp.port))
        # One UDP socket per worker on the port; a TCP probe for each of TCP and TLS.
        [sockets] = reservation.udp
        assert [s.getsockname() for s in sockets] == [("127.0.0.1", udp.port)] * 2
        assert len(set(reservation.udp_fds(0) + reservation.udp_fds(1))) == 2
        assert [p.getsockname()[1] for p in reservation.probes] == [tcp.port, tls.port]
        # The ports are held (SO_REUSEPORT): a plain socket cannot take them.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", udp.port))
    finally:
        reservation.close()
    assert len(held) == 4 and all(s.fileno() == -1 for s in held)


def test_a_port_in_use_is_a_listen_error_naming_its_key() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        listen = ListenSettings(udp=(ListenAddress("127.0.0.1", port),), tcp=(), tls=())
        with pytest.raises(ListenError) as caught:
            reserve_listen_ports(listen, 2)
    assert caught.value.key == "listen.udp[0]"
