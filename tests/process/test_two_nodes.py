"""Two relay nodes (two processes) that share only a TURN REST secret accept the same
credentials: nothing else (no database, no nonce store) is shared between them."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.helpers.trelay_process import allocate_with, running_trelay, stop
from trelay.turn.credential_sources import rest_password

SECRET = "shared-by-every-node-and-the-app-backend"


async def test_two_nodes_sharing_a_secret_accept_one_credential(tmp_path: Path) -> None:
    username = f"{int(time.time()) + 3600}:alice"
    password = rest_password(SECRET.encode(), username)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        running_trelay(tmp_path / "a", "--secret", SECRET) as first,
        running_trelay(tmp_path / "b", "--secret", SECRET) as second,
    ):
        assert first.process.pid != second.process.pid
        for node in (first, second):
            [udp] = node.addresses("udp")
            await allocate_with(udp, username, password)
        for node in (first, second):
            assert await stop(node, signal.SIGTERM) == 0
