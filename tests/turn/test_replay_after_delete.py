"""A captured Allocate replayed after its allocation was deleted (issue 15).

The attacker replays the victim's signed Allocate, byte for byte, from the victim's own
address once the response cache has forgotten it (40 s): before, the nonce (valid for an
hour) made it a fresh allocation the victim never asked for; now the address's nonces
retire when its allocation ends (`NonceStamper.retire`), so the replay gets 438 and
nothing is allocated, while the client itself allocates again after one re-challenge.
"""

from __future__ import annotations

from tests.helpers.turn_harness import Client, error_code, make_server, run_timers
from trelay.stun.attributes import RequestedTransport
from trelay.stun.codes import Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import decode_message
from trelay.turn.actions import SendToClient

CACHE_SECONDS = 41


def _answer(client: Client, data: bytes) -> int | None:
    [reply] = [a for a in client.send_raw(data) if isinstance(a, SendToClient)]
    return error_code(decode_message(reply.data))


def test_a_replayed_allocate_after_a_delete_is_stale() -> None:
    server = make_server()
    victim = Client(server, now=10, retry_stale=True)
    victim.authenticate()
    captured = encode_signed(victim.request(Method.ALLOCATE, RequestedTransport(17)), victim.key)
    assert _answer(victim, captured) is None
    assert error_code(victim.refresh(0)) is None
    assert not server.allocations
    victim.now += CACHE_SECONDS
    run_timers(server, victim.now)  # as the runtime does: the response cache forgets it
    assert _answer(victim, captured) == 438
    assert not server.allocations, "the replay made an allocation"
    # The client itself: one 438, then its Allocate with the fresh nonce succeeds.
    assert error_code(victim.allocate()) is None
    assert victim.five_tuple in server.allocations


def test_a_nonce_of_another_address_is_not_retired() -> None:
    server = make_server()
    first = Client(server, address=("203.0.113.5", 1), now=10)
    second = Client(server, address=("203.0.113.5", 2), now=10)
    assert error_code(first.allocate()) is None
    assert error_code(second.allocate()) is None
    assert error_code(first.refresh(0)) is None
    # The second client's nonce is its own address's: untouched by the first's delete.
    assert error_code(second.refresh(600)) is None
