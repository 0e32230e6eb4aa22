"""The example settings shipped in deploy/ load (apart from the TLS files it names)."""

import re
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


def test_the_example_fleet_and_usage_sections_work_uncommented(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("placeholder")
    (tmp_path / "key.pem").write_text("placeholder")
    create_key(tmp_path / "keys.toml")
    (tmp_path / "redis.password").write_text("r3dis\n")
    text = EXAMPLE.read_text()
    start = text.index("# [fleet]\n")
    end = text.index("\n[http]")
    # Settings lines ("# key = ...", "# [table]", continuations), not the prose around them.
    setting = re.compile(r"# (\[|[\w-]+ = |\s+\")")
    block = "\n".join(
        line.removeprefix("# ") if setting.match(line) else line
        for line in text[start:end].splitlines()
    )
    assert "[usage]" in block and "[fleet.placement]" in block
    text = text[:start] + block + text[end:]
    for path, local in (
        ("/etc/trelay/fullchain.pem", "cert.pem"), ("/etc/trelay/privkey.pem", "key.pem"),
        ("/etc/trelay/keys.toml", "keys.toml"), ("/var/lib/trelay/revoked.toml", "revoked.toml"),
        ("/etc/trelay/redis.password", "redis.password"),
    ):  # fmt: skip
        text = text.replace(path, local)
    config = tmp_path / "trelay.toml"
    config.write_text(text)
    settings = load_settings(config)
    fleet = settings.fleet
    assert fleet is not None and fleet.redis_password == "r3dis"
    assert (fleet.node_id, fleet.region, fleet.max_allocations) == ("fra-1", "eu-central", 20000)
    assert fleet.placement.count == 2
    assert dict(fleet.placement.neighbours) == {"eu-central": ("eu-west", "us-east")}
    assert settings.usage.interval_seconds == 60.0
