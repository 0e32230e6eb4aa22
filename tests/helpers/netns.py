"""A throw-away network of Linux network namespaces: a public segment and two NATed LANs.

`nat_lab()` builds, and always tears down (also when building fails half-way or the test
fails), this network; every namespace name carries the pid and a per-process counter, so
parallel runs never collide:

                       "pub" (a bridge, 203.0.113.1/24: the relay runs here;
                              with `nat_lab(relays=N)` also .2 .. .N, one per node)
                        |                                  |
          203.0.113.11 wan                                wan 203.0.113.12
          "r1" (NAT router)                               "r2" (NAT router)
              10.1.0.1 lan                                lan 10.2.0.1
                        |                                  |
             10.1.0.2 eth0 "c1" (client)      (client) "c2" eth0 10.2.0.2

The public segment uses TEST-NET-3 (203.0.113.0/24, RFC 5737): documentation addresses
cannot belong to anybody, so nothing real is shadowed inside the namespaces (a relay's
default peer policy denies them: the test allows exactly this segment).

Each router masquerades its LAN behind its public address with nftables `masquerade
fully-random`: every new flow (5-tuple) gets a fresh random public port, so the mapping
is address- and port-dependent (RFC 4787 §4.1, a "symmetric NAT"), and the mapping a
client gets towards the relay is not the one it gets towards the other client. Inbound,
the router forwards and accepts only packets of flows its LAN opened (conntrack
established/related): filtering is address- and port-dependent too, and nothing
unsolicited gets in. Hole punching therefore fails; only a relay connects the clients.

Loopback is up in every namespace; IPv4 forwarding is on in the routers only. Commands
run in a namespace through `ip netns exec` (`NatLab.command`, `run`, `popen`), every one
with a timeout; processes started with `popen` are killed before the namespaces go.
`unavailable_reason()` says what is missing where the lab cannot be built (not root, no
`ip`, no `nft`, namespaces or nftables NAT refused by the kernel), for a skip.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

COMMAND_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PUBLIC_PREFIX = 24
PUBLIC_NETWORK = "203.0.113.0/24"
RELAY_IP = "203.0.113.1"
CLIENTS = ("c1", "c2")
ROLES = ("pub", "r1", "r2", *CLIENTS)

_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Site:
    """One client behind its NAT router: addresses as the lab sets them."""

    client: str  # role of the client namespace, "c1" or "c2"
    router: str  # role of its router namespace, "r1" or "r2"
    public_ip: str  # the router's address on the public segment (the NAT's outside)
    router_lan_ip: str
    client_ip: str
    lan_prefix: int = 24


SITES: dict[str, Site] = {
    "c1": Site("c1", "r1", "203.0.113.11", "10.1.0.1", "10.1.0.2"),
    "c2": Site("c2", "r2", "203.0.113.12", "10.2.0.1", "10.2.0.2"),
}

# The router's rules: symmetric NAT out, nothing unsolicited in (module docstring).
ROUTER_RULESET = """
table ip trelay_lab_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade fully-random
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }
}
"""

# What the prerequisite probe loads: the kernel must know nftables NAT with fully-random.
_PROBE_RULESET = """
table ip trelay_lab_probe {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "lo" masquerade fully-random
    }
}
"""


class LabError(RuntimeError):
    """A command building or tearing down the lab failed; the message says which and why."""


def run_command(
    argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (bounded by `timeout`); LabError with its output if it fails."""
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no answer within {timeout} s") from exc
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()
        raise LabError(f"{' '.join(argv)}: exit status {done.returncode}: {output}")
    return done


@functools.cache
def unavailable_reason() -> str | None:
    """Why the lab cannot be built here (naming what is missing), or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN); not running as root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH (Debian package {package})"
    name = f"trelay-probe-{os.getpid()}-{next(_counter)}"
    try:
        run_command(["ip", "netns", "add", name])
    except LabError as exc:
        return f"cannot create a network namespace (`ip netns add`): {exc}"
    try:
        run_command(["ip", "netns", "exec", name, "true"])
    except LabError as exc:
        _delete([name])
        return f"cannot run a command in a network namespace (`ip netns exec`): {exc}"
    try:
        run_command(["ip", "netns", "exec", name, "nft", "-f", "-"], stdin=_PROBE_RULESET)
    except LabError as exc:
        return f"nftables NAT (masquerade fully-random) refused in a namespace: {exc}"
    finally:
        _delete([name])
    return None


@dataclass
class NatLab:
    """The built network: namespace names by role, addresses, and commands run inside."""

    namespaces: dict[str, str]  # role ("pub", "r1", "r2", "c1", "c2") -> namespace name
    relay_ip: str = RELAY_IP
    # Every relay address of the public segment: RELAY_IP first (`nat_lab(relays=N)`).
    relay_ips: tuple[str, ...] = (RELAY_IP,)
    public_network: str = PUBLIC_NETWORK
    sites: dict[str, Site] = field(default_factory=lambda: dict(SITES))
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def command(self, role: str, *argv: str) -> list[str]:
        """`argv` run in the namespace of `role`."""
        return ["ip", "netns", "exec", self.namespaces[role], *argv]

    def run(
        self, role: str, *argv: str, timeout: float = COMMAND_TIMEOUT, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in `role`'s namespace to its end (bounded); LabError if it fails."""
        return run_command(self.command(role, *argv), timeout=timeout, stdin=stdin)

    def popen(self, role: str, *argv: str, **options: Any) -> subprocess.Popen[Any]:
        """Start `argv` in `role`'s namespace; it is killed when the lab is torn down.

        `ip netns exec` execs the command, so the process's pid is the command's own.
        """
        process: subprocess.Popen[Any] = subprocess.Popen(self.command(role, *argv), **options)
        self._processes.append(process)
        return process

    def stop_processes(self) -> None:
        """Kill every process started with `popen` that is still running, and reap it."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
                print(f"netns: pid {process.pid} outlived SIGKILL", file=sys.stderr)
        self._processes.clear()


def _build(lab: NatLab) -> None:
    ns, ip = lab.namespaces, _ip
    for role in ROLES:
        ip(ns[role], "link", "set", "lo", "up")
        forwarding = "1" if role in ("r1", "r2") else "0"
        lab.run(role, "sh", "-c", f"echo {forwarding} > /proc/sys/net/ipv4/ip_forward")
    ip(ns["pub"], "link", "add", "br0", "type", "bridge")
    for address in lab.relay_ips:
        ip(ns["pub"], "addr", "add", f"{address}/{PUBLIC_PREFIX}", "dev", "br0")
    ip(ns["pub"], "link", "set", "br0", "up")
    for site in lab.sites.values():
        router, client, port = ns[site.router], ns[site.client], f"to-{site.router}"
        # The router's public leg: a veth whose other end is a port of the bridge.
        ip(ns["pub"], "link", "add", port, "type", "veth", "peer", "name", "wan", "netns", router)
        ip(ns["pub"], "link", "set", port, "master", "br0", "up")
        ip(router, "addr", "add", f"{site.public_ip}/{PUBLIC_PREFIX}", "dev", "wan")
        ip(router, "link", "set", "wan", "up")
        # The LAN: router <-> client, the client's default route through the router.
        ip(router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", client)
        ip(router, "addr", "add", f"{site.router_lan_ip}/{site.lan_prefix}", "dev", "lan")
        ip(router, "link", "set", "lan", "up")
        ip(client, "addr", "add", f"{site.client_ip}/{site.lan_prefix}", "dev", "eth0")
        ip(client, "link", "set", "eth0", "up")
        ip(client, "route", "add", "default", "via", site.router_lan_ip)
        lab.run(site.router, "nft", "-f", "-", stdin=ROUTER_RULESET)


def _ip(namespace: str, *argv: str) -> None:
    run_command(["ip", "-n", namespace, *argv])


def _delete(names: Sequence[str]) -> list[str]:
    """Delete the namespaces (their interfaces go with them); the errors, if any."""
    errors = []
    for name in reversed(names):
        try:
            run_command(["ip", "netns", "delete", name])
        except LabError as exc:
            errors.append(str(exc))
    return errors


@contextmanager
def nat_lab(relays: int = 1) -> Iterator[NatLab]:
    """Build the lab (module docstring) with `relays` relay addresses (203.0.113.1 up,
    below the routers' .11 and .12), yield it, and always tear it down."""
    if not 1 <= relays <= 10:
        raise ValueError(f"relays: 1 to 10 addresses below the routers', got {relays}")
    prefix = f"trelay-{os.getpid()}-{next(_counter)}"
    relay_ips = tuple(f"203.0.113.{n}" for n in range(1, relays + 1))
    lab = NatLab({role: f"{prefix}-{role}" for role in ROLES}, relay_ips=relay_ips)
    created: list[str] = []
    failed = True
    try:
        for role in ROLES:
            run_command(["ip", "netns", "add", lab.namespaces[role]])
            created.append(lab.namespaces[role])
        _build(lab)
        yield lab
        failed = False
    finally:
        lab.stop_processes()
        errors = _delete(created)
        left = set(created) & set(run_command(["ip", "netns", "list"]).stdout.split())
        if (errors or left) and failed:
            print(
                f"netns: teardown after a failure: left {sorted(left)}; {errors}", file=sys.stderr
            )
        elif errors or left:
            raise LabError(f"namespaces not torn down: {sorted(left)}; {'; '.join(errors)}")
