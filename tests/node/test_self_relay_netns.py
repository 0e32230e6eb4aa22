"""Self-relay by any address of the host (issue 15, design §6), on real sockets.

A wildcard listener answers at every local address, so the peer policy must refuse a
ChannelBind to 127.0.0.2:<listen port> and to any other address of the host with that
port, not only the literal 127.0.0.1. The probe (`self_relay_probe`) runs in a private
network namespace (`unshare -n`, only `lo`), so that a permission wrongly granted can
never send a datagram off the machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


def _unshare_command() -> list[str] | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    for command in (["unshare", "-n"], ["unshare", "-rn"]):
        probe = subprocess.run([*command, "true"], capture_output=True, timeout=10, check=False)
        if probe.returncode == 0:
            return command
    return None


UNSHARE = _unshare_command()


@pytest.mark.skipif(UNSHARE is None, reason="no private network namespace here (unshare -n)")
def test_a_wildcard_listener_is_refused_as_a_peer_at_every_local_address() -> None:
    assert UNSHARE is not None
    done = subprocess.run(
        [*UNSHARE, sys.executable, "-m", "tests.node.self_relay_probe"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
