"""What the runtime may do to the TURN core, and only that: named methods, read-only state.

`TurnServer.start_draining` (refuse new Allocates with 508, keep everything else
working), the runtime's slot on an allocation (`relay_opened(..., runtime=...)`), and
state the runtime reads but cannot replace (`draining`, `policy`, `stats`, ...). The
revocation hook `LongTermAuthenticator.use_revocation_check` is also covered in
`tests/ops/test_server_stats.py` (its failure reason).
"""

from __future__ import annotations

import pytest

from tests.helpers.turn_harness import (
    Client,
    assert_error,
    assert_success,
    make_server,
    run_timers,
)
from trelay.stun.attributes import Lifetime, RequestedTransport
from trelay.stun.codes import Method
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.message import decode_message
from trelay.turn.actions import SendToPeer
from trelay.turn.policy import PeerPolicy
from trelay.turn.stats import ServerStats

PEER = ("127.0.0.1", 40000)


def reason(client: Client) -> str:
    assert client.last_raw is not None
    attribute = decode_message(client.last_raw).get(ErrorCodeAttribute)
    assert attribute is not None
    return attribute.reason


def test_start_draining_refuses_new_allocations_with_508() -> None:
    server = make_server()
    assert not server.draining
    server.start_draining()
    assert server.draining
    newcomer = Client(server)
    assert_error(newcomer, newcomer.allocate(), 508, signed=True)
    assert reason(newcomer) == "Server is draining"
    assert server.allocation_count == 0


def test_draining_keeps_existing_allocations_working() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    server.start_draining()
    alice.now = 300.0  # allocated at 0 for 600 s
    refreshed = alice.refresh(600)
    assert_success(alice, refreshed)
    lifetime = refreshed.get(Lifetime)
    assert lifetime is not None and lifetime.value == 600
    assert_success(alice, alice.permit(PEER))
    assert_success(alice, alice.bind(0x4000, PEER))
    state = server.allocations[alice.five_tuple]
    assert alice.send_indication(PEER, b"x") == [SendToPeer(state.relayed, PEER, b"x")]
    assert server.peer_datagram(state, PEER, b"hi") == b"\x40\x00\x00\x02hi"
    # The refresh extended it (to 900): alive past the first lifetime's end.
    run_timers(server, 700)
    assert alice.five_tuple in server.allocations
    # Drained by its own deletion, as a runtime waiting for its grace period sees it.
    assert_success(alice, alice.refresh(0))
    assert server.allocation_count == 0
    # And no one new gets in meanwhile.
    bob = Client(server, address=("203.0.113.9", 1), username="bob", password="hunter2")
    assert_error(bob, bob.allocate(), 508, signed=True)


def test_the_runtime_slot_of_an_allocation_is_what_relay_opened_was_given() -> None:
    server = make_server()
    alice = Client(server, auto_open=False)
    alice.authenticate()
    request = alice.request(Method.ALLOCATE, RequestedTransport(17))
    assert alice.send(request) is None
    [open_] = alice.opens
    record = object()
    actions = server.relay_opened(alice.five_tuple, (open_.host, 50000), 0, runtime=record)
    assert_success(alice, alice.response(actions, request))
    assert server.allocations[alice.five_tuple].runtime is record
    # Without one (a core driven by tests only), the slot is empty.
    bob = Client(server, address=("203.0.113.9", 1), username="bob", password="hunter2")
    assert_success(bob, bob.allocate())
    assert server.allocations[bob.five_tuple].runtime is None


def test_state_the_runtime_reads_cannot_be_replaced() -> None:
    server = make_server()
    with pytest.raises(AttributeError):
        server.draining = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        server.policy = PeerPolicy.from_strings()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        server.stats = ServerStats()  # type: ignore[misc]
    assert not server.draining


def test_the_authenticator_is_given_at_construction_and_kept() -> None:
    revoked = frozenset({"carol"})
    server = make_server(is_revoked=lambda identity, _: identity in revoked)
    auth = server.auth
    with pytest.raises(AttributeError):
        server.auth = auth  # type: ignore[misc]
    for name in ("realm", "credentials", "nonces", "features", "third_party", "is_revoked"):
        with pytest.raises(AttributeError):
            setattr(auth, name, None)
    assert auth.is_revoked is not None and auth.is_revoked("carol", 0.0)
    assert not auth.is_revoked("alice", 0.0)
