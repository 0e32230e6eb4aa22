"""The peer policy's self-relay check and the IPv4-translated range (issue 15, design §6).

Pure core, no sockets: the decisions and the server's answers. The same on real sockets
runs in a private network namespace (tests/node/test_self_relay_netns.py).
"""

from __future__ import annotations

import pytest

from tests.helpers.turn_harness import REALM, Client, assert_error, assert_success, make_server
from trelay.stun.attributes import RequestedAddressFamily
from trelay.stun.codes import AddressFamily
from trelay.turn.config import TurnConfig
from trelay.turn.policy import PeerPolicy

PORT = 3478
EVERYTHING = PeerPolicy.from_strings(allow=["0.0.0.0/0", "::/0"], allow_loopback=True)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.2", "127.255.255.254", "0.0.0.0", "::1", "::",
     "::ffff:127.0.0.2", "64:ff9b::7f00:2", "192.0.2.7", "::ffff:192.0.2.7", "2001:db8::7"],
)  # fmt: skip
def test_a_wildcard_listener_is_reached_at_every_local_address(host: str) -> None:
    policy = EVERYTHING.with_server_endpoints([("0.0.0.0", PORT)])
    policy = policy.with_local_hosts(["192.0.2.7", "2001:db8::7", "fe80::1%eth0"])
    assert not policy.permits_endpoint(host, PORT)
    assert policy.permits_endpoint(host, PORT + 1)  # another port: not our listener
    assert policy.permits(host)  # the IP itself (permissions are per IP, RFC 8656 §9)


def test_an_ipv6_wildcard_listener_also_takes_ipv4() -> None:
    policy = EVERYTHING.with_server_endpoints([("::", PORT)])
    assert not policy.permits_endpoint("127.0.0.9", PORT)
    assert not policy.permits_endpoint("::1", PORT)


def test_a_specific_listener_is_reached_at_its_address_and_the_unspecified_one() -> None:
    policy = EVERYTHING.with_server_endpoints([("192.0.2.7", PORT)])
    policy = policy.with_local_hosts(["192.0.2.8"])
    assert not policy.permits_endpoint("192.0.2.7", PORT)
    assert not policy.permits_endpoint("0.0.0.0", PORT)  # delivered locally by the kernel
    assert policy.permits_endpoint("192.0.2.8", PORT)  # bound to .7 only: .8 does not reach it


def test_local_hosts_replace_and_survive_a_new_policy() -> None:
    policy = EVERYTHING.with_server_endpoints([("0.0.0.0", PORT)]).with_local_hosts(["192.0.2.7"])
    policy = policy.with_local_hosts(["192.0.2.8"])
    assert policy.permits_endpoint("192.0.2.7", PORT)
    assert not policy.permits_endpoint("192.0.2.8", PORT)
    reloaded = PeerPolicy.from_strings(allow=["192.0.2.0/24"]).with_own_endpoints(policy)
    assert not reloaded.permits_endpoint("192.0.2.8", PORT)
    assert reloaded.permits_endpoint("192.0.2.9", PORT)


def test_server_refuses_channels_to_any_address_of_the_host() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1")
    server = make_server(config, policy=EVERYTHING)
    server.listening_on([("0.0.0.0", PORT)])
    server.use_local_addresses(["192.0.2.7"])
    c = Client(server)
    assert_success(c, c.allocate())
    for host in ("127.0.0.1", "127.0.0.2", "192.0.2.7", "198.51.100.1", "0.0.0.0"):
        assert_error(c, c.bind(0x4000, (host, PORT)), 403, signed=True)
        assert c.send_indication((host, PORT), b"loop") == []
    # A reload's new policy keeps denying them.
    server.use_policy(EVERYTHING)
    assert_error(c, c.bind(0x4000, ("127.0.0.2", PORT)), 403, signed=True)
    assert_success(c, c.bind(0x4000, ("127.0.0.2", PORT + 1)))


@pytest.mark.parametrize("peer", ["::ffff:0:7f00:1", "::ffff:0:a9fe:a9fe", "::ffff:0:808:808"])
def test_ipv4_translated_peers_get_403(peer: str) -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1", relay_host_v6="2001:db8::1")
    c = Client(make_server(config, policy=PeerPolicy.from_strings(allow_loopback=True)))
    assert_success(c, c.allocate(RequestedAddressFamily(AddressFamily.IPV6)))
    assert_error(c, c.permit((peer, 9)), 403, signed=True)
    assert_error(c, c.bind(0x4000, (peer, 9)), 403, signed=True)
    assert c.send_indication((peer, 9), b"x") == []
    assert_success(c, c.permit(("2606:4700::1111", 9)))
