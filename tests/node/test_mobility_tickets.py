"""The node's MOBILITY-TICKET codec: sealed, authenticated, the worker named inside."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.node.mobility_tickets import TICKET_BYTES, SealedTickets, ticket_key
from trelay.turn.mobility import Ticket

TICKET = Ticket(relayed_port=49200, allocation_id=0xDEADBEEF, serial=3, expires_at=1234)
KEY = ticket_key(b"n" * 32)

_tickets = st.builds(
    Ticket,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
)


@given(_tickets, st.integers(0, 255))
def test_a_sealed_ticket_opens_to_itself_and_names_its_worker(ticket: Ticket, worker: int) -> None:
    codec = SealedTickets(KEY, worker)
    sealed = codec.seal(ticket)
    assert len(sealed) == TICKET_BYTES
    assert sealed.isascii() and b"\x00" not in sealed
    assert codec.open(sealed) == ticket
    # Another worker of the node (same key) opens it too and reads the owner.
    assert SealedTickets(KEY, (worker + 1) % 256).owner(sealed) == worker


def test_the_contents_are_not_readable() -> None:
    sealed = SealedTickets(KEY).seal(TICKET)
    raw = base64.urlsafe_b64decode(sealed)
    for field in (b"\xde\xad\xbe\xef", (49200).to_bytes(2, "big")):
        assert field not in raw


def test_two_tickets_of_one_allocation_differ() -> None:
    codec = SealedTickets(KEY)
    assert codec.seal(TICKET) != codec.seal(Ticket(49200, 0xDEADBEEF, 4, 1234))


@pytest.mark.parametrize("position", range(TICKET_BYTES))
def test_any_altered_character_is_refused(position: int) -> None:
    codec = SealedTickets(KEY)
    sealed = bytearray(codec.seal(TICKET))
    sealed[position] = ord("A") if sealed[position] != ord("A") else ord("B")
    assert codec.open(bytes(sealed)) is None
    assert codec.owner(bytes(sealed)) is None


def test_another_key_opens_nothing() -> None:
    sealed = SealedTickets(KEY).seal(TICKET)
    assert SealedTickets(ticket_key(b"m" * 32)).open(sealed) is None


@given(st.binary(max_size=64))
def test_random_bytes_open_to_none_and_never_raise(data: bytes) -> None:
    assert SealedTickets(KEY).open(data) is None  # 2**-64 per try to forge a tag


def test_the_worker_index_is_one_byte() -> None:
    with pytest.raises(ValueError, match="worker index 256"):
        SealedTickets(KEY, 256)
