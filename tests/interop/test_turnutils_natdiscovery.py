"""coturn's `turnutils_natdiscovery` (RFC 5780) against `trelay serve` with two loopback IPs.

The node runs as the installed command with `[nat_discovery]` on 127.0.0.1 (primary)
and 127.0.0.2 (alternate), once with one process and once with two workers (the
supervisor holds the four UDP addresses' sockets). natdiscovery's mapping test (-m)
sends to the primary and then to OTHER-ADDRESS's IP; its filtering test (-f) asks for
answers from the changed IP and port (CHANGE-REQUEST). Between two loopback addresses
there is no NAT, so it must report endpoint-independent mapping and filtering, which it
can only do when every answer came back, from the address RESPONSE-ORIGIN names. With
-P every request carries 1500 bytes of PADDING. A node without the section gives
natdiscovery no OTHER-ADDRESS: it reports no behaviour at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.helpers.nat_ports import ALTERNATE_HOST, PRIMARY_HOST, two_ports
from tests.helpers.trelay_process import running_trelay

NATDISCOVERY = shutil.which("turnutils_natdiscovery")
TIMEOUT = 60.0

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        NATDISCOVERY is None,
        reason="coturn's turnutils_natdiscovery is needed (apt-get install coturn)",
    ),
    pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.2 is loopback on Linux"),
]

MAPPING = "NAT with Endpoint Independent Mapping!"
FILTERING = "NAT with Endpoint Independent Filtering!"


def write_config(tmp_path: Path, port: int, alternate_port: int | None, workers: int) -> Path:
    section = (
        f'[nat_discovery]\nenabled = true\nalternate_host = "{ALTERNATE_HOST}"\n'
        f"alternate_port = {alternate_port}\n"
        if alternate_port is not None
        else ""
    )
    path = tmp_path / "trelay.toml"
    path.write_text(
        f"workers = {workers}\n"
        f'[listen]\nudp = ["{PRIMARY_HOST}:{port}"]\ntcp = []\ntls = []\n'
        "[http]\nlisten = []\n" + section
    )
    return path


async def natdiscovery(port: int, *options: str) -> str:
    """Run natdiscovery against the primary address; its output (it exits 0 either way)."""
    assert NATDISCOVERY is not None
    command = [NATDISCOVERY, *options, "-p", str(port), PRIMARY_HOST]
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            command, capture_stdout=True, stderr=subprocess.STDOUT, check=False
        )
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output
    return output


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("padding", [False, True], ids=["plain", "padded"])
async def test_natdiscovery_reports_endpoint_independent_behaviour(
    tmp_path: Path, workers: int, padding: bool
) -> None:
    port, alternate_port = two_ports()
    config = write_config(tmp_path, port, alternate_port, workers)
    async with running_trelay(tmp_path, "--config", str(config)):
        output = await natdiscovery(port, "-m", "-f", *(["-P"] if padding else []))
    assert MAPPING in output, output
    assert FILTERING in output, output
    # The filtering test's answer to "change IP and port" came from the alternate
    # address, and every answer named the alternate as OTHER-ADDRESS of the primary.
    assert f"Response origin: : {ALTERNATE_HOST}:{alternate_port}" in output, output
    assert f"Other addr: : {ALTERNATE_HOST}:{alternate_port}" in output, output


async def test_natdiscovery_finds_no_behaviour_without_the_feature(tmp_path: Path) -> None:
    port, _ = two_ports()
    config = write_config(tmp_path, port, None, 1)
    async with running_trelay(tmp_path, "--config", str(config)):
        output = await natdiscovery(port, "-m", "-f")
    assert "UDP reflexive addr" in output, output  # the node answered its Bindings
    assert "Other addr" not in output and "NAT with" not in output, output


@pytest.mark.parametrize(
    "options",
    [
        # Mapping lifetime: after 1 s, a request from a second socket with RESPONSE-PORT
        # set to the first socket's port; its answer must reach the first socket.
        ("-t", "-T", "1"),
        # Collision: the same local port on a second loopback IP.
        ("-c", "-A", "127.0.0.3"),
    ],
    ids=["lifetime", "collision"],
)
async def test_natdiscovery_lifetime_and_collision_tests_get_every_answer(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    port, alternate_port = two_ports()
    config = write_config(tmp_path, port, alternate_port, 1)
    async with running_trelay(tmp_path, "--config", str(config)):
        output = await natdiscovery(port, *options)
    assert "RFC 5780 response 1" in output, output
    assert "RFC 5780 response 2" in output, output
    assert "timeout" not in output, output
