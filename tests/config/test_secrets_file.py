"""`auth.secrets_file`: its format, its settings keys, and the reload that rotates secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from trelay.config.file_watch import POLL_SECONDS
from trelay.config.flags import Flags
from trelay.config.secrets_file import read_secrets_file, watch_secrets_file
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError
from trelay.node.turn_setup import shared_secrets
from trelay.stun.credentials import long_term_key
from trelay.turn.credential_sources import SharedSecrets, rest_password

USERNAME = "1900000000:alice"


def key_under(secret: str, realm: str = "r") -> bytes:
    return long_term_key(USERNAME, realm, rest_password(secret.encode(), USERNAME))


def accepted(secrets: SharedSecrets, secret: str) -> bool:
    return key_under(secret) in {c.key for c in secrets.candidates(USERNAME)}


def test_one_secret_per_line_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("# rotated 2026-11-24\n\n  new-secret  \nold-secret\n   # indented comment\n")
    assert read_secrets_file(path) == ("new-secret", "old-secret")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "holds no secret"),
        (b"# only a comment\n\n", "holds no secret"),
        (b"\xff\xfe secret", "not UTF-8"),
        (b"x" * (64 * 1024 + 1), "larger than"),
    ],
)
def test_a_bad_file_says_what_is_wrong(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "secrets"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=problem):
        read_secrets_file(path)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absent: file not found"):
        read_secrets_file(tmp_path / "absent")


def test_settings_key_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets.txt").write_text("from-file\n")
    config = tmp_path / "trelay.toml"
    config.write_text('[auth]\nsecrets = ["inline"]\nsecrets_file = "secrets.txt"\n')
    auth = load_settings(config).auth
    assert auth.secrets_file == tmp_path / "secrets.txt"
    assert auth.shared_secrets == ("inline", "from-file")


def test_a_bad_secrets_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    config = tmp_path / "trelay.toml"
    config.write_text('[auth]\nsecrets_file = "empty.txt"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert caught.value.key == "auth.secrets_file"
    assert "holds no secret" in str(caught.value)
    config.write_text('[auth]\nsecrets_file = "absent.txt"\n')
    with pytest.raises(SettingsError, match="file not found") as caught:
        load_settings(config)
    assert caught.value.key == "auth.secrets_file"


def test_the_flag_replaces_the_dev_secret(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("flagged\n")
    auth = load_settings(None, Flags(secrets_file=str(path))).auth
    assert auth.shared_secrets == ("flagged",)
    with pytest.raises(SettingsError) as caught:
        load_settings(None, Flags(secrets_file=str(tmp_path / "absent")))
    assert caught.value.key == "--secrets-file"


async def test_the_watcher_rotates_secrets_and_ignores_a_broken_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "secrets"
    path.write_text("first\n")
    config = tmp_path / "trelay.toml"
    config.write_text('[auth]\nrealm = "r"\nsecrets = ["inline"]\nsecrets_file = "secrets"\n')
    settings = load_settings(config)
    secrets = shared_secrets(settings)
    assert accepted(secrets, "first") and accepted(secrets, "inline")
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_secrets_file, path, secrets, settings.auth.secrets)
        # Rotation: a new secret on top, the old one still accepted.
        replace_file(path, "second\nfirst\n")
        await trio.sleep(POLL_SECONDS * 1.5)
        assert accepted(secrets, "second") and accepted(secrets, "first")
        assert accepted(secrets, "inline")  # inline secrets stay whatever the file says
        # The old one retired.
        replace_file(path, "second\n")
        await trio.sleep(POLL_SECONDS * 1.5)
        assert accepted(secrets, "second") and not accepted(secrets, "first")
        # A broken or vanished file keeps what the node has instead of locking clients out.
        replace_file(path, "# emptied by mistake\n")
        await trio.sleep(POLL_SECONDS * 1.5)
        assert accepted(secrets, "second")
        path.unlink()
        await trio.sleep(POLL_SECONDS * 1.5)
        assert accepted(secrets, "second")
        nursery.cancel_scope.cancel()


def replace_file(path: Path, text: str) -> None:
    """Write beside and rename over, as configuration tools and Kubernetes do."""
    temporary = path.with_suffix(".new")
    temporary.write_text(text)
    os.replace(temporary, path)
