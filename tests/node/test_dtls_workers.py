"""DTLS with `trelay serve --workers 2`: every worker serves the one DTLS port from the
SO_REUSEPORT socket the supervisor bound for it, and the kernel keeps each client's
4-tuple, cookie exchange and association on one worker.

`CLIENTS` DTLS clients, each from its own port, allocate and relay one ChannelData to a
peer; all of them succeed (a client whose datagrams reached two workers would fail its
cookie exchange or lose its allocation), both workers get some (the chance that all land
on one of two workers is 2 * 2**-CLIENTS), and the supervisor's metrics add up.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers.dtls_client import dtls_client
from tests.helpers.relaying_clients import clients_relaying
from tests.helpers.supervised import Samples, running_workers, total
from tests.helpers.supervised import udp_ports_of as worker_udp_ports
from tests.helpers.turn_client import peer

CLIENTS = 16


def per_worker(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["worker"]: v for (n, labels), v in samples.items() if n == name}


async def test_dtls_clients_spread_over_both_workers(tmp_path: Path) -> None:
    config = tmp_path / "trelay.toml"
    config.write_text(
        'workers = 2\n[listen]\ndtls = ["127.0.0.1:0"]\n'
        '[auth]\nusers = { alice = "wonderland" }\n'
        "[relay]\nallow_loopback_peers = true\n"
    )
    async with running_workers(tmp_path, "--config", str(config)) as node, peer() as far:
        [dtls] = node.addresses("dtls")
        assert dtls[1] != 0
        workers = node.workers()
        assert len(workers) == 2
        assert all(dtls[1] in worker_udp_ports(pid) for pid in workers)
        # Payloads of 101 bytes on, odd and even: over DTLS ChannelData is not padded.
        relaying = clients_relaying(dtls, far, CLIENTS, connect=dtls_client, base_size=101)
        async with relaying as (sent, _):
            samples = await node.metrics()
        assert total(samples, "trelay_allocations_created_total", transport="dtls") == CLIENTS
        c2p = total(
            samples, "trelay_relayed_bytes_total", direction="client_to_peer", transport="dtls"
        )
        assert c2p == sent
        active = per_worker(samples, "trelay_worker_allocations_active")
        assert sorted(active) == ["0", "1"] and sum(active.values()) == CLIENTS
        assert all(count > 0 for count in active.values()), active
        assert await node.stop(signal.SIGTERM) == 0
