"""A fleet of three nodes in two regions, on one Redis, between NATs only a relay crosses.

The network (`tests.helpers.netns`, `nat_lab(relays=3)`): a public segment 203.0.113.0/24
with three `trelay serve` processes, "eu-1" (203.0.113.1) and "eu-2" (.2) in region "eu"
and "us-1" (.3) in region "us", and a real `redis-server` (Debian's) on the segment's
loopback, all in the public namespace; two clients behind symmetric NATs: c1, whose
public address 203.0.113.11 the fleet maps to "eu", and c2 (203.0.113.12) to "us"
(`[[fleet.placement.client_networks]]`). Each node serves the token API; the clients ask
us-1's, through their NATs, with a Bearer access token made by `trelay token`.

What it proves, in order (the module's nodes live through all of it):
- placement: each client is sent to its own region first, at most two nodes, and the
  other region after;
- a call: two aioice agents, each given only its first placed node, connect through two
  relays in two regions (nothing else crosses these NATs: test_nat_traversal's control);
- revocation: an identity revoked through one node's API is refused (401) by all three
  within a bound, while it was served before;
- drain: eu-1, carrying a call, drains (`POST /v1/drain`): placement stops naming it,
  a new client of "eu" is placed on eu-2 and allocates there, and the running call goes
  on relaying both ways with nothing lost;
- a node killed (SIGKILL, eu-2) disappears from placement within its registry TTL.

Skipped, naming what is missing, only where the namespaces cannot be built, or where
`redis-server` is not installed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.fleet_lab import ROOT, FleetLab, in_namespace, poll, start_redis
from tests.helpers.ice_agent import PASSWORD_VARIABLE, AgentProcess
from tests.helpers.netns import NatLab, nat_lab, unavailable_reason
from tests.helpers.trelay_process import trelay_command

TTL = 2.0  # the registry TTL of tests.helpers.fleet_lab's nodes
CONNECT_TIMEOUT = 15.0
MESSAGE_SIZE = 1000
REGIONS = {"eu-1": "eu", "eu-2": "eu", "us-1": "us"}
CLIENT_REGION = {"c1": "eu", "c2": "us"}


@dataclass
class Fleet:
    nodes: FleetLab
    keys_file: Path
    key_basic: str  # "Basic ..." of the API key
    admin_token: str
    api: str  # the token API the clients use (us-1's)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def lab(self) -> NatLab:
        return self.nodes.lab

    def bearer(self, identity: str) -> str:
        """An access token for `identity`, made as a back-end would (`trelay token`)."""
        if identity not in self.tokens:
            made = subprocess.run(
                [*trelay_command(), "token", f"--keys={self.keys_file}", f"--identity={identity}"],
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            self.tokens[identity] = made.stdout.strip()
        return self.tokens[identity]


def client_json(lab: NatLab, role: str, *argv: str, env: dict[str, str]) -> dict[str, Any]:
    """Run `tests.helpers.fleet_client` in `role`'s namespace; its JSON line."""
    return in_namespace(lab, role, "tests.helpers.fleet_client", *argv, env=env)


def ice_servers(fleet: Fleet, client: str, identity: str = "alice") -> dict[str, Any]:
    """What `client` gets from the token API through its NAT: the RTCConfiguration."""
    url = f"{fleet.api}/v1/ice-servers"
    env = {"TRELAY_TEST_AUTHORIZATION": f"Bearer {fleet.bearer(identity)}"}
    answer = client_json(fleet.lab, client, "http", "GET", url, env=env)
    assert answer["status"] == 200, answer
    body = answer["body"]
    assert isinstance(body, dict)
    return body


def placed_nodes(fleet: Fleet, body: dict[str, Any]) -> list[str]:
    """The node ids of the TURN URIs handed out, in order (one per node)."""
    by_ip = {node.ip: node_id for node_id, node in fleet.nodes.nodes.items()}
    placed: list[str] = []
    for server in body["iceServers"]:
        for url in server["urls"]:
            if url.startswith("turn:"):
                host = url.split(":")[1]
                if by_ip[host] not in placed:
                    placed.append(by_ip[host])
    return placed


def placed_without(fleet: Fleet, node_id: str) -> list[str] | None:
    """Where c1 is placed now, once that is not on `node_id` (None while it is)."""
    placed = placed_nodes(fleet, ice_servers(fleet, "c1"))
    return placed if placed and node_id not in placed else None


def turn_credential(body: dict[str, Any]) -> tuple[str, str]:
    server = next(s for s in body["iceServers"] if "username" in s)
    return server["username"], server["credential"]


# --- the fleet ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"the NAT lab cannot be built here: {reason}")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    with nat_lab(relays=3) as built:
        yield built


def placement(lab: NatLab) -> str:
    """[fleet.placement]: two nodes at most, each region the other's neighbour, and the
    clients' public addresses (their NATs') mapped to their regions."""
    networks = "".join(
        f'[[fleet.placement.client_networks]]\ncidr = "{site.public_ip}/32"\n'
        f'region = "{CLIENT_REGION[client]}"\n'
        for client, site in lab.sites.items()
    )
    neighbours = '[fleet.placement.neighbours]\neu = ["us"]\nus = ["eu"]\n'
    return f"[fleet.placement]\ncount = 2\n{neighbours}{networks}"


@pytest.fixture(scope="module")
def fleet(lab: NatLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    nodes = FleetLab(lab, tmp_path_factory.mktemp("fleet"))
    directory = nodes.directory
    admin_token = secrets.token_urlsafe(32)
    (directory / "admin-token").write_text(admin_token + "\n")
    keys_file = directory / "keys.toml"
    made = subprocess.run(
        [*trelay_command(), "keys", "create", f"--keys={keys_file}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    key = json.loads(made.stdout)
    basic = "Basic " + base64.b64encode(f"{key['sid']}:{key['secret']}".encode()).decode()
    start_redis(lab, directory)
    try:
        for index, (node_id, region) in enumerate(REGIONS.items()):
            args = (
                f"--api-keys={keys_file}", f"--admin-token-file={directory / 'admin-token'}",
                f"--revocations-file={directory / f'{node_id}-revocations.toml'}",
                "--drain-timeout=120",
            )  # fmt: skip
            ip = lab.relay_ips[index]
            nodes.start_node(node_id, ip, region=region, fleet_extra=placement(lab), args=args)
        yield Fleet(nodes, keys_file, basic, admin_token, nodes.nodes["us-1"].http)
    finally:
        nodes.stop()


def wait_registered(fleet: Fleet) -> None:
    """Until every node is in the registry (the first heartbeats)."""

    def every_node_placed() -> bool:
        seen = set(placed_nodes(fleet, ice_servers(fleet, "c1")))
        seen |= set(placed_nodes(fleet, ice_servers(fleet, "c2")))
        return seen == set(REGIONS)

    poll("every node in placement", every_node_placed)


# --- the tests, in order --------------------------------------------------------------


def test_each_client_is_placed_in_its_own_region_first(fleet: Fleet) -> None:
    wait_registered(fleet)
    eu = placed_nodes(fleet, ice_servers(fleet, "c1"))
    us = placed_nodes(fleet, ice_servers(fleet, "c2"))
    print(f"c1 placed on {eu}, c2 on {us}")
    assert sorted(eu) == ["eu-1", "eu-2"], eu  # two nodes at most, both of its region
    assert us[0] == "us-1" and us[1] in {"eu-1", "eu-2"} and len(us) == 2, us


def start_agent(
    fleet: Fleet, client: str, turn: str, credential: tuple[str, str], directory: Path
) -> AgentProcess:
    argv = ["call", f"--turn={turn}", f"--username={credential[0]}"]
    argv += [f"--connect-timeout={CONNECT_TIMEOUT}"]
    if client == "c1":
        argv.append("--controlling")
    log = directory / f"agent-{client}.log"
    with log.open("wb") as stderr:
        process = fleet.lab.popen(
            client, sys.executable, "-m", "tests.helpers.ice_agent", *argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT,
            env={**os.environ, PASSWORD_VARIABLE: credential[1], "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    return AgentProcess(process, f"agent {client}", log)


def exchange(left: AgentProcess, right: AgentProcess, label: str) -> None:
    """One message each way; both must arrive whole."""
    for sender, receiver in ((left, right), (right, left)):
        message = f"{label}: {sender.name} -> {receiver.name} ".ljust(MESSAGE_SIZE, "x")
        sender.send({"op": "send", "data": message})
        sender.expect("sent")
        receiver.send({"op": "receive"})
        assert receiver.expect("received")["data"] == message


class Call:
    """c1 on `c1_node`, c2 on its first placed node: two agents that connected."""

    def __init__(self, fleet: Fleet, c1_node: str, directory: Path, stack: ExitStack) -> None:
        body1, body2 = ice_servers(fleet, "c1"), ice_servers(fleet, "c2")
        c2_node = placed_nodes(fleet, body2)[0]
        self.nodes = (c1_node, c2_node)
        self.left = start_agent(
            fleet, "c1", fleet.nodes.nodes[c1_node].turn, turn_credential(body1), directory
        )
        stack.callback(self.left.close)
        self.right = start_agent(
            fleet, "c2", fleet.nodes.nodes[c2_node].turn, turn_credential(body2), directory
        )
        stack.callback(self.right.close)
        offers = [agent.expect("gathered") for agent in (self.left, self.right)]
        for agent, other in ((self.left, offers[1]), (self.right, offers[0])):
            agent.send({key: other[key] for key in ("candidates", "username", "password")})
        for agent in (self.left, self.right):
            pair = agent.expect("connected")["pair"]
            print(f"{agent.name}: {pair['local_type']} {pair['local_address']} -> "
                  f"{pair['remote_type']} {pair['remote_address']}")  # fmt: skip
            assert pair["local_type"] == "relay" or pair["remote_type"] == "relay", pair


def test_a_call_between_nats_goes_through_a_relay_in_each_region(
    fleet: Fleet, tmp_path: Path
) -> None:
    first = placed_nodes(fleet, ice_servers(fleet, "c1"))[0]
    with ExitStack() as stack:
        call = Call(fleet, first, tmp_path, stack)
        assert REGIONS[call.nodes[0]] == "eu" and call.nodes[1] == "us-1", call.nodes
        exchange(call.left, call.right, "two regions")


def allocations_by_node(fleet: Fleet, credential: tuple[str, str]) -> dict[str, object]:
    servers = [node.turn for node in fleet.nodes.nodes.values() if node.process.poll() is None]
    answer = client_json(
        fleet.lab, "pub", "allocate", f"--username={credential[0]}", *servers,
        env={"TRELAY_TEST_TURN_PASSWORD": credential[1]},
    )  # fmt: skip
    by_ip = {node.turn: node_id for node_id, node in fleet.nodes.nodes.items()}
    return {by_ip[server]: result for server, result in answer["results"].items()}


def test_a_revocation_reaches_every_node(fleet: Fleet) -> None:
    credential = turn_credential(ice_servers(fleet, "c1", identity="mallory"))
    assert set(allocations_by_node(fleet, credential).values()) == {"ok"}
    body = json.dumps({"identity": "mallory", "ttl": 600})
    env = {"TRELAY_TEST_AUTHORIZATION": fleet.key_basic}
    url = f"{fleet.nodes.nodes['eu-1'].http}/v1/revocations"
    revoked = client_json(fleet.lab, "pub", "http", "POST", url, "--body", body, env=env)
    started = time.monotonic()
    assert revoked["status"] == 201, revoked

    def refused_everywhere() -> dict[str, object] | None:
        results = allocations_by_node(fleet, credential)
        return results if set(results.values()) == {401} else None

    results = poll("401 from every node", refused_everywhere)
    print(f"revoked on {sorted(results)} within {time.monotonic() - started:.2f} s")
    # The API refuses the identity too, wherever it is asked.
    env = {"TRELAY_TEST_AUTHORIZATION": f"Bearer {fleet.bearer('mallory')}"}
    refused = client_json(fleet.lab, "c1", "http", "GET", f"{fleet.api}/v1/ice-servers", env=env)
    assert refused["status"] in {401, 403}, refused


def test_a_draining_node_leaves_placement_and_its_call_loses_nothing(
    fleet: Fleet, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        call = Call(fleet, "eu-1", tmp_path, stack)
        exchange(call.left, call.right, "before the drain")
        env = {"TRELAY_TEST_AUTHORIZATION": f"Bearer {fleet.admin_token}"}
        url = f"{fleet.nodes.nodes['eu-1'].http}/v1/drain"
        drained = client_json(fleet.lab, "pub", "http", "POST", url, env=env)
        assert drained["status"] == 202, drained
        started = time.monotonic()
        placed = poll("eu-1 out of placement", lambda: placed_without(fleet, "eu-1"))
        print(f"eu-1 left placement after {time.monotonic() - started:.2f} s: c1 now on {placed}")
        assert placed[0] == "eu-2", placed
        # A new client of "eu" allocates on the node it is sent to.
        credential = turn_credential(ice_servers(fleet, "c1", identity="newcomer"))
        assert allocations_by_node(fleet, credential)["eu-2"] == "ok"
        # The running call through eu-1 goes on, both ways, nothing lost.
        for round_ in range(3):
            exchange(call.left, call.right, f"draining, round {round_}")
        assert fleet.nodes.nodes["eu-1"].process.poll() is None, "eu-1 ended with a call running"


def test_a_killed_node_disappears_from_placement_within_its_ttl(fleet: Fleet) -> None:
    victim = fleet.nodes.nodes["eu-2"]
    assert "eu-2" in placed_nodes(fleet, ice_servers(fleet, "c1"))
    victim.process.kill()
    victim.process.wait(timeout=10)
    killed = time.monotonic()
    placed = poll("eu-2 out of placement", lambda: placed_without(fleet, "eu-2"))
    gone = time.monotonic() - killed
    print(f"eu-2 left placement {gone:.2f} s after SIGKILL (TTL {TTL} s): c1 now on {placed}")
    # The TTL, one listing refresh of the API and this poll's step: never much more.
    assert gone < TTL + 8.0, gone
    assert placed == ["us-1"], placed  # eu-1 drains, eu-2 is gone: the neighbour region
