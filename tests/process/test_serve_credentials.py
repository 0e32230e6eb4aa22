"""`trelay serve` with the credential side switched on, end to end through the real process:
an API key and an access token from the CLI, `/v1/ice-servers` minting a TURN credential
that allocates, a revocation through the API that the node picks up from the watched file,
and `/selftest` handing out credentials that work."""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path

import pytest
import trio

from tests.helpers.http_client import http_request
from tests.helpers.trelay_process import allocate_with, running_trelay, stop
from trelay.process.cli import main

SECRET = "the-turn-rest-secret-shared-by-every-node"
REVOCATION_WAIT = 15.0  # the node polls the file every 2 s


def mint(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out.strip()


async def test_tokens_revocations_and_selftest_through_the_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.toml"
    key = json.loads(mint(capsys, "keys", "create", "--keys", str(keys)))
    token = mint(capsys, "token", "--keys", str(keys), "--identity", "alice")
    revocations = tmp_path / "revoked.toml"
    args = ["--secret", SECRET, "--api-keys", str(keys), "--revocations-file", str(revocations)]
    args += ["--log-format", "json"]
    # Allocations made before the node read the revocation cannot be deleted (401 on
    # Refresh): no drain (tests/process/test_drain_call.py tests that) waits for them.
    args += ["--drain-timeout", "0"]
    async with running_trelay(tmp_path, *args, "--selftest") as running:
        [udp] = running.addresses("udp")
        [http] = running.addresses("http")
        # A configured secret: the ready line names the listeners, and no credential.
        assert "username" not in json.dumps(running.ready)

        bearer = {"Authorization": f"Bearer {token}"}
        answer = await http_request(http, "/v1/ice-servers?policy=relay", headers=bearer)
        assert answer.status == 200, answer.text
        config = answer.json()
        assert isinstance(config, dict) and config["iceTransportPolicy"] == "relay"
        turn = next(s for s in config["iceServers"] if "username" in s)
        assert turn["username"].endswith(":alice")
        await allocate_with(udp, turn["username"], turn["credential"])

        forged = {"Authorization": f"Bearer {token[:-2]}xx"}
        refused = await http_request(http, "/v1/ice-servers", headers=forged)
        assert refused.status == 401

        basic = base64.b64encode(f"{key['sid']}:{key['secret']}".encode()).decode()
        revoke = await http_request(
            http, "/v1/revocations", "POST",
            {"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
            json.dumps({"identity": "alice", "ttl": 3600}).encode(),
        )  # fmt: skip
        assert revoke.status == 201, revoke.text
        # The node learns it from the file it watches; the credential minted before the
        # revocation stops allocating (401, signed).
        with trio.fail_after(REVOCATION_WAIT):
            while True:
                try:
                    await allocate_with(udp, turn["username"], turn["credential"], refused=401)
                    break
                except AssertionError:
                    await trio.sleep(0.5)
        again = await http_request(http, "/v1/ice-servers", headers=bearer)
        assert again.status in (401, 403), again.text

        page = await http_request(http, "/selftest")
        assert page.status == 200 and "Does this relay work?" in page.text
        selftest = await http_request(http, "/selftest/ice-servers")
        servers = selftest.json()
        assert isinstance(servers, dict)
        entry = next(s for s in servers["iceServers"] if "username" in s)
        assert entry["username"].endswith(":selftest")
        await allocate_with(udp, entry["username"], entry["credential"])
        assert await stop(running, signal.SIGTERM) == 0

    # Logs: one JSON object per line, one line per allocation event, no secret, no username.
    stderr = running.stderr_path.read_text()
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    created = [r for r in records if r["message"] == "allocation created"]
    assert len(created) >= 2  # more while the node had not yet read the revocation
    assert all(r["transport"] == "udp" and "user_ref" in r and "username" not in r for r in created)
    for secret in (SECRET, key["secret"], token, turn["credential"], entry["credential"]):
        assert secret not in stderr
    assert "alice" not in stderr
