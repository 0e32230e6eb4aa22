"""Proof between NATs: two clients behind symmetric NATs connect only through trelay.

The network (`tests.helpers.netns`): a public segment 203.0.113.0/24 where a real `trelay
serve` process listens on 203.0.113.1 (STUN and TURN, UDP 3478 and 3479), and two NAT
routers (203.0.113.11, 203.0.113.12), each masquerading a private LAN with one client
(10.1.0.2, 10.2.0.2) with address- and port-dependent mapping and filtering.

- The NATs are symmetric: one client socket is mapped to a different public port
  towards each destination (trelay's two STUN ports see two mappings).
- With every candidate type allowed (host, server-reflexive from trelay's STUN, relayed
  from its TURN), two aioice agents, each a process in its client's namespace signalled
  through the test, connect, exchange data both ways, and the selected pair goes
  through the relay (a relay candidate on at least one side, the relay's address on the
  other); trelay's `trelay_relayed_bytes_total` grows by at least each message's size.
- The control: the same agents with STUN only (server-reflexive candidates, no relay)
  fail to connect: hole punching does not get through these NATs.

The peer policy: trelay denies documentation ranges (TEST-NET-3 among them) as peers by
default (`trelay.turn.policy.DEFAULT_DENIED`, design §6). The test allows exactly its
public segment with `relay.allow_peers` in a `--config` file, the operator's knob for
this; the defaults stay in force for everything else (the clients' private host
addresses are still denied), and no public address on the internet is borrowed.

Skipped, naming what is missing, only where the namespaces cannot be built (not root,
no `ip`, no `nft`, or the kernel refuses namespaces or nftables NAT).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.ice_agent import PASSWORD_VARIABLE, AgentProcess, JsonLines
from tests.helpers.netns import NatLab, nat_lab, unavailable_reason
from tests.helpers.trelay_process import trelay_command

ROOT = Path(__file__).resolve().parents[2]
STUN_PORTS = (3478, 3479)
USERNAME = "nat-test"
READY_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0  # the agents' bound on connect(); the relayed call takes ~1 s
MESSAGE_SIZE = 1000  # far more than the STUN consent checks sharing the relay meanwhile
_SCRAPE = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


@dataclass(frozen=True, slots=True)
class Relay:
    """The `trelay serve` process in the public namespace."""

    stun: tuple[str, ...]  # "ip:port" per UDP listener
    metrics_url: str
    password: str


@pytest.fixture(scope="module")
def lab() -> Iterator[NatLab]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"the NAT lab cannot be built here: {reason}")
    with nat_lab() as built:
        yield built


@pytest.fixture(scope="module")
def relay(lab: NatLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    directory = tmp_path_factory.mktemp("nat-relay")
    config = directory / "trelay.toml"
    config.write_text(f'[relay]\nallow_peers = ["{lab.public_network}"]\n')
    password = secrets.token_urlsafe(16)
    listen = [f"--listen-udp={lab.relay_ip}:{port}" for port in STUN_PORTS]
    log = directory / "trelay.log"
    with log.open("wb") as stderr:
        process = lab.popen(
            "pub",
            *trelay_command(),
            "serve",
            f"--config={config}",
            *listen,
            f"--relay-address={lab.relay_ip}",
            f"--user={USERNAME}:{password}",
            "--listen-http=127.0.0.1:0",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        lines = JsonLines(process, "trelay serve", log)
        ready = lines.read(READY_TIMEOUT)
        assert ready["event"] == "ready", ready
        yield Relay(tuple(ready["udp"]), f"http://{ready['http'][0]}/metrics", password)
        assert process.poll() is None, f"trelay serve exited during the tests:\n{lines.log_tail()}"
    finally:
        process.kill()
        process.wait(timeout=10)


def start_agent(
    lab: NatLab, relay: Relay, directory: Path, client: str, *, turn: bool
) -> AgentProcess:
    argv = ["call", f"--stun={relay.stun[0]}"]
    if turn:
        argv += [f"--turn={relay.stun[0]}", f"--username={USERNAME}"]
    if client == "c1":
        argv.append("--controlling")
    argv.append(f"--connect-timeout={CONNECT_TIMEOUT}")
    log = directory / f"{client}.log"
    with log.open("wb") as stderr:
        process = lab.popen(
            client,
            sys.executable,
            "-m",
            "tests.helpers.ice_agent",
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env={**os.environ, PASSWORD_VARIABLE: relay.password, "PYTHONUNBUFFERED": "1"},
        )
    return AgentProcess(process, f"agent {client}", log)


Offers = dict[str, list[str]]  # agent name -> its candidates (SDP)


def candidate_type(sdp: str) -> str:
    return sdp.split(" typ ")[1].split()[0]


def relayed_addresses(offers: Offers) -> set[tuple[str, int]]:
    """The relay candidates' addresses (allocations on trelay) of every agent."""
    found = set()
    for sdp in (sdp for candidates in offers.values() for sdp in candidates):
        if candidate_type(sdp) == "relay":
            fields = sdp.split()  # foundation component transport priority host port typ
            found.add((fields[4], int(fields[5])))
    return found


@contextmanager
def signalled_pair(
    lab: NatLab, relay: Relay, directory: Path, *, turn: bool
) -> Iterator[tuple[AgentProcess, AgentProcess, Offers]]:
    """Two agents (c1 controlling) that have swapped candidates and ICE credentials
    through the test; with the candidates each gathered. Closed on leaving."""
    with ExitStack() as stack:
        agents = []
        for client in ("c1", "c2"):
            agent = start_agent(lab, relay, directory, client, turn=turn)
            stack.callback(agent.close)
            agents.append(agent)
        left, right = agents
        offers = [agent.expect("gathered") for agent in agents]
        left.send({key: offers[1][key] for key in ("candidates", "username", "password")})
        right.send({key: offers[0][key] for key in ("candidates", "username", "password")})
        yield left, right, {a.name: o["candidates"] for a, o in zip(agents, offers, strict=True)}


def relayed_bytes(lab: NatLab, relay: Relay) -> float:
    """trelay's relayed payload bytes, both directions, every transport (one scrape)."""
    text = lab.run("pub", sys.executable, "-c", _SCRAPE, relay.metrics_url).stdout
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "trelay_relayed_bytes_total"
    )


def through_relay(pair: dict[str, Any], allocations: set[tuple[str, int]]) -> bool:
    """The pair starts at a relayed candidate, or ends at one of the relay's allocations
    (the other agent's relayed candidates, whatever type the agent learnt them as)."""
    host, port = pair["remote_address"]
    return pair["local_type"] == "relay" or (host, port) in allocations


def test_each_nat_maps_one_socket_to_a_new_port_per_destination(lab: NatLab, relay: Relay) -> None:
    for client, site in lab.sites.items():
        probe = lab.run(
            client, sys.executable, "-m", "tests.helpers.ice_agent", "mapping", *relay.stun
        )
        first, second = json.loads(probe.stdout.splitlines()[-1])["addresses"]
        # The relay sees the router's public address, never the client's private one...
        assert first[0] == second[0] == site.public_ip, (client, first, second)
        # ...and a different public port towards each of its two ports: symmetric NAT.
        assert first[1] != second[1], f"{client}: one mapping for two destinations {first}"


def test_call_between_symmetric_nats_connects_through_the_relay_only(
    lab: NatLab, relay: Relay, tmp_path: Path
) -> None:
    started = time.monotonic()
    with signalled_pair(lab, relay, tmp_path, turn=True) as (c1, c2, offers):
        for name, candidates in offers.items():
            types = {candidate_type(sdp) for sdp in candidates}
            assert types == {"host", "srflx", "relay"}, f"{name} gathered {types}"
        allocations = relayed_addresses(offers)
        pairs = {agent.name: agent.expect("connected")["pair"] for agent in (c1, c2)}
        for name, pair in pairs.items():
            print(f"{name}: local {pair['local_type']} {pair['local_address']}"
                  f" -> remote {pair['remote_type']} {pair['remote_address']}")  # fmt: skip
            assert through_relay(pair, allocations), f"{name} selected a direct pair: {pair}"

        for sender, receiver in ((c1, c2), (c2, c1)):
            message = f"{sender.name} -> {receiver.name} ".ljust(MESSAGE_SIZE, "x")
            before = relayed_bytes(lab, relay)
            sender.send({"op": "send", "data": message})
            sender.expect("sent")
            receiver.send({"op": "receive"})
            assert receiver.expect("received")["data"] == message
            grown = relayed_bytes(lab, relay) - before
            assert grown >= MESSAGE_SIZE, f"{sender.name}: trelay relayed {grown} bytes"
    print(f"relayed call: {time.monotonic() - started:.1f} s")


def test_without_a_relay_the_same_agents_cannot_connect(
    lab: NatLab, relay: Relay, tmp_path: Path
) -> None:
    started = time.monotonic()
    with signalled_pair(lab, relay, tmp_path, turn=False) as (c1, c2, offers):
        for name, candidates in offers.items():
            types = {candidate_type(sdp) for sdp in candidates}
            # Host and server-reflexive candidates: hole punching gets its chance.
            assert types == {"host", "srflx"}, f"{name} gathered {types}"
        for agent in (c1, c2):
            outcome = agent.read(CONNECT_TIMEOUT + 5)
            print(f"{agent.name}: {outcome}")
            assert outcome["event"] == "failed", f"{agent.name} connected without a relay"
    print(f"control: {time.monotonic() - started:.1f} s")
