"""`[api] fleet_keys` needs a fleet: without `[fleet]` (or `--redis-url`) the settings are
refused, naming `api.fleet_keys`, instead of a node that starts and ignores it."""

from __future__ import annotations

from pathlib import Path

import pytest

from trelay.config.api_keys import create_key
from trelay.config.flags import Flags
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError

SECRET = '[auth]\nsecrets = ["0123456789abcdef0123456789abcdef"]\n'


def config(tmp_path: Path, fleet: str = "") -> Path:
    create_key(tmp_path / "keys.toml")
    path = tmp_path / "trelay.toml"
    path.write_text(f'{SECRET}[api]\nkeys_file = "keys.toml"\nfleet_keys = true\n{fleet}')
    return path


def test_fleet_keys_without_a_fleet_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(config(tmp_path))
    assert refused.value.key == "api.fleet_keys"
    assert "needs a fleet" in refused.value.problem


def test_fleet_keys_with_a_fleet_from_the_file_or_the_flag(tmp_path: Path) -> None:
    with_fleet = config(tmp_path, '[fleet]\nredis_url = "redis://127.0.0.1:6379"\n')
    assert load_settings(with_fleet).api.fleet_keys is True
    flagged = load_settings(config(tmp_path), Flags(redis_url="redis://127.0.0.1:6379"))
    assert flagged.api.fleet_keys is True and flagged.fleet is not None
