"""Session admin in the core: the operator's view of live allocations and ending them
(`TurnServer.allocation_views`, `end_allocation`, `end_identity`), driven with numbers."""

from __future__ import annotations

from tests.helpers.turn_harness import (
    REALM,
    Client,
    assert_error,
    assert_success,
    make_server,
    run_timers,
)
from trelay.stun.codes import ErrorCode
from trelay.turn.actions import Action, AllocationEnded, CloseRelay, EndReason
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.allocation_view import AllocationView
from trelay.turn.config import TurnConfig
from trelay.turn.server import TurnServer

PEER = ("127.0.0.1", 40000)
OTHER_PEER = ("127.0.0.2", 40001)


def three_clients(server: TurnServer) -> tuple[Client, Client, Client]:
    """alice twice (two 5-tuples), bob once; all allocated at now=10."""
    alice = Client(server, address=("203.0.113.5", 50000), now=10)
    alice_2 = Client(server, address=("203.0.113.6", 50001), now=10)
    bob = Client(server, address=("203.0.113.7", 50002), username="bob", password="hunter2", now=10)
    for client in (alice, alice_2, bob):
        assert_success(client, client.allocate())
    return alice, alice_2, bob


def ended(actions: list[Action]) -> list[AllocationEnded]:
    return [a for a in actions if isinstance(a, AllocationEnded)]


def test_views_show_each_allocation_at_now() -> None:
    server = make_server()
    alice = Client(server, now=10)
    assert_success(alice, alice.allocate())
    assert_success(alice, alice.bind(0x4000, PEER))
    assert_success(alice, alice.permit(OTHER_PEER))
    relayed = server.allocations[alice.five_tuple].relayed
    [view] = server.allocation_views(70.5)
    assert view == AllocationView(
        five_tuple=FiveTuple(ClientTransport.UDP, alice.address, alice.five_tuple.server),
        relayed=relayed,
        reported_relayed=relayed,
        identity="alice",
        age=60.5,
        lifetime_left=539.5,
        permissions=2,  # the channel's peer and the other one
        channels=1,
    )


def test_views_filter_by_identity() -> None:
    server = make_server()
    alice, alice_2, bob = three_clients(server)
    assert {v.five_tuple for v in server.allocation_views(20, "alice")} == {
        alice.five_tuple,
        alice_2.five_tuple,
    }
    assert [v.five_tuple for v in server.allocation_views(20, "bob")] == [bob.five_tuple]
    assert server.allocation_views(20, "carol") == []
    assert len(server.allocation_views(20)) == 3


def test_views_of_rest_credentials_show_the_identity_not_the_username() -> None:
    server = make_server()
    client = Client(server)
    client.use_rest("carol", expiry=1_700_003_600)
    assert_success(client, client.allocate())
    [view] = server.allocation_views(0)
    assert view.identity == "carol"
    assert str(1_700_003_600) not in view.identity


def test_views_report_the_relayed_address_told_to_the_client() -> None:
    config = TurnConfig(realm=REALM, relay_host="10.0.0.5", external_host="198.51.100.9")
    server = make_server(config)
    client = Client(server)
    assert_success(client, client.allocate())
    [view] = server.allocation_views(0)
    assert view.relayed[0] == "10.0.0.5"
    assert view.reported_relayed == ("198.51.100.9", view.relayed[1])


def test_end_identity_ends_only_its_allocations_like_expiry_does() -> None:
    server = make_server()
    alice, alice_2, bob = three_clients(server)
    relayed = {c.five_tuple: server.allocations[c.five_tuple].relayed for c in (alice, alice_2)}
    actions = server.end_identity("alice")
    assert sorted(a.relayed for a in actions if isinstance(a, CloseRelay)) == sorted(
        relayed.values()
    )
    assert {(e.five_tuple, e.relayed, e.username, e.reason) for e in ended(actions)} == {
        (five_tuple, address, "alice", EndReason.ADMIN) for five_tuple, address in relayed.items()
    }
    assert list(server.allocations) == [bob.five_tuple]
    assert server.stats.allocations_ended[ClientTransport.UDP, EndReason.ADMIN] == 2
    # The ended allocations' timers come due harmlessly: only bob's allocation expires.
    bob_relayed = server.allocations[bob.five_tuple].relayed
    assert ended(run_timers(server, 610)) == [
        AllocationEnded(bob.five_tuple, bob_relayed, "bob", EndReason.EXPIRED)
    ]


def test_a_client_whose_allocation_was_ended_gets_437_and_may_allocate_again() -> None:
    server = make_server()
    alice = Client(server, now=10, retry_stale=True)  # its nonce retires with the allocation
    assert_success(alice, alice.allocate())
    assert ended(server.end_allocation(alice.five_tuple))
    alice.now = 20
    assert_error(alice, alice.refresh(600), ErrorCode.ALLOCATION_MISMATCH, signed=True)
    assert_success(alice, alice.allocate())


def test_end_allocation_by_relayed_address_bound_or_reported() -> None:
    config = TurnConfig(realm=REALM, relay_host="10.0.0.5", external_host="198.51.100.9")
    server = make_server(config)
    first = Client(server, address=("203.0.113.5", 1))
    second = Client(server, address=("203.0.113.5", 2))
    assert_success(first, first.allocate())
    assert_success(second, second.allocate())
    bound = server.allocations[first.five_tuple].relayed
    [end] = ended(server.end_allocation(bound))
    assert end.five_tuple == first.five_tuple and end.reason is EndReason.ADMIN
    reported = server.allocations[second.five_tuple].reported_relayed
    [end] = ended(server.end_allocation(reported))
    assert end.five_tuple == second.five_tuple
    assert not server.allocations


def test_ending_what_is_not_there_does_nothing() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    assert server.end_allocation(("198.51.100.1", 1)) == []
    assert (
        server.end_allocation(
            FiveTuple(ClientTransport.TCP, alice.address, alice.five_tuple.server)
        )
        == []
    )
    assert server.end_identity("nobody") == []
    assert list(server.allocations) == [alice.five_tuple]
