"""`trelay fleet revoke|revocations|secret` on a real redis-server: what each prints, that
the writes land in Redis as the nodes read them, that no listing shows a secret, and the
one-line errors and exit statuses for bad flags, a missing fingerprint and no Redis."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import pytest

from tests.helpers.redis_server import RedisServer, free_tcp_port
from trelay.process.commands.fleet_state import add_fleet_state_commands, run_fleet_state_command

NOW = 1_900_000_000.0


def parse(*argv: str) -> argparse.Namespace:
    # `trelay fleet ACTION ...` as `trelay.process.cli` wires it.
    parser = argparse.ArgumentParser(prog="trelay")
    commands = parser.add_subparsers(dest="command", required=True)
    fleet = commands.add_parser("fleet")
    add_fleet_state_commands(fleet.add_subparsers(dest="fleet_command", required=True))
    return parser.parse_args(["fleet", *argv])


def run(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = run_fleet_state_command(parse(*argv), stdout, stderr, now=NOW)
    return status, stdout.getvalue(), stderr.getvalue()


def test_revoke_then_list(redis_server: RedisServer, tmp_path: Path) -> None:
    url = ("--redis-url", redis_server.url)
    status, out, _ = run("revoke", "mallory", "--ttl", "600", *url)
    assert status == 0
    assert json.loads(out) == {
        "identity": "mallory",
        "until": int(NOW) + 600,
        "until_rfc3339": "2030-03-17T17:56:40+00:00",
    }
    assert run("revoke", "eve", "--until", "2030-03-18T00:00:00Z", *url)[0] == 0
    # Through the [fleet] of a settings file.
    config = tmp_path / "fleet.toml"
    config.write_text(f'[fleet]\nredis_url = "{redis_server.url}"\n')
    status, out, _ = run("revocations", "--json", "--config", str(config))
    assert status == 0
    assert json.loads(out) == {
        "revocations": [
            {"identity": "mallory", "until": "2030-03-17T17:56:40+00:00"},
            {"identity": "eve", "until": "2030-03-18T00:00:00+00:00"},
        ]
    }
    status, out, _ = run("revocations", *url)
    assert out.splitlines()[0].split() == ["IDENTITY", "UNTIL"] and "mallory" in out


def test_secret_add_list_retire(redis_server: RedisServer) -> None:
    url = ("--redis-url", redis_server.url)
    status, out, err = run("secret", "add", *url)
    assert status == 0
    added = json.loads(out)
    assert set(added) == {"fingerprint", "secret", "added_at", "minted_from"}
    assert len(added["secret"]) >= 40 and "only this once" in err
    status, out, _ = run("secret", "list", "--json", *url)
    listed = json.loads(out)["secrets"]
    assert [s["fingerprint"] for s in listed] == [added["fingerprint"]]
    assert added["secret"] not in out
    status, out, _ = run("secret", "list", *url)
    assert added["fingerprint"] in out and added["secret"] not in out
    assert run("secret", "retire", added["fingerprint"], *url)[:2] == (
        0,
        f"retired {added['fingerprint']}\n",
    )
    status, _, err = run("secret", "retire", added["fingerprint"], *url)
    assert (
        status == 1
        and err == f"trelay: fleet secret: no secret with fingerprint {added['fingerprint']}\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("revoke", "x", "--ttl", "0"), "--ttl: expected 1 to 315360000 seconds, got 0"),
        (("revoke", "x", "--until", "soon"), "--until: 'soon' is not an RFC 3339 date-time"),
        (
            ("revoke", "x", "--until", "2001-01-01T00:00:00Z"),
            "--until: must be in the future, at most ten years away",
        ),
        (("revoke", "x" * 300, "--ttl", "60"), "identity: identity must be 1 to 256 bytes"),
    ],
)
def test_bad_flags_are_one_line_and_status_2(
    redis_server: RedisServer, argv: tuple[str, ...], message: str
) -> None:
    status, out, err = run(*argv, "--redis-url", redis_server.url)
    assert (status, out, err) == (2, "", f"trelay: {message}\n")


def test_a_bad_url_or_config_names_it(tmp_path: Path) -> None:
    status, _, err = run("revocations", "--redis-url", "http://example.org")
    assert status == 2 and err.startswith("trelay: --redis-url: expected redis://")
    config = tmp_path / "alone.toml"
    config.write_text("")
    status, _, err = run("secret", "list", "--config", str(config))
    assert (status, err) == (2, f"trelay: --config: {config} has no [fleet] redis_url\n")


def test_no_redis_is_status_1(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_tcp_port()
    status, out, err = run(
        "revoke", "x", "--ttl", "60", "--redis-url", f"redis://127.0.0.1:{port}/0"
    )
    # One line of the command's own, naming where it looked (a node would go on, retrying).
    assert status == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"trelay: fleet: cannot reach Redis at 127.0.0.1:{port}: ")
    assert [r.getMessage() for r in caplog.records if r.name == "trelay.fleet.store"] == []
