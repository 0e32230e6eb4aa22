"""PeerPolicy (RFC 8656 §21.3, design §6): default denials, allow/deny lists, embedded IPv4,
the relay's own addresses, and what the server does with a denied peer."""

from __future__ import annotations

import pytest

from tests.helpers.turn_harness import REALM, Client, assert_error, assert_success, make_server
from trelay.turn.config import TurnConfig
from trelay.turn.policy import PeerPolicy

DENIED = [
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "100.127.255.254", "127.0.0.1",
    "127.255.255.255", "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8",
    "192.0.2.1", "192.168.1.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1", "100::1", "2001:db8::1",
    "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1",
    # IPv4-translated (RFC 2765, ::ffff:0:0:0/96), of loopback and of a public address:
    "::ffff:0:7f00:1", "::ffff:0:127.0.0.1", "::ffff:0:a00:1", "::ffff:0:808:808",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("host", DENIED)
def test_default_policy_denies_non_public(host: str) -> None:
    assert not PeerPolicy().permits(host)


@pytest.mark.parametrize("host", PUBLIC)
def test_default_policy_allows_public_unicast(host: str) -> None:
    assert PeerPolicy().permits(host)


@pytest.mark.parametrize("host", ["not an ip", "", "1.2.3.4.5", "::g"])
def test_garbage_is_denied(host: str) -> None:
    assert not PeerPolicy().permits(host)


def test_allow_loopback_switch() -> None:
    policy = PeerPolicy.from_strings(allow_loopback=True)
    assert policy.permits("127.0.0.1") and policy.permits("::1")
    assert policy.permits("::ffff:127.0.0.1")
    assert not policy.permits("10.0.0.1") and not policy.permits("169.254.169.254")


def test_allow_list_beats_defaults_and_deny_beats_allow() -> None:
    policy = PeerPolicy.from_strings(allow=["10.0.0.0/8", "fc00::/7"], deny=["10.1.0.0/16"])
    assert policy.permits("10.0.0.1") and policy.permits("fd00::5")
    assert policy.permits("::ffff:10.0.0.1")  # the embedded address is what is reached
    assert not policy.permits("10.1.2.3") and not policy.permits("::ffff:10.1.2.3")
    assert not policy.permits("192.168.0.1")


def test_deny_list_applies_to_public_addresses_and_embedded_forms() -> None:
    policy = PeerPolicy.from_strings(allow=["0.0.0.0/0"], deny=["8.8.8.0/24"])
    assert not policy.permits("8.8.8.8")
    assert not policy.permits("::ffff:8.8.8.8")
    assert not policy.permits("64:ff9b::808:808")
    assert policy.permits("1.1.1.1")


def test_server_endpoints_are_denied_even_when_allowed() -> None:
    policy = PeerPolicy.from_strings(allow=["0.0.0.0/0"], allow_loopback=True)
    policy = policy.with_server_endpoints([("127.0.0.1", 3478), ("2001:db8::1", 443)])
    assert not policy.permits_endpoint("127.0.0.1", 3478)
    assert not policy.permits_endpoint("::ffff:127.0.0.1", 3478)
    assert not policy.permits_endpoint("2001:db8:0::1", 443)
    # Other ports on the same IP are other clients' relayed addresses: allowed.
    assert policy.permits_endpoint("127.0.0.1", 50000)
    assert policy.permits("127.0.0.1")
    assert policy.permits_endpoint("127.0.0.2", 3478)


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "banana", "::1/129"])
def test_bad_cidr_is_rejected_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="not a CIDR network"):
        PeerPolicy.from_strings(allow=[bad])


def test_host_bits_are_tolerated_in_lists() -> None:
    assert PeerPolicy.from_strings(allow=["10.1.2.3/8"]).permits("10.200.0.1")


def test_server_answers_403_and_drops_send_indications_to_denied_peers() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1")
    c = Client(make_server(config, policy=PeerPolicy.from_strings(deny=["8.8.4.0/24"])))
    assert_success(c, c.allocate())
    assert_error(c, c.permit(("8.8.4.4", 53)), 403, signed=True)
    assert_error(c, c.bind(0x4000, ("8.8.4.4", 53)), 403, signed=True)
    assert c.send_indication(("8.8.4.4", 53), b"x") == []
    assert_success(c, c.permit(("8.8.8.8", 53)))
    assert c.send_indication(("8.8.8.8", 53), b"x") != []


def test_tunnelled_ipv6_forms_are_denied_by_default() -> None:
    from trelay.turn.policy import PeerPolicy as Policy

    policy = Policy()
    assert not policy.permits("2002:0a00:0001::1")  # 6to4 wrapping 10.0.0.1
    assert not policy.permits("2001:0:4136:e378:8000:63bf:3fff:fdd2")  # Teredo
    assert policy.permits("2606:4700::1111")  # ordinary global unicast


def test_server_refuses_to_relay_to_its_own_listeners() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1", external_host="203.0.113.1")
    server = make_server(
        config, policy=PeerPolicy.from_strings(allow=["198.51.100.0/24", "203.0.113.0/24"])
    )
    server.listening_on([("0.0.0.0", 3478), ("198.51.100.1", 5349)])
    c = Client(server)
    assert_success(c, c.allocate())
    for listener in [("198.51.100.1", 3478), ("203.0.113.1", 3478), ("198.51.100.1", 5349)]:
        assert_error(c, c.bind(0x4000, listener), 403, signed=True)
        assert_success(c, c.permit(listener))  # the IP itself: other clients relay there
        assert c.send_indication(listener, b"loop") == []
    # Another client's relayed address on the same IP is a normal peer.
    assert_success(c, c.bind(0x4001, ("198.51.100.1", 49152)))
    assert c.send_indication(("198.51.100.1", 49152), b"hello") != []
