"""`[quotas]` limits on requests that do not authenticate: read, checked, live on reload.

The four keys (`unauthenticated_per_second`, `unauthenticated_burst`,
`reflection_bytes_per_second`, `reflection_burst_bytes`) default to the core's values,
reach `TurnConfig` through `trelay.node.turn_setup.turn_config`, are refused naming the
key when they are not a finite number in range, and change live on reload.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trelay.config.flags import Flags
from trelay.config.reload import Reload, reload_settings
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError
from trelay.node.turn_setup import turn_config
from trelay.turn.config import TurnConfig

LIMITS = (
    "[quotas]\nunauthenticated_per_second = 2.5\nunauthenticated_burst = 5\n"
    "reflection_bytes_per_second = 65536\nreflection_burst_bytes = 2048\n"
)


def write(directory: Path, text: str) -> Path:
    path = directory / "trelay.toml"
    path.write_text(text)
    return path


def limits(config: TurnConfig) -> tuple[float, float, float, float]:
    return (
        config.unauthenticated_rate,
        config.unauthenticated_burst,
        config.reflection_rate,
        config.reflection_burst,
    )


def test_the_defaults_are_the_cores(tmp_path: Path) -> None:
    assert limits(turn_config(load_settings(write(tmp_path, "")))) == limits(TurnConfig())
    assert limits(TurnConfig()) == (20.0, 40.0, 131072.0, 262144.0)


def test_values_reach_the_core(tmp_path: Path) -> None:
    config = turn_config(load_settings(write(tmp_path, LIMITS)))
    assert limits(config) == (2.5, 5.0, 65536.0, 2048.0)


@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        ("unauthenticated_per_second = 0", "unauthenticated_per_second", "> 0"),
        ("unauthenticated_per_second = -1.0", "unauthenticated_per_second", "> 0"),
        ("unauthenticated_per_second = nan", "unauthenticated_per_second", "finite"),
        ("unauthenticated_per_second = inf", "unauthenticated_per_second", "finite"),
        ('unauthenticated_per_second = "20/s"', "unauthenticated_per_second", "a number"),
        ("unauthenticated_burst = 0", "unauthenticated_burst", ">= 1"),
        ("unauthenticated_burst = 0.5", "unauthenticated_burst", ">= 1"),
        ("unauthenticated_burst = true", "unauthenticated_burst", "a number"),
        ("reflection_bytes_per_second = 0", "reflection_bytes_per_second", "> 0"),
        ("reflection_bytes_per_second = [1]", "reflection_bytes_per_second", "a number"),
        ("reflection_burst_bytes = 1279", "reflection_burst_bytes", ">= 1280"),
        ("reflection_burst = 4096", "reflection_burst", "unknown"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(
    tmp_path: Path, line: str, key: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, f"[quotas]\n{line}\n"))
    assert caught.value.key == f"quotas.{key}"
    assert problem in caught.value.problem


def test_a_reload_changes_them_live(tmp_path: Path) -> None:
    config = write(tmp_path, "")
    current = load_settings(config)
    config.write_text(LIMITS)
    result = reload_settings(current, config, Flags())
    assert isinstance(result, Reload), result
    assert result.restart == ()
    assert sorted(str(change) for change in result.live) == [
        "quotas.reflection_burst_bytes: 262144.0 -> 2048.0",
        "quotas.reflection_bytes_per_second: 131072.0 -> 65536.0",
        "quotas.unauthenticated_burst: 40.0 -> 5.0",
        "quotas.unauthenticated_per_second: 20.0 -> 2.5",
    ]
    assert limits(turn_config(result.settings)) == (2.5, 5.0, 65536.0, 2048.0)
