"""coturn's `turnutils_stunclient` as a real STUN client of trelay's UDP listener.

The tool speaks UDP only (its options are -p server port, -L local address and -f for
RFC 5780) and has no option for its local port, so the printed reflexive address is
checked against the source address trelay recorded for the request: on loopback there
is no NAT, so they must be the same address and port.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.helpers.binding_relay import ThreadedRelay

STUNCLIENT = shutil.which("turnutils_stunclient")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        STUNCLIENT is None,
        reason="coturn's turnutils_stunclient is not installed (apt-get install coturn)",
    ),
]

TIMEOUT = 30
# e.g. "0: : IPv4. UDP reflexive addr: 127.0.0.1:35912"
#      "0: : IPv6. UDP reflexive addr: [::1]:35912" (brackets or not, depending on version)
REFLEXIVE = re.compile(r"UDP reflexive addr: \[?([0-9A-Fa-f.:]+?)\]?:(\d+)\s*$", re.MULTILINE)


def run_stunclient(server: tuple[str, int], local_host: str) -> list[tuple[str, int]]:
    assert STUNCLIENT is not None
    done = subprocess.run(
        [STUNCLIENT, "-p", str(server[1]), "-L", local_host, server[0]],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"stunclient failed: {done.stdout}\n{done.stderr}"
    found = [(host, int(port)) for host, port in REFLEXIVE.findall(done.stdout)]
    assert found, f"no reflexive address in the output: {done.stdout!r}"
    return found


def test_stunclient_sees_its_real_source_address_over_ipv4(relay: ThreadedRelay) -> None:
    relay.responder.clear()
    printed = run_stunclient(relay.udp, "127.0.0.1")
    seen = relay.responder.sources()
    assert seen, "trelay received nothing"
    # One socket, one source: every request came from the same address and port...
    assert set(seen) == {seen[0]}
    assert seen[0][0] == "127.0.0.1"
    # ...and that is what the client was told.
    assert set(printed) == {seen[0]}


def test_stunclient_sees_its_real_source_address_over_ipv6(relay: ThreadedRelay) -> None:
    if relay.udp6 is None:
        pytest.skip("no IPv6 loopback (::1) on this machine")
    relay.responder.clear()
    printed = run_stunclient(relay.udp6, "::1")
    seen = relay.responder.sources()
    assert seen, "trelay received nothing"
    assert set(seen) == {seen[0]}
    assert seen[0][0] == "::1"
    assert set(printed) == {seen[0]}
