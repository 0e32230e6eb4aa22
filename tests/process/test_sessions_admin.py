"""Session admin of a real `trelay serve`: the supervisor of `--workers 2` asks both workers
and merges (each session tagged with its worker), ends an identity's allocations on
whichever worker holds them (the clients then get 437), `POST /v1/drain` ends the node as
SIGTERM does, and `trelay sessions` does all of it from the shell with exit statuses 0,
1 and 2. Which worker a client lands on is the kernel's choice; nothing here needs both.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from tests.helpers.http_client import http_request
from tests.helpers.supervised import TIMEOUT, Supervised, running_workers, total
from tests.helpers.trelay_process import running_trelay, trelay_command
from tests.helpers.turn_client import TurnClient, TurnError, udp_client
from trelay.stun.codes import ErrorCode

TOKEN = "admin-token-for-the-tests-0123456789"
ALICES = 6


def token_file(tmp_path: Path, text: str = TOKEN) -> Path:
    path = tmp_path / "admin.token"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def serve_args(tmp_path: Path, *more: str) -> list[str]:
    return [
        "--listen-udp", "127.0.0.1:0", "--listen-http", "127.0.0.1:0",
        "--user", "alice:wonderland", "--user", "bob:builder",
        "--admin-token-file", str(token_file(tmp_path)), *more,
    ]  # fmt: skip


async def sessions_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [*trelay_command(), "sessions", *args], capture_stdout=True, capture_stderr=True,
            check=False,
        )  # fmt: skip


async def expect_437(client: TurnClient) -> None:
    try:
        await client.refresh(600)
    except TurnError as error:
        assert error.code == ErrorCode.ALLOCATION_MISMATCH
    else:
        raise AssertionError("an ended allocation was refreshed")


async def test_workers_list_end_and_the_command(tmp_path: Path) -> None:
    args = serve_args(tmp_path, "--workers", "2")
    async with running_workers(tmp_path, *args) as node, AsyncExitStack() as stack:
        [udp] = node.addresses("udp")
        http = f"{node.http[0]}:{node.http[1]}"
        common = ("--http", http, "--token-file", str(tmp_path / "admin.token"))
        alices = [await stack.enter_async_context(udp_client(udp)) for _ in range(ALICES)]
        bob = await stack.enter_async_context(udp_client(udp))
        bob.username, bob.password = "bob", "builder"
        for client in (*alices, bob):  # the alices use the client's default, alice
            await client.allocate()

        listing = await http_request(node.http, "/v1/sessions", headers=auth())
        assert listing.status == 200
        body = listing.json()
        assert isinstance(body, dict) and body["unanswered_workers"] == []
        sessions = body["sessions"]
        assert Counter(s["identity"] for s in sessions) == {"alice": ALICES, "bob": 1}
        assert {s["client"] for s in sessions} == {
            f"127.0.0.1:{c.local[1]}" for c in (*alices, bob)
        }
        # Each session is tagged with the worker that holds it: the per-worker counts
        # agree with what each worker reports to /metrics.
        per_worker = Counter(s["worker"] for s in sessions)
        samples = await node.metrics()
        for worker in (0, 1):
            active = total(samples, "trelay_worker_allocations_active", worker=str(worker))
            assert per_worker.get(worker, 0) == active

        table = await sessions_command(*common)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.decode().splitlines()
        assert lines[0].split()[:5] == ["WORKER", "TRANSPORT", "CLIENT", "RELAYED", "IDENTITY"]
        assert sorted(line.split()[4] for line in lines[1:]) == ["alice"] * ALICES + ["bob"]

        only_bob = await sessions_command(*common, "--identity", "bob", "--json")
        assert only_bob.returncode == 0, only_bob.stderr
        [bobs] = json.loads(only_bob.stdout)["sessions"]
        assert bobs["client"] == f"127.0.0.1:{bob.local[1]}" and bobs["worker"] in (0, 1)

        ended = await sessions_command(*common, "--identity", "alice", "--end")
        assert ended.returncode == 0, ended.stderr
        assert ended.stdout.decode() == f"ended {ALICES} sessions\n"
        for client in alices:
            await expect_437(client)
        assert await bob.refresh(600) == 600

        one = await sessions_command(*common, "--relayed", bobs["relayed"], "--end")
        assert (one.returncode, one.stdout.decode()) == (0, "ended 1 session\n")
        await expect_437(bob)
        empty = await http_request(node.http, "/v1/sessions", headers=auth())
        assert empty.json() == {"sessions": [], "unanswered_workers": []}


async def test_the_command_fails_in_one_line(tmp_path: Path) -> None:
    async with running_trelay(tmp_path, *serve_args(tmp_path)) as node:
        [http_address] = node.addresses("http")
        http = f"{http_address[0]}:{http_address[1]}"
        wrong = tmp_path / "wrong.token"
        wrong.write_text("a-wrong-token-of-some-length\n")
        refused = await sessions_command("--http", http, "--token-file", str(wrong))
        assert refused.returncode == 1
        assert refused.stderr.decode() == "trelay: sessions: HTTP 401: wrong admin token\n"
        assert b"a-wrong-token" not in refused.stderr

        short = tmp_path / "short.token"
        short.write_text("short\n")
        bad = await sessions_command("--http", http, "--token-file", str(short))
        assert bad.returncode == 2
        assert bad.stderr.decode().startswith("trelay: --token-file: ")

        no_target = await sessions_command(
            "--http", http, "--token-file", str(tmp_path / "admin.token"), "--end"
        )
        assert no_target.returncode == 2
        assert no_target.stderr.decode().startswith("trelay: --end: ")

    # The node is gone: nothing listens on its operator port any more.
    gone = await sessions_command("--http", http, "--token-file", str(tmp_path / "admin.token"))
    assert gone.returncode == 1
    assert gone.stderr.decode().startswith(f"trelay: sessions: cannot reach http://{http}/")
    assert len(gone.stderr.decode().splitlines()) == 1


async def test_post_drain_ends_a_node_with_workers_as_sigterm_does(tmp_path: Path) -> None:
    args = serve_args(tmp_path, "--workers", "2")
    async with running_workers(tmp_path, *args) as node:
        await drain_and_wait(node)


async def test_post_drain_ends_a_single_process_node(tmp_path: Path) -> None:
    async with running_trelay(tmp_path, *serve_args(tmp_path)) as running:
        await drain_and_wait(Supervised(running.process, running.ready, running.stderr_path))


async def drain_and_wait(node: Supervised) -> None:
    """POST /v1/drain (no allocation to wait for): 202, then the process ends, status 0."""
    refused = await http_request(node.http, "/v1/drain", "POST")
    assert refused.status == 401 and node.process.returncode is None
    answer = await http_request(node.http, "/v1/drain", "POST", headers=auth())
    assert (answer.status, answer.json()) == (202, {"status": "draining", "started": True})
    with trio.fail_after(TIMEOUT):
        status = await node.process.wait()
    assert status == 0
    assert "drain asked over HTTP" in node.stderr_path.read_text()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
