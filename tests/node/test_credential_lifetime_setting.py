"""`[auth] max_credential_lifetime` (issue 15): read, checked by name, given to the core."""

from __future__ import annotations

from pathlib import Path

import pytest

from trelay.config.settings import load_settings
from trelay.config.values import SettingsError
from trelay.node.turn_setup import build_turn_server


def _settings(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "trelay.toml"
    path.write_text(f"[auth]\n{line}\n")
    return path


def test_the_default_is_a_day_and_an_hour(tmp_path: Path) -> None:
    settings = load_settings(_settings(tmp_path, ""))
    assert settings.auth.max_credential_lifetime == 90000
    assert build_turn_server(settings).auth.max_credential_lifetime == 90000


def test_a_configured_bound_reaches_the_core(tmp_path: Path) -> None:
    settings = load_settings(_settings(tmp_path, "max_credential_lifetime = 3600"))
    assert build_turn_server(settings).auth.max_credential_lifetime == 3600


@pytest.mark.parametrize("value", ["0", "-5", '"a day"', "1.5"])
def test_bad_values_name_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match=r"auth\.max_credential_lifetime"):
        load_settings(_settings(tmp_path, f"max_credential_lifetime = {value}"))
