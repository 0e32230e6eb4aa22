"""`[drain]`: how long SIGTERM lets allocations run on, and where newcomers are sent
meanwhile (`trelay.config.settings.DrainSettings`); every bad value names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from trelay.config.flags import Flags
from trelay.config.settings import DEFAULT_DRAIN_TIMEOUT, load_settings
from trelay.config.values import ListenAddress, SettingsError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "trelay.example.toml"


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trelay.toml"
    path.write_text(text)
    return path


def test_the_default_is_an_hour_and_no_alternate() -> None:
    drain = load_settings().drain
    assert drain.timeout == DEFAULT_DRAIN_TIMEOUT == 3600.0
    assert drain.alternate_server is None


def test_the_file_sets_both(tmp_path: Path) -> None:
    path = config(tmp_path, '[drain]\ntimeout = 90\nalternate_server = "[2001:db8::7]:3478"\n')
    drain = load_settings(path).drain
    assert drain.timeout == 90.0
    assert drain.alternate_server == ListenAddress("2001:db8::7", 3478)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = config(tmp_path, '[drain]\ntimeout = 90\nalternate_server = "192.0.2.1:3478"\n')
    flags = Flags(drain_timeout="2.5", alternate_server="198.51.100.7:3479")
    drain = load_settings(path, flags).drain
    assert drain.timeout == 2.5
    assert drain.alternate_server == ListenAddress("198.51.100.7", 3479)


def test_zero_means_end_at_once() -> None:
    assert load_settings(None, Flags(drain_timeout="0")).drain.timeout == 0.0


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("timeout = -1", "drain.timeout", "expected a number of seconds >= 0, got -1"),
        ("timeout = true", "drain.timeout", "expected seconds (a number), got a boolean"),
        ('timeout = "soon"', "drain.timeout", "expected seconds (a number), got 'soon'"),
        ("timeout = inf", "drain.timeout", "expected a number of seconds >= 0, got inf"),
        ("alternate_server = 3478", "drain.alternate_server", 'expected a "host:port" string'),
        ('alternate_server = "turn.example.org:3478"', "drain.alternate_server",
         "expected an IP address, got 'turn.example.org'"),
        ('alternate_server = "192.0.2.1:0"', "drain.alternate_server", "needs a port other than 0"),
        ('alternate_server = "0.0.0.0:3478"', "drain.alternate_server",
         "0.0.0.0 is no address a client can be sent to"),
        ("grace = 5", "drain.grace", "unknown key"),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(config(tmp_path, f"[drain]\n{text}\n"))
    assert caught.value.key == key
    assert caught.value.problem.startswith(problem)


@pytest.mark.parametrize(
    ("flags", "key"),
    [
        (Flags(drain_timeout="-3"), "--drain-timeout"),
        (Flags(drain_timeout="nan"), "--drain-timeout"),
        (Flags(drain_timeout="an hour"), "--drain-timeout"),
        (Flags(alternate_server="192.0.2.1"), "--alternate-server"),
        (Flags(alternate_server="[::]:3478"), "--alternate-server"),
    ],
)
def test_a_bad_flag_names_the_flag(flags: Flags, key: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, flags)
    assert caught.value.key == key


def test_the_example_lists_the_drain_keys() -> None:
    text = EXAMPLE.read_text()
    assert "[drain]\n" in text
    assert "\ntimeout = 3600.0\n" in text
    assert "# alternate_server = " in text
