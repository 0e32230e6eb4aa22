"""`trelay usage` against a real operator port over a real redis-server: the table and the
JSON of the sums, the window flags, and its exit statuses (1 without a fleet, 2 for a bad
token file)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio

from tests.helpers.redis_server import RedisServer
from tests.helpers.usage_records import T0_MS, TOKEN, usage_port, write_records
from trelay.process.cli import build_parser
from trelay.process.commands.usage import run_usage_command


async def usage(http: tuple[str, int], token_file: Path, *more: str) -> tuple[int, str, str]:
    arguments = build_parser().parse_args(
        ["usage", "--http", f"{http[0]}:{http[1]}", "--token-file", str(token_file), *more]
    )
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(20):
        status = await trio.to_thread.run_sync(run_usage_command, arguments, out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin.token"
    path.write_text(TOKEN + "\n")
    return path


async def test_a_table_and_json_over_a_window(redis_server: RedisServer, token_file: Path) -> None:
    async with usage_port(redis_server) as (http, store):
        assert store is not None
        await write_records(store)
        status, table, err = await usage(http, token_file)
        since, until = str((T0_MS + 1500) / 1000), "2023-11-14T22:13:24Z"
        windowed = await usage(http, token_file, "--since", since, "--until", until, "--json")
        by_node = await usage(http, token_file, "--by", "identity,node", "--identity", "alice")
    assert (status, err) == (0, "")
    lines = table.splitlines()
    assert lines[0].split() == [
        "IDENTITY", "RECORDS", "ENDED", "ALLOC_S", "TO_PEER", "TO_CLIENT",
        "DGRAMS_TO_PEER", "DGRAMS_TO_CLIENT",
    ]  # fmt: skip
    assert lines[1].split() == ["alice", "3", "2", "95", "115", "225", "11", "22"]
    assert lines[2].split() == ["bob", "1", "1", "60", "30", "40", "3", "4"]
    assert windowed[0] == 0
    answer = json.loads(windowed[1])
    assert {g["identity"]: g["client_to_peer_bytes"] for g in answer["groups"]} == {
        "alice": 110,
        "bob": 30,
    }
    assert by_node[0] == 0
    rows = [line.split()[:3] for line in by_node[1].splitlines()[1:]]
    assert rows == [["alice", "n-a", "2"], ["alice", "n-b", "1"]]


async def test_exit_statuses(token_file: Path, tmp_path: Path) -> None:
    async with usage_port(None) as (http, _):
        no_fleet = await usage(http, token_file)
        missing = await usage(http, tmp_path / "nope.token")
    assert no_fleet[0] == 1
    # The route's message, not its code.
    assert (
        no_fleet[2] == "trelay: usage: HTTP 404: usage records are summed from the fleet's Redis\n"
    )
    assert missing[0] == 2 and missing[2].startswith("trelay: --token-file: ")
