"""`[http] admin_token_file` (`--admin-token-file`): the token that guards the session
admin routes, read and checked when the settings load (and by `trelay check-config`);
every problem is a `SettingsError` naming the key, never showing the file's content."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.trelay_process import trelay_command
from trelay.config.flags import Flags
from trelay.config.reload import Reload, reload_settings
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError

TOKEN = "0123456789abcdef-token"


def settings_file(tmp_path: Path, token_text: str | None) -> Path:
    if token_text is not None:
        (tmp_path / "admin.token").write_text(token_text, encoding="utf-8")
    config = tmp_path / "trelay.toml"
    config.write_text('[http]\nadmin_token_file = "admin.token"\n', encoding="utf-8")
    return config


def test_no_file_means_no_token() -> None:
    http = load_settings().http
    assert http.admin_token_file is None and http.admin_token is None


def test_the_token_is_read_relative_to_the_settings_file(tmp_path: Path) -> None:
    http = load_settings(settings_file(tmp_path, f"  {TOKEN}\n")).http
    assert http.admin_token_file == tmp_path / "admin.token"
    assert http.admin_token == TOKEN
    assert TOKEN not in repr(http)


def test_the_flag_replaces_the_file(tmp_path: Path) -> None:
    other = tmp_path / "other.token"
    other.write_text("x" * 20 + "\n", encoding="utf-8")
    flags = Flags(admin_token_file=str(other))
    http = load_settings(settings_file(tmp_path, TOKEN), flags).http
    assert (http.admin_token_file, http.admin_token) == (other, "x" * 20)


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, "file not found"),
        ("", "holds no token"),
        ("short-token", "at least 16 characters"),
        ("two words of a token", "one word of printable ASCII"),
        ("tökentökentökentöken", "one word of printable ASCII"),
    ],
)
def test_a_bad_token_file_names_the_key_and_hides_the_content(
    tmp_path: Path, text: str | None, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(settings_file(tmp_path, text))
    assert caught.value.key == "http.admin_token_file"
    assert problem in caught.value.problem
    if text:
        assert text not in str(caught.value)


def test_a_bad_flag_names_the_flag(tmp_path: Path) -> None:
    short = tmp_path / "short.token"
    short.write_text("short\n", encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings(None, Flags(admin_token_file=str(short)))
    assert caught.value.key == "--admin-token-file"
    with pytest.raises(SettingsError) as missing:
        load_settings(None, Flags(admin_token_file=str(tmp_path / "absent")))
    assert missing.value.key == "--admin-token-file"


def test_a_new_token_waits_for_a_restart_and_is_never_shown(tmp_path: Path) -> None:
    config = settings_file(tmp_path, TOKEN)
    current = load_settings(config)
    (tmp_path / "admin.token").write_text("a-brand-new-admin-token\n", encoding="utf-8")
    result = reload_settings(current, config, Flags())
    assert isinstance(result, Reload)
    assert [change.key for change in result.restart] == ["http.admin_token_file"]
    assert result.settings.http.admin_token == TOKEN
    assert "a-brand-new" not in " ".join(str(change) for change in result.restart)


def test_check_config_checks_the_token_file(tmp_path: Path) -> None:
    config = settings_file(tmp_path, "tiny-secret")
    done = subprocess.run(
        [*trelay_command(), "check-config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("trelay: http.admin_token_file: ")
    assert "tiny-secret" not in done.stderr
    (tmp_path / "admin.token").write_text(TOKEN, encoding="utf-8")
    done = subprocess.run(
        [*trelay_command(), "check-config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, f"{config}: ok\n")
