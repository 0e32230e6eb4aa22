"""`trelay serve` in a fleet with the token API, against a real redis-server (one process and
the supervisor of workers): the listing route and `trelay fleet nodes`, placement in
/v1/ice-servers, a node entry that says draining gone from it, and `trelay fleet api-key
add|list|remove` with the node accepting, then refusing, the key."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import trio

from tests.helpers.fleet_store import eventually
from tests.helpers.http_client import HttpResponse, http_request
from tests.helpers.redis_server import RedisServer
from tests.helpers.trelay_process import Running, running_trelay, stop, trelay_command
from trelay.config.api_keys import create_key, load_keys
from trelay.credentials.access_tokens import mint_token

TOKEN = "fleet-admin-token-0123456789"
WAIT = 30.0
URI = "turn:n1.example.org:3478?transport=udp"


def config(tmp_path: Path, server: RedisServer, workers: int) -> Path:
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    create_key(tmp_path / "keys.toml")
    path = tmp_path / "fleet.toml"
    path.write_text(
        f'workers = {workers}\n[listen]\nudp = ["127.0.0.1:0"]\n'
        '[http]\nlisten = ["127.0.0.1:0"]\nadmin_token_file = "admin.token"\n'
        '[api]\nkeys_file = "keys.toml"\nfleet_keys = true\n'
        f'[fleet]\nredis_url = "{server.url}"\nnode_id = "n1"\nregion = "eu"\n'
        f'public_uris = ["{URI}"]\nheartbeat_seconds = 0.2\nttl_seconds = 2\n'
        "[fleet.placement]\nrefresh_seconds = 0.1\n"
    )
    return path


async def command(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(WAIT):
        return await trio.run_process(
            [*trelay_command(), "fleet", *args], capture_stdout=True, capture_stderr=True,
            check=False,
        )  # fmt: skip


def http_of(running: Running) -> tuple[str, int]:
    [http] = running.addresses("http")
    return http


async def ice_uris(running: Running, token: str) -> list[str] | int:
    answer = await http_request(
        http_of(running), "/v1/ice-servers", headers={"Authorization": f"Bearer {token}"}
    )
    if answer.status != 200:
        return answer.status
    body = answer.json()
    assert isinstance(body, dict)
    return [url for server in body["iceServers"] for url in server["urls"]]


async def nts_status(running: Running, key: dict[str, str]) -> int:
    pair = base64.b64encode(f"{key['sid']}:{key['secret']}".encode()).decode()
    answer: HttpResponse = await http_request(
        http_of(running),
        f"/2010-04-01/Accounts/{key['account']}/Tokens.json",
        "POST",
        {"Authorization": f"Basic {pair}"},
    )
    return answer.status


@pytest.mark.parametrize("workers", [1, 2])
async def test_listing_placement_and_fleet_api_keys(
    tmp_path: Path, redis_server: RedisServer, workers: int
) -> None:
    path = config(tmp_path, redis_server, workers)
    (file_key,) = load_keys(tmp_path / "keys.toml")
    bearer = mint_token(file_key, "alice", time.time())
    async with running_trelay(tmp_path, "--config", str(path)) as running:
        address = f"127.0.0.1:{http_of(running)[1]}"
        listing = ("nodes", "--http", address, "--token-file", str(tmp_path / "admin.token"))

        # The listing route: the admin token only.
        refused = await http_request(http_of(running), "/v1/fleet/nodes")
        assert refused.status == 401

        async def n1_listed() -> bool:
            done = await command(*listing, "--json")
            return done.returncode == 0 and b'"n1"' in done.stdout

        await eventually(n1_listed, WAIT)
        answer = json.loads((await command(*listing, "--json")).stdout)
        assert answer["store"] == "connected" and answer["node_id"] == "n1"
        [entry] = answer["nodes"]
        assert (entry["region"], entry["public_uris"], entry["available"]) == ("eu", [URI], True)
        table = (await command(*listing)).stdout.decode()
        assert table.splitlines()[0].split()[:3] == ["NODE", "REGION", "STATE"]
        assert table.splitlines()[1].split()[:3] == ["n1", "eu", "available"]

        # Placement: this node's own URIs (its public ones, not its listeners').
        assert await ice_uris(running, bearer) == [URI]

        # Fleet API keys: added with the command, accepted by the node, removed, refused.
        redis = ("--redis-url", redis_server.url)
        added = await command("api-key", "add", "--account", file_key.account, *redis)
        assert added.returncode == 0, added.stderr
        key = json.loads(added.stdout)
        assert set(key) == {"sid", "secret", "account"}

        async def accepted() -> bool:
            return await nts_status(running, key) == 201

        await eventually(accepted, WAIT)
        listed = await command("api-key", "list", *redis)
        assert key["sid"] in listed.stdout.decode()
        assert key["secret"] not in listed.stdout.decode()
        removed = await command("api-key", "remove", key["sid"], *redis)
        assert removed.returncode == 0, removed.stderr
        again = await command("api-key", "remove", key["sid"], *redis)
        assert again.returncode == 1 and b"no API key" in again.stderr

        async def refused_now() -> bool:
            return await nts_status(running, key) == 401

        await eventually(refused_now, WAIT)
        assert await stop(running, signal.SIGTERM) == 0
    assert key["secret"] not in running.stderr_path.read_text()


async def test_the_commands_bad_flags_and_an_unreachable_node(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    done = await command("api-key", "list", "--redis-url", "http://nope")
    assert done.returncode == 2 and b"--redis-url" in done.stderr
    done = await command("api-key", "add", "--account", "AC1", "--redis-url", "redis://127.0.0.1:1")
    assert done.returncode == 2 and b"--account" in done.stderr
    token = str(tmp_path / "admin.token")
    done = await command("nodes", "--http", "127.0.0.1:1", "--token-file", token)
    assert done.returncode == 1 and b"cannot reach" in done.stderr
    # No Redis there: the command's own line, none of a node's "relaying goes on" warning.
    done = await command("api-key", "list", "--redis-url", "redis://127.0.0.1:1")
    assert done.returncode == 1 and done.stdout == b""
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("trelay: fleet: cannot reach Redis at 127.0.0.1:1: "), line
