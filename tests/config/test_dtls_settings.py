"""`[listen] dtls`, `--listen-dtls` and `[dtls]`: read, checked by key, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.settings_file import write
from trelay.config.dtls_settings import DtlsSettings
from trelay.config.flags import Flags
from trelay.config.settings import load_settings
from trelay.config.values import ListenAddress, SettingsError


def test_dtls_is_opt_in_and_its_bounds_have_defaults() -> None:
    settings = load_settings()
    assert settings.listen.dtls == ()
    assert settings.dtls == DtlsSettings(128, 512, 10_000)


def test_dtls_may_share_tls_port_number_but_not_udps(tmp_path: Path) -> None:
    text = '[listen]\ntls = ["127.0.0.1:5349"]\ndtls = ["127.0.0.1:5349"]\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.listen.dtls == (ListenAddress("127.0.0.1", 5349),)
    assert settings.listen.udp == ()  # only the named transports listen
    text = '[listen]\nudp = ["127.0.0.1:3478"]\ndtls = ["127.0.0.1:3478"]\n'
    with pytest.raises(SettingsError) as raised:
        load_settings(write(tmp_path, text))
    assert raised.value.key == "listen.dtls[0]"


def test_the_flag_replaces_the_files_dtls_addresses(tmp_path: Path) -> None:
    path = write(tmp_path, '[listen]\ndtls = ["127.0.0.1:5349"]\n')
    settings = load_settings(path, Flags(listen_dtls=("127.0.0.1:0",)))
    assert settings.listen.dtls == (ListenAddress("127.0.0.1", 0),)
    with pytest.raises(SettingsError) as raised:
        load_settings(None, Flags(listen_dtls=("nowhere",)))
    assert raised.value.key == "--listen-dtls"


def test_dtls_bounds_are_read_and_checked(tmp_path: Path) -> None:
    text = "[dtls]\nassociations_per_source = 4\nhandshakes = 0\nassociations = 100\n"
    assert load_settings(write(tmp_path, text)).dtls == DtlsSettings(4, 0, 100)
    for bad in ("handshakes = -1", 'associations = "many"', "unknown = 1"):
        with pytest.raises(SettingsError) as raised:
            load_settings(write(tmp_path, f"[dtls]\n{bad}\n"))
        assert raised.value.key.startswith("dtls.")
