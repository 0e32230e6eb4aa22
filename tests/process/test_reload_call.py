"""A call keeps going through a SIGHUP reload, and the reload takes effect live.

`trelay serve --config FILE` (one process, and `--workers 2`) relays a coturn
`turnutils_uclient` call (two sessions relaying to each other, `-y`); once data flows the
test rewrites the settings file (one user removed, the log level set to warning, a
listen address changed) and sends SIGHUP. Checked:

- uclient's closing totals: every message came back, nothing lost;
- the removed user's next Allocate is refused (401) while the remaining user's succeeds;
- the new log level is in force (no INFO line from the node after the reload);
- the listen address change is refused and logged as waiting for a restart;
- the node then drains and ends on SIGTERM as usual (status 0);
- `trelay reload` does the same through the operator port's admin route (one process
  and workers): what was applied on stdout, a refused file is status 1 with the reason.

Every wait is bounded; nothing depends on how long the call takes.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import trio

from tests.helpers.supervised import TIMEOUT, Supervised, poll_until, running_workers
from tests.helpers.trelay_process import allocate_with, trelay_command
from tests.helpers.turn_relay import PASSWORD, USERNAME
from tests.helpers.turnutils import NEEDS_UCLIENT_AND_PEER, UclientRun
from tests.helpers.uclient_call import assert_no_loss, call_through

pytestmark = [pytest.mark.interop, NEEDS_UCLIENT_AND_PEER]

SETTINGS = """\
log_level = "{level}"

[listen]
udp = ["{udp}"]
tcp = []
tls = []

[http]
listen = ["127.0.0.1:0"]

[auth]
realm = "reload.test"
users = {users}

[relay]
allow_loopback_peers = true

[drain]
timeout = 0
"""


def settings_text(level: str, users: dict[str, str], udp: str = "127.0.0.1:0") -> str:
    table = "{ " + ", ".join(f'{name} = "{password}"' for name, password in users.items()) + " }"
    return SETTINGS.format(level=level, users=table, udp=udp)


async def said_reloaded(node: Supervised, processes: int) -> None:
    """Wait until `processes` processes (a single node, or the supervisor and each
    worker) have logged "reloaded:"."""

    async def reloaded() -> bool:
        return node.stderr_path.read_text().count("reloaded:") >= processes

    await poll_until(reloaded)


async def call_through_sighup(
    node: Supervised, config: Path, new_text: str, processes: int
) -> UclientRun:
    """Run a uclient call, reload once data flows; return once `processes` said reloaded."""

    async def sighup() -> None:
        await trio.Path(config).write_text(new_text)
        node.process.send_signal(signal.SIGHUP)
        await said_reloaded(node, processes)

    return await call_through(node, sighup)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_call_runs_through_a_reload_that_takes_effect(tmp_path: Path, workers: str) -> None:
    config = tmp_path / "trelay.toml"
    users = {USERNAME: PASSWORD, "bob": "builder"}
    config.write_text(settings_text("info", users))
    async with running_workers(tmp_path, "--config", str(config), "--workers", workers) as node:
        server = node.addresses("udp")[0]
        await allocate_with(server, "bob", "builder")  # bob may, before the reload
        # bob removed and the level raised apply live; the new udp address needs a
        # restart, so the node keeps listening where it does.
        new = settings_text("warning", {USERNAME: PASSWORD}, udp="127.0.0.1:1")
        # The supervisor and each worker say "reloaded:"; one process says it once.
        processes = 1 if workers == "1" else int(workers) + 1
        run = await call_through_sighup(node, config, new, processes)
        assert_no_loss(run)
        await allocate_with(server, "bob", "builder", refused=401, signed=False)
        await allocate_with(server, USERNAME, PASSWORD)
        assert await node.stop(signal.SIGTERM) == 0
    stderr = node.stderr_path.read_text()
    assert "Traceback" not in stderr
    reload_at = stderr.index("reloaded:")
    assert "auth.users" in stderr[reload_at:], stderr[reload_at:]
    assert "listen.udp" in stderr and "restart" in stderr, stderr
    # INFO lines (an allocation created, ended) before the reload, none after it: the
    # level is "warning" now, in every process.
    assert "INFO: trelay.node.turn_node: allocation created" in stderr[:reload_at]
    after = stderr[stderr.rindex("reloaded:") :].splitlines()[1:]
    assert not [line for line in after if ": INFO: trelay.node" in line], after


async def test_a_bad_file_keeps_the_settings_in_force(tmp_path: Path) -> None:
    config = tmp_path / "trelay.toml"
    config.write_text(settings_text("info", {USERNAME: PASSWORD}))
    async with running_workers(tmp_path, "--config", str(config)) as node:
        server = node.addresses("udp")[0]
        await trio.Path(config).write_text("[quotas]\nuser = -1\n")
        node.process.send_signal(signal.SIGHUP)

        async def refused() -> bool:
            return "reload refused" in node.stderr_path.read_text()

        await poll_until(refused)
        await allocate_with(server, USERNAME, PASSWORD)
        assert await node.stop(signal.SIGTERM) == 0
    stderr = node.stderr_path.read_text()
    assert "Traceback" not in stderr
    assert "reload refused, the settings in force stay" in stderr, stderr


TOKEN = "admin-token-for-the-reload-tests-0123"


async def reload_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [*trelay_command(), "reload", *args], capture_stdout=True, capture_stderr=True,
            check=False,
        )  # fmt: skip


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_trelay_reload_over_the_operator_port(tmp_path: Path, workers: str) -> None:
    config = tmp_path / "trelay.toml"
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    users = {USERNAME: PASSWORD, "bob": "builder"}
    config.write_text(settings_text("info", users))
    args = ("--config", str(config), "--admin-token-file", str(token), "--workers", workers)
    async with running_workers(tmp_path, *args) as node:
        server = node.addresses("udp")[0]
        common = ("--http", f"{node.http[0]}:{node.http[1]}", "--token-file", str(token))
        await allocate_with(server, "bob", "builder")
        await trio.Path(config).write_text(settings_text("info", {USERNAME: PASSWORD}))
        done = await reload_command(*common)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().startswith("reloaded: auth.users: 1 removed"), done.stdout
        # The answer comes once every worker was handed the reload; give them a moment
        # to apply it (each logs "reloaded:").
        await said_reloaded(node, 1 if workers == "1" else int(workers) + 1)
        await allocate_with(server, "bob", "builder", refused=401, signed=False)
        # A bad file: status 1, the reason, and nothing changes.
        await trio.Path(config).write_text("[quotas]\nuser = -1\n")
        refused = await reload_command(*common, "--json")
        assert refused.returncode == 1
        assert b"reload refused" in refused.stderr and b"quotas.user" in refused.stderr
        await allocate_with(server, USERNAME, PASSWORD)
        # Without the right token: status 1 and the route's reason.
        token.write_text("not-the-admin-token-0123456789\n")
        wrong = await reload_command(*common)
        assert wrong.returncode == 1 and b"HTTP 401: wrong admin token" in wrong.stderr
        assert await node.stop(signal.SIGTERM) == 0
    assert "Traceback" not in node.stderr_path.read_text()
