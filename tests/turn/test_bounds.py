"""Bounds on what one client can make the core keep (issue 15, `TurnConfig`).

Permissions and channels per allocation and peers per CreatePermission get 508 (RFC 8656
§9.2, §11.2), allocations per source 486 (§7.2 step 8), Allocates still binding per
source 508; each is counted by its `Quota`, changes nothing when it refuses, and never
refuses refreshing what is already held. A request with thousands of peers is refused
before any work per peer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.helpers.turn_harness import (
    REALM,
    Client,
    assert_error,
    assert_success,
    make_server,
)
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import RequestedTransport
from trelay.stun.codes import ErrorCode, Method
from trelay.stun.message import Message
from trelay.turn import peer_requests
from trelay.turn.addressing import Address, ClientTransport
from trelay.turn.allocation import Allocation
from trelay.turn.allocation_table import source_of
from trelay.turn.config import OTHER_ATTRIBUTES, TurnConfig
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer
from trelay.turn.stats import Quota

CONFIG = TurnConfig(
    realm=REALM, relay_host="198.51.100.1", relay_host_v6="2001:db8::1",
    permissions_per_allocation=4, channels_per_allocation=3, peers_per_request=3,
    allocations_per_source=3, pending_per_source=2,
)  # fmt: skip


def _server(**changes: Any) -> TurnServer:
    return make_server(dataclasses.replace(CONFIG, **changes))


def _sizes(server: TurnServer) -> dict[str, int]:
    """The core's tables, without the response counters (a 400 adds a key)."""
    return {k: v for k, v in server.state_sizes().items() if not k.startswith("stats_")}


def _peer(i: int) -> Address:
    return (f"127.0.0.{i + 1}", 5000 + i)


def _allocated(server: TurnServer, address: Address = ("203.0.113.5", 50000)) -> Client:
    client = Client(server, address)
    assert_success(client, client.allocate())
    return client


def test_peers_per_request_508_before_any_peer_is_looked_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _server()
    client = _allocated(server)
    looked_at: list[XorPeerAddress] = []
    check = peer_requests._peer_error

    def counted(
        policy: PeerPolicy, allocation: Allocation, peer: XorPeerAddress, *, with_port: bool
    ) -> ErrorCode | None:
        looked_at.append(peer)
        return check(policy, allocation, peer, with_port=with_port)

    monkeypatch.setattr(peer_requests, "_peer_error", counted)
    reply = client.permit(*(_peer(i) for i in range(4)))
    assert_error(client, reply, 508, signed=True)
    assert looked_at == []
    assert server.allocations[client.five_tuple].permissions == {}
    assert server.stats.quota_rejections[Quota.PEERS_PER_REQUEST] == 1
    assert_success(client, client.permit(*(_peer(i) for i in range(3))))
    assert len(looked_at) == 3


def test_thousands_of_peers_are_refused_while_decoding() -> None:
    """5,000 XOR-PEER-ADDRESSes (60 KB over TCP, issue 15): 400 from the decoder, which
    stops at the attribute limit; nothing is installed, no timer is scheduled."""
    server = make_server(TurnConfig(realm=REALM, relay_host="198.51.100.1"))
    client = Client(server, transport=ClientTransport.TCP)
    assert_success(client, client.allocate())
    before = _sizes(server)
    peers = [(f"127.{i // 65536}.{i // 256 % 256}.{i % 256}", 1000) for i in range(5000)]
    reply = client.permit(*peers)
    assert reply is not None
    assert_error(client, reply, 400, signed=False)
    limit = server.config.attribute_limit()
    assert limit == server.config.peers_per_request + OTHER_ATTRIBUTES
    assert f"more than {limit} attributes" in str(reply)
    assert _sizes(server) == before
    # Within the decoder's limit but over peers_per_request: a signed 508.
    over = server.config.peers_per_request + 1
    assert_error(client, client.permit(*peers[:over]), 508, signed=True)
    assert server.stats.quota_rejections[Quota.PEERS_PER_REQUEST] == 1


def test_permissions_per_allocation() -> None:
    server = _server()
    client = _allocated(server)
    assert_success(client, client.permit(_peer(0), _peer(1)))
    assert_success(client, client.permit(_peer(1), _peer(2), _peer(3)))  # 4: the bound
    held = dict(server.allocations[client.five_tuple].permissions)
    # All or nothing: one new peer among held ones is refused whole.
    assert_error(client, client.permit(_peer(0), _peer(4)), 508, signed=True)
    assert server.allocations[client.five_tuple].permissions == held
    # Refreshing what is held is never refused; nor is the same peer named twice.
    client.now += 10
    assert_success(client, client.permit(_peer(0), _peer(0), _peer(3)))
    assert server.allocations[client.five_tuple].permissions[_peer(0)[0]] == 10 + 300
    # A ChannelBind to a new peer would need a fifth permission.
    assert_error(client, client.bind(0x4000, _peer(5)), 508, signed=True)
    assert server.allocations[client.five_tuple].channels == {}
    assert server.stats.quota_rejections[Quota.PERMISSIONS] == 2
    # Once a permission expires, its place is free again.
    client.now += 300
    server.handle_timer(client.now)
    assert_success(client, client.permit(_peer(4)))


def test_channels_per_allocation() -> None:
    server = _server(permissions_per_allocation=0)  # unlimited: only channels count
    client = _allocated(server)
    for i in range(3):
        assert_success(client, client.bind(0x4000 + i, _peer(i)))
    assert_error(client, client.bind(0x4003, _peer(3)), 508, signed=True)
    allocation = server.allocations[client.five_tuple]
    assert set(allocation.channels) == {0x4000, 0x4001, 0x4002}
    assert _peer(3)[0] not in allocation.permissions  # refused whole
    assert_success(client, client.bind(0x4001, _peer(1)))  # a refresh of a held one
    assert server.stats.quota_rejections[Quota.CHANNELS] == 1
    assert server.stats.quota_rejections[Quota.PERMISSIONS] == 0


def test_allocations_per_source_486_and_freed_by_delete() -> None:
    server = _server()
    clients = [_allocated(server, ("203.0.113.5", 50000 + i)) for i in range(3)]
    extra = Client(server, ("203.0.113.5", 50003))
    assert_error(extra, extra.allocate(), 486, signed=True)
    assert server.stats.quota_rejections[Quota.SOURCE] == 1
    assert server.stats.quota_rejections[Quota.USER] == 0
    _allocated(server, ("203.0.113.6", 50000))  # another source
    # The same host over TCP, and IPv4-mapped, is the same source.
    tcp = Client(server, ("::ffff:203.0.113.5", 50004), transport=ClientTransport.TCP)
    assert_error(tcp, tcp.allocate(), 486, signed=True)
    assert_success(clients[0], clients[0].refresh(0))
    assert_success(extra, extra.allocate())


def test_an_ipv6_source_is_its_64() -> None:
    assert source_of(("2001:db8:1:2:aaaa::1", 1)) == source_of(("2001:db8:1:2:bbbb::9", 2))
    assert source_of(("2001:db8:1:3::1", 1)) != source_of(("2001:db8:1:2::1", 1))
    assert source_of(("::ffff:192.0.2.1", 1)) == "192.0.2.1"
    server = _server()
    for i in range(3):
        _allocated(server, (f"2001:db8:1:2::{i + 1}", 40000))
    extra = Client(server, ("2001:db8:1:2:ffff::7", 40000))
    assert_error(extra, extra.allocate(), 486, signed=True)
    _allocated(server, ("2001:db8:1:3::1", 40000))


def _allocate_slowly(client: Client) -> Message | None:
    """An Allocate whose relay port the (slow) runtime has not bound yet: no answer."""
    if client.nonce is None:
        client.authenticate()
    return client.send(client.request(Method.ALLOCATE, RequestedTransport(17)))


def test_pending_per_source_508_until_the_binds_finish() -> None:
    server = _server()
    slow = [Client(server, ("203.0.113.5", 50000 + i), auto_open=False) for i in range(3)]
    for client in slow[:2]:
        assert _allocate_slowly(client) is None  # pending: the runtime binds its port
    assert_error(slow[2], _allocate_slowly(slow[2]), 508, signed=True)
    assert server.stats.quota_rejections[Quota.PENDING] == 1
    first = slow[0]
    server.relay_opened(first.five_tuple, ("198.51.100.1", 40000), 0.0)
    assert first.five_tuple in server.allocations
    assert _allocate_slowly(slow[2]) is None  # one pending slot is free again
    sizes = server.state_sizes()
    assert sizes["pending"] == 2 and sizes["pending_sources"] == 1 and sizes["sources"] == 1
    # A closed connection frees both counts of its pending Allocate.
    server.connection_closed(slow[1].five_tuple)
    server.connection_closed(slow[2].five_tuple)
    server.end_allocation(first.five_tuple)
    sizes = server.state_sizes()
    assert sizes["pending"] == sizes["pending_sources"] == sizes["sources"] == 0


def test_zero_is_unlimited() -> None:
    server = _server(
        permissions_per_allocation=0, channels_per_allocation=0, peers_per_request=0,
        allocations_per_source=0, pending_per_source=0,
    )  # fmt: skip
    assert server.config.attribute_limit() is None
    client = _allocated(server)
    assert_success(client, client.permit(*(_peer(i) for i in range(40))))
    for i in range(5):
        _allocated(server, ("203.0.113.5", 50001 + i))


def test_bounds_change_live_and_keep_what_is_held() -> None:
    server = _server(permissions_per_allocation=0)
    client = _allocated(server)
    assert_success(client, client.permit(*(_peer(i) for i in range(3))))
    server.use_config(dataclasses.replace(server.config, permissions_per_allocation=2))
    assert len(server.allocations[client.five_tuple].permissions) == 3  # nothing removed
    assert_success(client, client.permit(_peer(0)))  # held: refreshed
    assert_error(client, client.permit(_peer(7)), 508, signed=True)


@pytest.mark.parametrize(
    "field",
    ["permissions_per_allocation", "channels_per_allocation", "peers_per_request",
     "allocations_per_source", "pending_per_source"],
)  # fmt: skip
def test_negative_bounds_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match="quotas"):
        TurnConfig(**{field: -1})  # type: ignore[arg-type]


def test_allocate_is_not_counted_against_the_bounds_of_others() -> None:
    """A refused Allocate holds nothing: no pending slot, no source count."""
    server = _server(allocations_per_source=1)
    _allocated(server)
    refused = Client(server, ("203.0.113.5", 50001))
    assert_error(refused, refused.call(Method.ALLOCATE, RequestedTransport(17)), 486, signed=True)
    assert server.state_sizes()["pending"] == 0
    assert server.stats.quota_rejections[Quota.SOURCE] == 1
