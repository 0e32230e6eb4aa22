"""The TURN core's live changes (a reload): peer policy, quotas and lifetimes, users.

`TurnServer.use_policy`, `use_config` and `use_users` (with
`LongTermAuthenticator.use_credentials` and `CredentialSources.with_static_users`
under it). The rule they share: no allocation ends because of a change. A tightened
limit refuses what is new; a peer newly denied loses its permissions and channels at
once (relaying to it stops both ways) while the allocation lives on; a user removed or
re-keyed cannot Allocate but keeps refreshing the allocations it holds.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers.turn_harness import (
    REALM,
    Client,
    assert_error,
    assert_success,
    make_server,
    run_timers,
)
from trelay.stun.attributes import Lifetime, Nonce, Realm, RequestedTransport, UserHash
from trelay.stun.codes import MessageClass, Method
from trelay.stun.credentials import userhash
from trelay.stun.message import Message
from trelay.turn.actions import SendToPeer
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import StaticUsers
from trelay.turn.policy import PeerPolicy, Withdrawn
from trelay.turn.stats import Drop

DENIED = ("127.0.0.2", 40000)
KEPT = ("127.0.0.3", 40000)
OPEN = PeerPolicy.from_strings(allow_loopback=True)
DENY_ONE = PeerPolicy.from_strings(deny=["127.0.0.2/32"], allow_loopback=True)


def lifetime_of(reply: Message) -> int:
    attribute = reply.get(Lifetime)
    assert attribute is not None
    return attribute.value


# --- peer policy ------------------------------------------------------------------------


def test_a_newly_denied_peer_is_refused_new_permissions_and_channels() -> None:
    server = make_server(policy=OPEN)
    alice = Client(server)
    assert_success(alice, alice.allocate())
    assert server.use_policy(DENY_ONE) == Withdrawn()  # nothing held yet
    assert_error(alice, alice.permit(DENIED), 403, signed=True)
    assert_error(alice, alice.bind(0x4001, DENIED), 403, signed=True)
    assert_success(alice, alice.permit(KEPT))
    assert server.allocations[alice.five_tuple].permissions.keys() == {KEPT[0]}


def test_existing_permissions_and_channels_to_a_newly_denied_peer_stop_relaying() -> None:
    server = make_server(policy=OPEN)
    alice = Client(server)
    assert_success(alice, alice.allocate())
    allocation = server.allocations[alice.five_tuple]
    assert_success(alice, alice.permit(DENIED, KEPT))
    assert_success(alice, alice.bind(0x4000, DENIED))
    assert_success(alice, alice.bind(0x4001, KEPT))
    assert server.peer_datagram(allocation, DENIED, b"hi") == b"\x40\x00\x00\x02hi"

    withdrawn = server.use_policy(DENY_ONE)

    assert withdrawn == Withdrawn(permissions=1, channels=1)
    # The allocation lives on, with what is still allowed.
    assert server.allocations[alice.five_tuple] is allocation
    assert allocation.channels == {0x4001: KEPT}
    assert allocation.peers == {KEPT: 0x4001}
    assert allocation.permissions.keys() == {KEPT[0]}
    # Peer -> client: no channel, no permission: dropped.
    assert server.peer_datagram(allocation, DENIED, b"hi") is None
    assert server.peer_datagram(allocation, KEPT, b"hi") == b"\x40\x01\x00\x02hi"
    # Client -> peer: a Send indication to the denied peer is dropped and counted.
    before = server.stats.dropped[Drop.DENIED_PEER]
    assert alice.send_indication(DENIED, b"out") == []
    assert server.stats.dropped[Drop.DENIED_PEER] == before + 1
    relayed = allocation.relayed
    assert alice.send_indication(KEPT, b"out") == [SendToPeer(relayed, KEPT, b"out")]
    # Refresh still works, and the withdrawn entries' timers find nothing to expire.
    alice.now = 200.0
    assert_success(alice, alice.refresh(600))
    # The removed permission's timer (300 s) comes due and finds nothing to expire.
    assert run_timers(server, 500.0) == []
    assert server.allocations[alice.five_tuple] is allocation
    assert allocation.channels == {0x4001: KEPT}


def test_a_peer_allowed_again_needs_a_new_permission() -> None:
    server = make_server(policy=OPEN)
    alice = Client(server)
    assert_success(alice, alice.allocate())
    allocation = server.allocations[alice.five_tuple]
    assert_success(alice, alice.permit(DENIED))
    server.use_policy(DENY_ONE)
    server.use_policy(OPEN)
    assert server.peer_datagram(allocation, DENIED, b"hi") is None  # not restored
    assert_success(alice, alice.permit(DENIED))
    assert server.peer_datagram(allocation, DENIED, b"hi") is not None


def test_the_servers_own_endpoints_stay_denied_under_a_new_policy() -> None:
    server = make_server(policy=OPEN)
    own = ("127.0.0.1", 3478)
    server.listening_on([own])
    server.use_policy(PeerPolicy.from_strings(allow=["127.0.0.0/8"], allow_loopback=True))
    assert not server.policy.permits_endpoint(*own)
    assert server.policy.permits_endpoint("127.0.0.1", 3479)
    alice = Client(server)
    assert_success(alice, alice.allocate())
    assert_error(alice, alice.bind(0x4000, own), 403, signed=True)


def test_a_new_policy_withdraws_from_every_allocation() -> None:
    server = make_server(policy=OPEN)
    alice = Client(server)
    bob = Client(server, address=("203.0.113.6", 50000), username="bob", password="hunter2")
    for client in (alice, bob):
        assert_success(client, client.allocate())
        assert_success(client, client.permit(DENIED))
    assert server.use_policy(DENY_ONE) == Withdrawn(permissions=2, channels=0)
    assert all(not a.permissions for a in server.allocations.values())


# --- quotas and lifetimes ---------------------------------------------------------------


def test_a_lowered_user_quota_refuses_new_allocates_and_keeps_the_existing_ones() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1")
    server = make_server(config)
    first = Client(server)
    second = Client(server, address=("203.0.113.5", 50001))
    for client in (first, second):
        assert_success(client, client.allocate())
    server.use_config(dataclasses.replace(config, user_quota=1))
    third = Client(server, address=("203.0.113.5", 50002))
    assert_error(third, third.allocate(), 486, signed=True)
    assert server.allocation_count == 2  # over the new quota, and kept
    for client in (first, second):
        client.now = 100.0
        assert_success(client, client.refresh(600))
        assert_success(client, client.permit(KEPT))
    server.use_config(dataclasses.replace(config, user_quota=3))
    assert_success(third, third.allocate())


def test_a_lowered_total_quota_answers_508() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1")
    server = make_server(config)
    alice = Client(server)
    assert_success(alice, alice.allocate())
    server.use_config(dataclasses.replace(config, total_quota=1))
    bob = Client(server, address=("203.0.113.6", 50000), username="bob", password="hunter2")
    assert_error(bob, bob.allocate(), 508, signed=True)
    assert server.allocation_count == 1


def test_new_lifetimes_apply_to_new_requests_and_leave_running_expiries_alone() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1")
    server = make_server(config)
    alice = Client(server)
    assert lifetime_of(alice.allocate()) == 600
    allocation = server.allocations[alice.five_tuple]
    assert allocation.expires_at == 600.0
    server.use_config(dataclasses.replace(config, default_lifetime=300, max_lifetime=900))
    assert allocation.expires_at == 600.0
    assert server.config.max_lifetime == 900
    alice.now = 100.0
    assert lifetime_of(alice.refresh(3600)) == 900
    assert allocation.expires_at == 1000.0
    bob = Client(server, address=("203.0.113.6", 50000), username="bob", password="hunter2")
    assert lifetime_of(bob.allocate()) == 300


def test_config_fields_fixed_at_start_cannot_change_live() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1")
    server = make_server(config)
    changed = dataclasses.replace(config, relay_host="198.51.100.2", user_quota=1, realm="x")
    with pytest.raises(ValueError, match="realm, relay_host") as refused:
        server.use_config(changed)
    assert "user_quota" not in str(refused.value)
    assert server.config == config  # nothing of it applied


# --- users ------------------------------------------------------------------------------


def test_a_removed_user_cannot_allocate_but_keeps_refreshing_its_allocation() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    kept = server.use_users(StaticUsers({"bob": "hunter2"}, REALM))
    assert kept == 1
    alice.now = 500.0
    assert lifetime_of(alice.refresh(600)) == 600
    assert_success(alice, alice.permit(KEPT))
    assert_success(alice, alice.bind(0x4000, KEPT))
    other = Client(server, address=("203.0.113.5", 50001))
    assert_error(other, other.allocate(), 401, signed=False)
    bob = Client(server, address=("203.0.113.6", 50000), username="bob", password="hunter2")
    assert_success(bob, bob.allocate())
    # Deleting it still works, and then the user is gone for good.
    assert lifetime_of(alice.refresh(0)) == 0
    assert server.use_users(StaticUsers({"bob": "hunter2"}, REALM)) == 0
    again = Client(server, address=("203.0.113.5", 50001))
    assert_error(again, again.allocate(), 401, signed=False)


def test_a_user_without_an_allocation_is_simply_removed() -> None:
    server = make_server()
    assert server.use_users(StaticUsers({"bob": "hunter2"}, REALM)) == 0
    alice = Client(server)
    assert_error(alice, alice.allocate(), 401, signed=False)


def test_a_new_password_is_needed_for_new_allocates_the_old_keeps_its_allocation() -> None:
    server = make_server()
    old = Client(server)
    assert_success(old, old.allocate())
    assert server.use_users(StaticUsers({"alice": "new-secret", "bob": "hunter2"}, REALM)) == 1
    old.now = 100.0
    assert_success(old, old.refresh(600))
    stale = Client(server, address=("203.0.113.5", 50001))
    assert_error(stale, stale.allocate(), 401, signed=False)
    fresh = Client(server, address=("203.0.113.5", 50002), password="new-secret")
    assert_success(fresh, fresh.allocate())


def test_an_unchanged_user_and_new_users_are_served_as_usual() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    users = {"alice": "secret", "bob": "hunter2", "carol": "pw"}
    assert server.use_users(StaticUsers(users, REALM)) == 0  # alice's password is the same
    second = Client(server, address=("203.0.113.5", 50001))
    assert_success(second, second.allocate())
    carol = Client(server, address=("203.0.113.7", 50000), username="carol", password="pw")
    assert_success(carol, carol.allocate())


def test_rest_credentials_are_not_touched_by_a_change_of_users() -> None:
    server = make_server()
    rest = Client(server)
    rest.use_rest("app-user", expiry=1_700_003_600)
    server.use_users(StaticUsers({}, REALM))
    assert_success(rest, rest.allocate())


def test_a_retired_user_is_still_refused_when_revoked() -> None:
    revoked: set[str] = set()
    server = make_server(is_revoked=lambda identity, now: identity in revoked)
    alice = Client(server)
    assert_success(alice, alice.allocate())
    server.use_users(StaticUsers({}, REALM))
    revoked.add("alice")
    alice.now = 100.0
    assert_error(alice, alice.refresh(600), 401, signed=True)


def test_retired_credentials_keep_userhash_working_for_the_allocation() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    server.use_users(StaticUsers({}, REALM))
    assert alice.nonce is not None
    # The same Refresh, with USERHASH instead of USERNAME (RFC 8489 §14.4).
    request = Message(
        Method.REFRESH,
        MessageClass.REQUEST,
        alice.rng.randbytes(12),
        (UserHash(userhash("alice", REALM)), Realm(REALM), Nonce(alice.nonce)),
    )
    reply = alice.send(request)
    assert reply is not None and reply.message_class is MessageClass.SUCCESS, reply


def test_a_pending_allocate_keeps_its_users_credential() -> None:
    server = make_server()
    alice = Client(server, auto_open=False)
    alice.authenticate()
    request = alice.request(Method.ALLOCATE, RequestedTransport(17))
    assert alice.send(request) is None  # the runtime has not bound the relay socket yet
    assert len(alice.opens) == 1
    assert server.use_users(StaticUsers({}, REALM)) == 1
    reply = alice.response(
        server.relay_opened(alice.five_tuple, ("198.51.100.1", 49999), 0), request
    )
    assert_success(alice, reply)
    alice.now = 100.0
    assert_success(alice, alice.refresh(600))


def test_requests_need_the_allocations_five_tuple_even_with_a_retired_credential() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    server.use_users(StaticUsers({}, REALM))
    elsewhere = Client(server, address=("203.0.113.5", 50009))
    assert_error(elsewhere, elsewhere.refresh(600), 437, signed=True)
