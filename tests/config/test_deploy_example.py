"""The example settings shipped in deploy/ load (apart from the TLS files it names)."""

from pathlib import Path

from trelay.config.api_keys import create_key
from trelay.config.settings import load_settings

EXAMPLE = Path(__file__).parents[2] / "deploy" / "trelay.example.toml"


def test_the_example_config_loads(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("placeholder")
    (tmp_path / "key.pem").write_text("placeholder")
    text = EXAMPLE.read_text()
    text = text.replace("/etc/trelay/fullchain.pem", "cert.pem")
    text = text.replace("/etc/trelay/privkey.pem", "key.pem")
    create_key(tmp_path / "keys.toml")
    text = text.replace("/etc/trelay/keys.toml", "keys.toml")
    text = text.replace("/var/lib/trelay/revoked.toml", "revoked.toml")
    config = tmp_path / "trelay.toml"
    config.write_text(text)
    settings = load_settings(config)
    assert settings.auth.realm == "turn.example.org"
    assert settings.relay.ports == (49152, 65535)
    assert settings.relay.user_quota == 10
    assert settings.auth.shared_secrets == ("replace-with-a-long-random-secret",)
    assert [str(a) for a in settings.listen.udp] == ["0.0.0.0:3478"]
    assert settings.api.keys is not None and len(settings.api.ice_urls) == 3
    assert settings.log_format == "json" and not settings.http.selftest


def test_the_example_admin_token_line_works_uncommented(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("placeholder")
    (tmp_path / "key.pem").write_text("placeholder")
    create_key(tmp_path / "keys.toml")
    (tmp_path / "admin.token").write_text("f" * 64 + "\n")
    text = EXAMPLE.read_text()
    line = '# admin_token_file = "/etc/trelay/admin.token"'
    assert line in text
    text = text.replace(line, 'admin_token_file = "admin.token"')
    for old, new in [
        ("/etc/trelay/fullchain.pem", "cert.pem"), ("/etc/trelay/privkey.pem", "key.pem"),
        ("/etc/trelay/keys.toml", "keys.toml"), ("/var/lib/trelay/revoked.toml", "revoked.toml"),
    ]:  # fmt: skip
        text = text.replace(old, new)
    config = tmp_path / "trelay.toml"
    config.write_text(text)
    assert load_settings(config).http.admin_token == "f" * 64
