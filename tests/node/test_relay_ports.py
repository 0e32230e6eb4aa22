"""`trelay.node.relay_ports.ephemeral_range`: read from the file, at most once per
`EPHEMERAL_RANGE_SECONDS` (issue 13 part 4), and Linux's default when the file is
missing or says nothing usable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trelay.node import relay_ports
from trelay.node.relay_ports import DEFAULT_EPHEMERAL_RANGE, bind_relay, ephemeral_range


def test_the_range_is_read_once_then_kept_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    path = tmp_path / "ip_local_port_range"
    path.write_text("40000\t40999\n")
    assert ephemeral_range(path) == (40000, 40999)
    path.write_text("50000\t50999\n")  # a sysctl change
    clock[0] += relay_ports.EPHEMERAL_RANGE_SECONDS / 2
    assert ephemeral_range(path) == (40000, 40999)  # not read again yet
    clock[0] += relay_ports.EPHEMERAL_RANGE_SECONDS
    assert ephemeral_range(path) == (50000, 50999)  # seen once the time is up


@pytest.mark.parametrize("text", [None, "", "9 8", "0 100", "1 70000", "a b"])
def test_an_unusable_file_gives_the_default(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "ip_local_port_range"
    if text is not None:
        path.write_text(text)
    assert ephemeral_range(path) == DEFAULT_EPHEMERAL_RANGE


def test_an_even_port_comes_from_the_range_given() -> None:
    sock, held = bind_relay("127.0.0.1", 0, even=True, reserve_next=True, ports=(41000, 41999))
    try:
        assert held is not None
        port = sock.getsockname()[1]
        assert port % 2 == 0 and 41000 <= port < 41999
        assert held.getsockname()[1] == port + 1
    finally:
        sock.close()
        if held is not None:
            held.close()
