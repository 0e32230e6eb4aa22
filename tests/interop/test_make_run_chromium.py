"""What `make run` prints, pasted into headless Debian Chromium as-is, gathers relay candidates.

`make run` is `trelay serve --allow-loopback-peers --selftest` with no configuration: the
development defaults. Its stderr has an `iceServers: [...]` block to paste into
`new RTCPeerConnection({...})`. The test runs that command, takes the block from stderr
exactly as printed, gives it to an RTCPeerConnection in Chromium (default policy, as a
developer pasting it would) and waits for ICE gathering to complete.

Chromium waits about 40 s on an ICE server URL it cannot use (the old block's stuns:,
and turns: to the throw-away self-signed certificate) before it ends gathering. The page
stops waiting after `GATHER_DEADLINE` (20 s, well under those 40 s and far above the
fraction of a second it takes when nothing is unusable), so "complete" within the
deadline means no URL made Chromium wait: no timing threshold of its own, nothing that
flakes on a slow runner. The time measured in the page is printed (`pytest -s`) for the
record.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from tests.helpers.chromium import SCRIPT_TIMEOUT, diagnostics, headless_chromium, missing_binaries
from tests.helpers.trelay_process import trelay_command

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        bool(missing_binaries()),
        reason=f"Debian Chromium is not installed ({', '.join(missing_binaries())} missing; "
        "apt-get install chromium chromium-driver)",
    ),
]

MAKE_RUN = ("serve", "--allow-loopback-peers", "--selftest")  # the Makefile's `run`
GATHER_DEADLINE = 20.0  # under Chromium's ~40 s wait for an unusable server (see above)
assert GATHER_DEADLINE < SCRIPT_TIMEOUT
READY_TIMEOUT = 30.0

GATHER = """
const [config, deadlineMs] = arguments;
const done = arguments[arguments.length - 1];
const candidates = [];
const errors = [];
let pc;
try {
  pc = new RTCPeerConnection(config);  // throws on a URL or credential it refuses
} catch (error) {
  done({ state: "refused", error: String(error), candidates, errors, ms: 0 });
  return;
}
let finished = false;
const started = performance.now();
function finish(state) {
  if (finished) return;
  finished = true;
  const ms = performance.now() - started;
  pc.close();
  done({ state, ms, candidates, errors });
}
pc.onicecandidate = (event) => {
  if (!event.candidate) { finish("complete"); return; }
  const c = event.candidate;
  candidates.push({ type: c.type, relayProtocol: c.relayProtocol ?? null, url: c.url ?? null,
                    candidate: c.candidate });
};
pc.onicecandidateerror = (event) => {
  errors.push(`${event.url} ${event.errorCode} ${event.errorText}`);
};
setTimeout(() => finish("deadline"), deadlineMs);
pc.createDataChannel("paste-test");
pc.createOffer().then((offer) => pc.setLocalDescription(offer))
  .catch((error) => { errors.push(String(error)); finish("failed"); });
"""


@contextmanager
def make_run(tmp_path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """`make run`'s command: (its ready line, its stderr up to the ready line)."""
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*trelay_command(), *MAKE_RUN],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT)
        assert readable, "no ready line from trelay serve"
        ready = json.loads(process.stdout.readline())
        # trelay writes its stderr hints before the ready line: they are complete now.
        yield ready, stderr_path.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=READY_TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover - reported by the kill
            process.kill()
            process.wait(timeout=READY_TIMEOUT)


def pasted_configuration(stderr: str) -> dict[str, Any]:
    """`{iceServers: ...}` from the block on stderr, as a developer would paste it."""
    start = stderr.index("iceServers: [") + len("iceServers: ")
    end = stderr.index("\n]", start) + 2
    return {"iceServers": json.loads(stderr[start:end])}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    with headless_chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as driver:
        yield driver


def test_make_run_s_pasted_configuration_gathers_relay_candidates(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    with make_run(tmp_path) as (ready, stderr):
        config = pasted_configuration(stderr)
        urls = [url for server in config["iceServers"] for url in server["urls"]]
        # Only schemes a browser speaks: no stuns:, no turns: to a certificate it refuses.
        assert urls and all(url.startswith(("stun:", "turn:")) for url in urls), urls
        assert ready["tls"], ready  # TLS is there all the same, and stderr says where
        [tls] = ready["tls"]
        assert f"TURN over TLS listens on {tls} with a throw-away" in stderr

        browser.get("about:blank")
        result = browser.execute_async_script(GATHER, config, int(GATHER_DEADLINE * 1000))
    assert isinstance(result, dict)
    print(f"\nChromium gathered the pasted configuration in {result['ms']:.0f} ms")
    assert result["state"] == "complete", diagnostics(result, browser)
    # The dev credential allocated through every TURN URL of the block (over UDP and
    # TCP). The candidate's url says which server gave it (its relayProtocol is not
    # filled in for UDP by every Chromium).
    relayed = {c["url"] for c in result["candidates"] if c["type"] == "relay"}
    assert relayed == {url for url in urls if url.startswith("turn:")}, diagnostics(result, browser)
    assert {url.rpartition("=")[2] for url in relayed} == {"udp", "tcp"}
