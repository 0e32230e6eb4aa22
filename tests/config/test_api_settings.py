"""Settings of the credential side: `[api]`, `[auth.third_party]`, revocations, the log
format and `/selftest`, each error naming its key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.helpers.settings_file import write
from trelay.config.api_keys import create_key
from trelay.config.flags import Flags
from trelay.config.settings import load_settings
from trelay.config.values import SettingsError

KEY16 = base64.b64encode(bytes(range(16))).decode()
KEY32 = base64.b64encode(bytes(range(32))).decode()


def test_api_keys_third_party_and_logs_from_a_file(tmp_path: Path) -> None:
    created = create_key(tmp_path / "keys.toml")
    config = write(
        tmp_path,
        'log_format = "json"\nlog_usernames = true\n'
        '[auth]\nsecrets = ["s"]\nrevocations_file = "revoked.toml"\n'
        '[auth.third_party]\nserver_name = "turn.example"\n'
        f'authorization_server = "https://as.example"\nkeys = {{ a = "{KEY16}", b = "{KEY32}" }}\n'
        '[api]\nkeys_file = "keys.toml"\nice_urls = ["turn:turn.example:3478?transport=udp"]\n'
        "default_ttl = 600\nmax_ttl = 3600\n"
        "[http]\nselftest = true\n",
    )
    settings = load_settings(config)
    assert settings.api.keys is not None and settings.api.keys.by_sid(created.sid) is not None
    assert settings.api.ice_urls == ("turn:turn.example:3478?transport=udp",)
    assert (settings.api.default_ttl, settings.api.max_ttl) == (600, 3600)
    assert settings.auth.revocations_file == tmp_path / "revoked.toml"  # need not exist yet
    third_party = settings.auth.third_party
    assert third_party is not None and third_party.keys == {
        "a": bytes(range(16)),
        "b": bytes(range(32)),
    }
    assert (settings.log_format, settings.log_usernames, settings.http.selftest) == (
        "json",
        True,
        True,
    )
    assert created.secret not in repr(settings) and KEY16 not in repr(settings)


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ('[api]\nkeys_file = "absent.toml"', "api.keys_file", "file not found"),
        ('[api]\nice_urls = ["http://x"]', "api.ice_urls[0]", "stun:, stuns:, turn: or turns:"),
        ('[api]\nice_urls = "turn:x"', "api.ice_urls", "expected a list"),
        ("[api]\ndefault_ttl = 0", "api.default_ttl", "must be > 0"),
        ("[api]\ndefault_ttl = 10\nmax_ttl = 5", "api.default_ttl", "<= api.max_ttl"),
        ("[api]\nbogus = 1", "api.bogus", "unknown key"),
        ('log_format = "xml"', "log_format", "expected one of human, json"),
        (
            '[auth.third_party]\nserver_name = "x"',
            "auth.third_party.authorization_server",
            "string",
        ),
        (
            '[auth.third_party]\nserver_name = "x"\nauthorization_server = "y"\nkeys = { k = "!" }',
            "auth.third_party.keys.k",
            "not base64",
        ),
        (
            '[auth.third_party]\nserver_name = "x"\nauthorization_server = "y"\n'
            f'keys = {{ k = "{base64.b64encode(bytes(20)).decode()}" }}',
            "auth.third_party.keys.k",
            "16- or 32-byte key",
        ),
        (
            '[auth.third_party]\nserver_name = "x"\nauthorization_server = "y"',
            "auth.third_party.keys",
            "kid",
        ),
        ("[auth.third_party]\nport = 1", "auth.third_party.port", "unknown key"),
        (
            '[auth]\nrevocations_file = "nowhere/revoked.toml"',
            "auth.revocations_file",
            "directory not found",
        ),
        (
            '[auth]\nusers = { a = "b" }\n[http]\nselftest = true',
            "http.selftest",
            "TURN REST secret",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, toml: str, key: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, toml))
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_a_broken_keys_file_names_the_entry(tmp_path: Path) -> None:
    (tmp_path / "keys.toml").write_text('[[keys]]\nsid = "nope"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, '[api]\nkeys_file = "keys.toml"'))
    assert caught.value.key == "api.keys_file"
    assert "keys[0]" in caught.value.problem


def test_flags(tmp_path: Path) -> None:
    create_key(tmp_path / "keys.toml")
    flags = Flags(
        api_keys=str(tmp_path / "keys.toml"), revocations_file=str(tmp_path / "r.toml"),
        selftest=True, log_format="json", log_usernames=True,
    )  # fmt: skip
    settings = load_settings(flags=flags)
    assert settings.api.keys is not None and settings.http.selftest
    assert settings.auth.revocations_file == tmp_path / "r.toml"
    assert (settings.log_format, settings.log_usernames) == ("json", True)
    with pytest.raises(SettingsError) as caught:
        load_settings(flags=Flags(log_format="yaml"))
    assert caught.value.key == "--log-format"
    with pytest.raises(SettingsError) as caught:
        load_settings(flags=Flags(api_keys=str(tmp_path / "absent.toml")))
    assert caught.value.key == "--api-keys"
