"""`trelay keys create` and `trelay token`, through argparse as `trelay.process.cli` wires them."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
from pathlib import Path

import pytest

from trelay.config.api_keys import load_keys
from trelay.credentials.access_tokens import verify_token
from trelay.process.commands.token import TOKEN_COMMANDS, add_token_commands, run_token_command

NOW = 1_800_000_000.0
ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"


def run(argv: list[str], now: float = NOW) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="trelay")
    add_token_commands(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(argv)
    assert arguments.command in TOKEN_COMMANDS
    stdout, stderr = io.StringIO(), io.StringIO()
    status = run_token_command(arguments, stdout, stderr, now=now)
    return status, stdout.getvalue(), stderr.getvalue()


def test_keys_create_prints_the_key_once_and_token_uses_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    status, out, err = run(["keys", "create", "--keys", str(path), "--account", ACCOUNT])
    assert status == 0
    printed = json.loads(out)
    assert printed["account"] == ACCOUNT and printed["sid"].startswith("SK")
    assert "shown only this once" in err and printed["secret"] not in err
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    keys = load_keys(path)
    assert keys.keys[0].secret == printed["secret"]

    status, out, err = run(["token", "--keys", str(path), "--identity", "alice", "--ttl", "60"])
    assert (status, err) == (0, "")
    verified = verify_token(out.strip(), keys, NOW)
    assert verified.identity == "alice" and verified.expires_at == NOW + 60
    assert printed["secret"] not in out


def test_token_picks_the_key_asked_for_or_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    run(["keys", "create", "--keys", str(path)])
    run(["keys", "create", "--keys", str(path)])
    first, second = load_keys(path)
    _, out, _ = run(["token", "--keys", str(path), "--identity", "a"])
    assert verify_token(out.strip(), load_keys(path), NOW).key == second
    _, out, _ = run(["token", "--keys", str(path), "--identity", "a", "--key", first.sid])
    assert verify_token(out.strip(), load_keys(path), NOW).key == first


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "--keys", "{keys}", "--identity", "a", "--ttl", "0"], "--ttl: must be from 1"),
        (["token", "--keys", "{keys}", "--identity", "a", "--key", "SK" + "0" * 32], "--key: no"),
        (["token", "--keys", "{keys}", "--identity", ""], "--identity: identity is empty"),
        (["keys", "create", "--keys", "{keys}", "--account", "ACbad"], "--account: 'ACbad' is"),
    ],
)
def test_errors_are_one_line_and_status_2(tmp_path: Path, argv: list[str], message: str) -> None:
    path = tmp_path / "keys.toml"
    run(["keys", "create", "--keys", str(path)])
    status, out, err = run([a.format(keys=path) for a in argv])
    assert (status, out) == (2, "")
    assert err.startswith(f"trelay: {message}") and err.count("\n") == 1


def test_a_missing_or_expired_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    status, _, err = run(["token", "--keys", str(path), "--identity", "a"])
    assert status == 2 and err == f"trelay: {path}: file not found\n"
    path.write_text(
        f'[[keys]]\nsid = "SK{"0" * 32}"\nsecret = "{"s" * 32}"\naccount = "{ACCOUNT}"\n'
        "not_after = 2020-01-01\n"
    )
    status, _, err = run(["token", "--keys", str(path), "--identity", "a"])
    assert status == 2 and "past its not_after" in err
