"""Chromium follows 300 ALTERNATE-SERVER from an overloaded trelay node to another one.

A fleet node over its `[fleet] max_allocations` answers new Allocates with 300 Try
Alternate naming an available node of its region (RFC 8656 §6.2, RFC 8489 §10;
`trelay.fleet.overflow`, `trelay.turn.redirection`; design §9). Chromium's TURN client
retries the Allocate there (WebRTC `TurnPort::SetAlternateServer`), but refuses an
alternate on a loopback address (crbug 649118), so this runs in network namespaces
(`tests.helpers.netns`, `tests.helpers.fleet_lab`) with real addresses:

- "pub": a redis-server and two `trelay serve` nodes of region "eu": A (203.0.113.1,
  `max_allocations = 2`) and B (203.0.113.2, no limit), and headless Debian Chromium
  (`tests.helpers.chromium_process`), whose page makes a relay-only call between two
  RTCPeerConnections (`relay_call.js`) given ONLY node A as its TURN server.

Chromium is on the public segment, not behind the lab's NAT: after the 300 it sends
its Allocate to B signed with the realm and nonce A gave it (WebRTC keeps them, and
fails the allocation on any error but 300/401-before-credentials/437 - a 438 included).
The nodes share their nonce key (derived from the shared TURN REST secret), but a
nonce is bound to the client's transport address, which a symmetric NAT changes per
destination: there, B answers 438 and Chromium gives up on that TURN server. The last
test pins this down with Chromium in "c1" behind the lab's symmetric NAT, gathering
(`relay_gather.js`) with only an overloaded A: no relay candidate, one 438 candidate
error, a 300 counted by A and a 438 by B. (Behind an endpoint-independent NAT, RFC 4787
REQ-1, the source address stays the same and Chromium follows as on the segment.)

The control: with A unloaded, both relay candidates are A's relayed addresses, the call
connects through A, and A answers no 300. The proof: A filled to its limit by two
allocations held from "pub" (`tests.helpers.held_allocations`), and answering a probe
Allocate 300 with ALTERNATE-SERVER B; then Chromium's relay candidates are B's
addresses, the call connects relay/relay through B (B holds both allocations and
relayed the data both ways), and A's `trelay_requests_total{method="allocate",
code="300"}` grew by at least one per peer connection.

Skipped, naming what is missing, only where the namespaces cannot be built or
redis-server or Chromium is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import SCRIPT_TIMEOUT, missing_binaries
from tests.helpers.chromium_process import ChromiumProcess
from tests.helpers.fleet_lab import (
    PASSWORD_VARIABLE,
    ROOT,
    FleetLab,
    Node,
    in_namespace,
    poll,
    start_redis,
)
from tests.helpers.ice_agent import JsonLines
from tests.helpers.netns import NatLab, nat_lab, unavailable_reason

pytestmark = pytest.mark.interop

RELAY_CALL = Path(__file__).with_name("relay_call.js")
RELAY_GATHER = Path(__file__).with_name("relay_gather.js")
MESSAGE = "hello through the alternate"
PAGE_MARGIN = 5.0  # the page answers this long before Selenium's script timeout
MAX_ALLOCATIONS = 2  # A's limit: one call (two allocations) fits, two held fill it
REQUESTS = "trelay_requests_total"
ACTIVE = "trelay_allocations_active"
RELAYED = "trelay_relayed_bytes_total"


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"the NAT lab cannot be built here: {reason}")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"Debian Chromium is not installed ({', '.join(missing)} missing; "
            "apt-get install chromium chromium-driver)"
        )
    with nat_lab(relays=2) as built:
        yield built


@pytest.fixture(scope="module")
def fleet(lab: NatLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetLab]:
    built = FleetLab(lab, tmp_path_factory.mktemp("fleet"))
    start_redis(lab, built.directory)
    try:
        limit = f"max_allocations = {MAX_ALLOCATIONS}"
        built.start_node("a", lab.relay_ips[0], region="eu", fleet_extra=limit)
        built.start_node("b", lab.relay_ips[1], region="eu")
        yield built
    finally:
        built.stop()


def start_browser(lab: NatLab, role: str, directory: Path) -> ChromiumProcess:
    log = directory / "chromium.log"
    with log.open("wb") as stderr:
        process = lab.popen(
            role, sys.executable, "-m", "tests.helpers.chromium_process", str(directory),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    chromium = ChromiumProcess(process, f"chromium in {role}", log)
    print(f"Chromium up in {role} after {chromium.started['seconds']} s")
    return chromium


@pytest.fixture(scope="module")
def browser(lab: NatLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromiumProcess]:
    """Chromium on the public segment (203.0.113.1 is its source address)."""
    chromium = start_browser(lab, "pub", tmp_path_factory.mktemp("chromium"))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def browser_behind_nat(
    lab: NatLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChromiumProcess]:
    """Chromium in "c1", behind its symmetric NAT (203.0.113.11, a port per flow)."""
    chromium = start_browser(lab, "c1", tmp_path_factory.mktemp("chromium-c1"))
    try:
        yield chromium
    finally:
        chromium.close()


# --- what the tests share -------------------------------------------------------------


def probe(fleet: FleetLab, node: Node) -> dict[str, Any]:
    """One Allocate to `node` from "pub" (released at once if served): code, alternate."""
    username, password = fleet.login("probe")
    return in_namespace(
        fleet.lab, "pub", "tests.helpers.held_allocations", "probe",
        f"--username={username}", node.turn, env={PASSWORD_VARIABLE: password},
    )  # fmt: skip


def allocate_300s(fleet: FleetLab, node_id: str) -> float:
    return fleet.metric(node_id, REQUESTS, method="allocate", code="300")


def allocate_errors(fleet: FleetLab, node_id: str, code: str) -> float:
    return fleet.metric(node_id, REQUESTS, method="allocate", code=code)


def active(fleet: FleetLab, node_id: str) -> float:
    return fleet.metric(node_id, ACTIVE, transport="udp")


def settle(fleet: FleetLab) -> None:
    """No allocation on either node, and A serves Allocates itself (no 300 any more)."""
    for node_id in fleet.nodes:
        wait_released(fleet, node_id)
    poll("node a serves an Allocate itself", lambda: probe(fleet, fleet.nodes["a"])["code"] == 200)


def relay_call(browser: ChromiumProcess, fleet: FleetLab, node: Node) -> dict[str, Any]:
    """The page's call with ONLY `node` as its TURN server; the result line."""
    username, credential = fleet.login("chromium")
    args = {
        "url": node.turn_uri,
        "username": username,
        "credential": credential,
        "message": MESSAGE,
        "deadlineMs": int((SCRIPT_TIMEOUT - PAGE_MARGIN) * 1000),
    }
    line = browser.run(RELAY_CALL, args)
    result = line["result"]
    assert isinstance(result, dict) and result["ok"], (
        f"page result: {result!r}\nbrowser console: {line['console']!r}"
    )
    print(f"the call connected in {line['seconds']} s (script run, page load included)")
    return line


def candidate_addresses(result: dict[str, Any]) -> set[str]:
    """The IPs of every gathered candidate; each must be a relayed one (policy "relay")."""
    addresses = set()
    for side in ("caller", "callee"):
        gathered = result["candidates"][side]
        assert gathered, result
        for candidate in gathered:
            fields = candidate.split()
            assert fields[fields.index("typ") + 1] == "relay", candidate
            addresses.add(fields[4])
    return addresses


def check_call_through(result: dict[str, Any], node: Node) -> None:
    """Relayed candidates on `node` only, and relay/relay pairs between them."""
    assert (result["received"], result["echo"]) == (MESSAGE, "echo:" + MESSAGE)
    assert candidate_addresses(result) == {node.ip}, result["candidates"]
    caller, callee = result["pairs"]
    for pair in (caller, callee):
        assert pair is not None, result
        assert (pair["localType"], pair["remoteType"]) == ("relay", "relay"), pair
        assert pair["local"].rpartition(":")[0] == node.ip, pair
    assert (caller["remote"], callee["remote"]) == (callee["local"], caller["local"])


def wait_released(fleet: FleetLab, node_id: str) -> None:
    poll(f"node {node_id} holds no allocation", lambda: active(fleet, node_id) == 0)


@contextmanager
def overloaded(fleet: FleetLab, directory: Path) -> Iterator[None]:
    """Node A filled to its limit by allocations held from "pub", until it answers a
    probe Allocate 300 naming B (its registry entry says overloaded, and its overflow
    task picked B); they are released when the block ends."""
    a, b = fleet.nodes["a"], fleet.nodes["b"]
    settle(fleet)
    username, password = fleet.login("filler")
    log = directory / "holder.log"
    with log.open("wb") as stderr:
        process = fleet.lab.popen(
            "pub", sys.executable, "-m", "tests.helpers.held_allocations", "hold",
            f"--count={MAX_ALLOCATIONS}", f"--username={username}", "--limit=60", a.turn,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT,
            env={**os.environ, PASSWORD_VARIABLE: password},
        )  # fmt: skip
    holder = JsonLines(process, "holder", log)
    try:
        held = holder.read()
        assert held["event"] == "held", held
        filled = time.monotonic()
        redirected = poll("node a answers 300", lambda: (p := probe(fleet, a))["code"] == 300 and p)
        print(f"node a answers 300 {time.monotonic() - filled:.2f} s after it was filled")
        assert redirected["alternate"] == b.turn, redirected
        yield
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            assert holder.read()["event"] == "released"
        finally:
            process.wait(timeout=10)


def hang_up(browser: ChromiumProcess, fleet: FleetLab, node_id: str) -> None:
    browser.execute("window.trelayHangUp()")
    wait_released(fleet, node_id)


# --- the tests --------------------------------------------------------------------------


def test_control_an_unloaded_node_relays_the_call_itself(
    fleet: FleetLab, browser: ChromiumProcess
) -> None:
    settle(fleet)
    before = allocate_300s(fleet, "a")
    line = relay_call(browser, fleet, fleet.nodes["a"])
    try:
        check_call_through(line["result"], fleet.nodes["a"])
        assert (active(fleet, "a"), active(fleet, "b")) == (2, 0)
        assert allocate_300s(fleet, "a") == before
    finally:
        hang_up(browser, fleet, "a")


def test_chromium_follows_300_from_an_overloaded_node(
    fleet: FleetLab, browser: ChromiumProcess, tmp_path: Path
) -> None:
    a, b = fleet.nodes["a"], fleet.nodes["b"]
    with overloaded(fleet, tmp_path):
        before = allocate_300s(fleet, "a")
        line = relay_call(browser, fleet, a)
        try:
            check_call_through(line["result"], b)
            # One 300 at least per peer connection (each has its own TurnPort).
            assert allocate_300s(fleet, "a") - before >= 2
            assert (active(fleet, "a"), active(fleet, "b")) == (MAX_ALLOCATIONS, 2)
            scrape = fleet.scrape("b")
            for direction in ("client_to_peer", "peer_to_client"):
                relayed = scrape.value(RELAYED, direction=direction, transport="udp")
                assert relayed >= len(MESSAGE), (direction, relayed)
        finally:
            hang_up(browser, fleet, "b")


def test_behind_a_symmetric_nat_chromium_gets_438_at_the_alternate(
    fleet: FleetLab, browser_behind_nat: ChromiumProcess, tmp_path: Path
) -> None:
    a = fleet.nodes["a"]
    with overloaded(fleet, tmp_path):
        redirects, stale = allocate_300s(fleet, "a"), allocate_errors(fleet, "b", "438")
        username, credential = fleet.login("chromium-behind-nat")
        args = {
            "url": a.turn_uri,
            "username": username,
            "credential": credential,
            "deadlineMs": int((SCRIPT_TIMEOUT - PAGE_MARGIN) * 1000),
        }
        line = browser_behind_nat.run(RELAY_GATHER, args)
        result = line["result"]
        print(f"gathering behind the NAT ended in {line['seconds']} s: {result}")
        # A redirected it, B refused A's nonce (another source port), and Chromium
        # gave the server up: no relay candidate, one 438 candidate error.
        assert result["complete"] and result["candidates"] == [], result
        assert [e["code"] for e in result["errors"]] == [438], result
        assert allocate_300s(fleet, "a") - redirects >= 1
        assert allocate_errors(fleet, "b", "438") - stale >= 1
        assert active(fleet, "b") == 0
