"""The pytest plugin as a user meets it: a small test project run by pytest in a subprocess.

The project only has trelay installed: no conftest, no `pytest_plugins`; the plugin comes
from the `pytest11` entry point `trelay`. It uses `turn_server`, `relayed_pair` and
`@pytest.mark.relay_only` (under `--strict-markers`, so the marker must be registered),
from a plain test that calls `asyncio.run` and from a trio test.
"""

from __future__ import annotations

import aioice
import pytest

from tests.helpers.user_project import CALL_WITHOUT_TRELAY

SUBPROCESS_TIMEOUT = 120.0
# Host candidates exclude 127.0.0.1 (aioice), so a host-to-host call needs another address.
HAS_HOST_ADDRESS = bool(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False))


USER_TESTS = (
    """
import asyncio
import socket

import aioice
import pytest
import trio

from trelay.icekit import assert_relayed, connect_pair

PAYLOAD = b"x" * 1000


"""
    + CALL_WITHOUT_TRELAY
    + """


@pytest.mark.relay_only
def test_marker_forces_the_relay(turn_server):
    asyncio.run(call_without_trelay())
    assert turn_server.counters().client_to_peer_bytes >= len(PAYLOAD)


def test_relayed_pair(relayed_pair, turn_server):
    async def main():
        async with relayed_pair() as pair:
            await pair.left.send(PAYLOAD)
            assert await asyncio.wait_for(pair.right.recv(), 20.0) == PAYLOAD
            assert_relayed(pair.left, turn_server.relayed_addresses())
            return turn_server.counters()

    counters = asyncio.run(main())
    assert counters.allocations == 2
    assert counters.client_to_peer_bytes >= len(PAYLOAD)


@pytest.mark.trio
async def test_turn_server_from_trio(turn_server):
    request = bytes.fromhex("0001 0000 2112a442") + b"trelay-test!"  # STUN Binding
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, trio.fail_after(10):
        await sock.sendto(request, turn_server.udp)
        answer, _ = await sock.recvfrom(2048)
    assert answer[:2] == bytes.fromhex("0101") and answer[8:20] == request[8:20]
    assert turn_server.ice_configuration["iceTransportPolicy"] == "relay"
"""
)


def run_user_project(pytester: pytest.Pytester, tests: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=tests)
    args = ["--strict-markers", "-p", "no:cacheprovider", "-v"]
    return pytester.runpytest_subprocess(*args, timeout=SUBPROCESS_TIMEOUT)


def test_user_project_uses_fixtures_and_marker(pytester: pytest.Pytester) -> None:
    result = run_user_project(pytester, USER_TESTS)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["plugins:*trelay-*"])  # loaded by the entry point


@pytest.mark.skipif(not HAS_HOST_ADDRESS, reason="no non-loopback IPv4 address for aioice")
def test_user_project_sees_a_host_pair_fail_assert_relayed(pytester: pytest.Pytester) -> None:
    tests = USER_TESTS.replace("@pytest.mark.relay_only\n", "")
    result = run_user_project(pytester, tests)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: the call is not relayed: selected component 1: local host *"
            " -> remote host *; wanted local relay -> remote relay",
            "FAILED test_user.py::test_marker_forces_the_relay - AssertionError*",
        ]
    )


def test_relay_only_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_markers="")
    result = pytester.runpytest_subprocess("--markers", timeout=SUBPROCESS_TIMEOUT)
    result.stdout.fnmatch_lines(["@pytest.mark.relay_only(transport='udp'): force every aioice*"])
