"""`[bandwidth]`: read, checked by key, the default burst, the node total split between
workers, live on reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.settings_file import write
from trelay.config.bandwidth_settings import BandwidthSettings
from trelay.config.flags import Flags
from trelay.config.reload import Reload, reload_settings
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError
from trelay.node.turn_setup import turn_config
from trelay.turn.bandwidth import MIN_BURST, BandwidthLimits, Rate


def test_unlimited_by_default() -> None:
    settings = load_settings()
    assert settings.bandwidth == BandwidthSettings()
    assert not settings.bandwidth.limits().any
    assert turn_config(settings).bandwidth == BandwidthLimits()


def test_read_with_bursts_defaulting_to_one_second(tmp_path: Path) -> None:
    text = (
        "[bandwidth]\nper_allocation = 250000\nper_allocation_burst = 500000\n"
        "per_identity = 1000\nnode_total = 125000000\n"
    )
    settings = load_settings(write(tmp_path, text))
    limits = settings.bandwidth.limits()
    assert limits.per_allocation == Rate(250_000, 500_000)
    assert limits.per_identity == Rate(1000, MIN_BURST)  # one second, at least a datagram
    assert limits.node_total == Rate(125_000_000, 125_000_000)
    assert turn_config(settings).bandwidth == limits


def test_the_node_total_is_split_between_workers(tmp_path: Path) -> None:
    text = "workers = 4\n[bandwidth]\nnode_total = 4000000\nper_identity = 8000\n"
    settings = load_settings(write(tmp_path, text))
    limits = turn_config(settings).bandwidth
    assert limits.node_total == Rate(1_000_000, 1_000_000)
    assert limits.per_identity == Rate(8000, 8000)  # per worker, not split


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("per_allocation = -1", "bandwidth.per_allocation", ">= 0"),
        ('per_identity = "1M"', "bandwidth.per_identity", "a number"),
        ("node_total = true", "bandwidth.node_total", "a number"),
        ("node_total = inf", "bandwidth.node_total", "finite"),
        ("per_allocation = 1000\nper_allocation_burst = 100", "bandwidth.per_allocation_burst",
         ">= 1500"),
        ("per_identity_burst = 5000", "bandwidth.per_identity_burst", "needs bandwidth."),
        ("per_flow = 10", "bandwidth.per_flow", ""),
    ],
)  # fmt: skip
def test_bad_values_name_their_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(write(tmp_path, f"[bandwidth]\n{text}\n"))
    assert raised.value.key == key
    assert problem in str(raised.value)


def test_a_reload_changes_them_live(tmp_path: Path) -> None:
    path = write(tmp_path, "[bandwidth]\nper_allocation = 10000\n")
    current = load_settings(path)
    path.write_text("[bandwidth]\nper_allocation = 20000\nnode_total = 1000000\n")
    reload = reload_settings(current, path, Flags())
    assert isinstance(reload, Reload)
    assert reload.applies("bandwidth.per_allocation") and reload.applies("bandwidth.node_total")
    assert not reload.restart
    assert reload.settings.bandwidth.per_allocation == 20_000
