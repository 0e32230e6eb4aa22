"""Which worker a request belongs to (`trelay.node.mobility_steering.ClientSteering`) and
the RESERVATION-TOKENs that name their worker (`trelay.turn.reservations`)."""

from __future__ import annotations

import pytest

from trelay.node.mobility_steering import ClientSteering
from trelay.node.mobility_tickets import SealedTickets
from trelay.stun.attributes import (
    Attribute,
    MobilityTicket,
    RequestedTransport,
    ReservationToken,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, encode_message, new_transaction_id
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.mobility import Ticket
from trelay.turn.reservations import TOKEN_BYTES, new_token, token_worker

KEY = bytes(range(32))


def request(method: Method, *attributes: Attribute) -> bytes:
    return encode_message(Message(method, MessageClass.REQUEST, new_transaction_id(), attributes))


def steering(worker: int, workers: int = 4, *, mobility: bool = True) -> ClientSteering:
    def elsewhere(client: Address) -> bool:
        raise AssertionError("not asked")

    def forward(owner: int, five_tuple: FiveTuple, data: bytes) -> None:
        raise AssertionError("not asked")

    tickets = SealedTickets(KEY, worker) if mobility else None
    return ClientSteering(worker, workers, tickets, elsewhere, forward)


def test_tokens_name_their_worker_and_stay_random() -> None:
    tokens = {new_token(3, ()) for _ in range(64)}
    assert all(len(token) == TOKEN_BYTES and token_worker(token) == 3 for token in tokens)
    assert len(tokens) == 64  # 7 random bytes each
    single = {new_token(None, ()) for _ in range(64)}
    assert len({token[0] for token in single}) > 1  # all 8 random in a single process
    with pytest.raises(ValueError, match="worker index 256"):
        new_token(256, ())


def test_a_new_token_is_none_already_taken() -> None:
    taken = {new_token(1, ()) for _ in range(8)}
    assert all(new_token(1, taken) not in taken for _ in range(64))


def test_an_allocate_with_another_workers_token_belongs_there() -> None:
    token = new_token(2, ())
    data = request(Method.ALLOCATE, RequestedTransport(17), ReservationToken(token))
    assert steering(0).owner(data) == 2
    assert steering(2).owner(data) is None  # its own: answered here
    assert steering(0, workers=2).owner(data) is None  # no such worker: 508 here
    assert steering(0, mobility=False).owner(data) == 2  # tokens need no tickets
    assert steering(0).owner(request(Method.ALLOCATE, RequestedTransport(17))) is None


def test_a_refresh_with_another_workers_ticket_belongs_there() -> None:
    sealed = SealedTickets(KEY, 1).seal(Ticket(50000, 7, 1, 10**6))
    data = request(Method.REFRESH, MobilityTicket(sealed))
    assert steering(0).owner(data) == 1
    assert steering(1).owner(data) is None
    assert steering(0, mobility=False).owner(data) is None  # no tickets without mobility
    forged = request(Method.REFRESH, MobilityTicket(b"\x01" * len(sealed)))
    assert steering(0).owner(forged) is None
    # A token on a Refresh, a ticket on an Allocate: neither names anyone.
    assert steering(0).owner(request(Method.REFRESH, ReservationToken(new_token(1, ())))) is None
    assert steering(0).owner(request(Method.ALLOCATE, MobilityTicket(sealed))) is None


def test_other_messages_and_garbage_belong_here() -> None:
    assert steering(0).owner(request(Method.BINDING)) is None
    assert steering(0).owner(request(Method.CREATE_PERMISSION)) is None
    assert steering(0).owner(b"\x00\x03 not a message") is None
    assert steering(0).owner(b"") is None


def test_hand_over_counts_and_forwards() -> None:
    forwarded: list[tuple[int, FiveTuple, bytes]] = []
    steer = ClientSteering(0, 2, None, lambda _: False, lambda *a: forwarded.append(a))
    five_tuple = FiveTuple(ClientTransport.UDP, ("127.0.0.1", 5000), ("127.0.0.1", 3478))
    steer.hand_over(1, five_tuple, b"request")
    assert forwarded == [(1, five_tuple, b"request")]
    assert (steer.counts.handed_over, steer.counts.captured) == (1, 0)
