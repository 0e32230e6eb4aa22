"""`[usage]`: the defaults without it, values read, every bad value named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.settings_file import write
from trelay.config.settings import Settings, load_settings
from trelay.config.usage_settings import UsageSettings
from trelay.config.values import SettingsError


def test_defaults_without_the_section(tmp_path: Path) -> None:
    assert Settings().usage == UsageSettings(True, 60.0, 1_000_000, 10_000)
    assert load_settings(write(tmp_path, 'software = "x"\n')).usage == UsageSettings()


def test_values_read(tmp_path: Path) -> None:
    text = (
        "[usage]\nenabled = false\ninterval_seconds = 15\nstream_max_entries = 5000\n"
        "queue_max_records = 20\n"
    )
    assert load_settings(write(tmp_path, text)).usage == UsageSettings(False, 15.0, 5000, 20)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("interval_seconds = 0.5", "usage.interval_seconds"),
        ('interval_seconds = "60"', "usage.interval_seconds"),
        ("interval_seconds = inf", "usage.interval_seconds"),
        ("stream_max_entries = 0", "usage.stream_max_entries"),
        ("stream_max_entries = 1.5", "usage.stream_max_entries"),
        ("queue_max_records = -1", "usage.queue_max_records"),
        ("queue_max_records = true", "usage.queue_max_records"),
        ('enabled = "yes"', "usage.enabled"),
        ("interval = 60", "usage.interval"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(write(tmp_path, f"[usage]\n{line}\n"))
    assert error.value.key == key
