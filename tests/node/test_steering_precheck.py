"""`trelay.node.mobility_steering.names_a_worker`: the attribute-header walk that spares
the common Allocate and Refresh a second decode (issue 13 part 4). It must let through
every request `ClientSteering.owner` could steer, and may let through a few more."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.node.mobility_steering import names_a_worker
from trelay.stun.attributes import (
    Attribute,
    Lifetime,
    MobilityTicket,
    Nonce,
    Realm,
    RequestedTransport,
    ReservationToken,
    Username,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, encode_message

TID = bytes(range(12))
SIGNED = (Username("alice"), Realm("example.org"), Nonce("n" * 24))


def request(method: Method, *attributes: Attribute, sign: bool = True) -> bytes:
    message = Message(method, MessageClass.REQUEST, TID, attributes)
    return encode_signed(message, b"k" * 16) if sign else encode_message(message)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (request(Method.ALLOCATE, RequestedTransport(17), *SIGNED), False),
        (request(Method.ALLOCATE, RequestedTransport(17), sign=False), False),
        (request(Method.ALLOCATE, RequestedTransport(17), ReservationToken(b"\x01" * 8)), True),
        (request(Method.REFRESH, Lifetime(0), *SIGNED), False),
        (request(Method.REFRESH, MobilityTicket(b"t" * 40), *SIGNED), True),
        # The attribute the other method would carry does not count.
        (request(Method.REFRESH, ReservationToken(b"\x01" * 8), *SIGNED), False),
        (request(Method.ALLOCATE, MobilityTicket(b""), *SIGNED), False),
        # Other methods and classes are never steered.
        (request(Method.CHANNEL_BIND, ReservationToken(b"\x01" * 8)), False),
        (
            encode_message(
                Message(
                    Method.ALLOCATE, MessageClass.INDICATION, TID, (ReservationToken(b"1" * 8),)
                )
            ),
            False,
        ),
        (b"", False),
        (b"\x00\x03", False),
    ],
)
def test_which_requests_are_decoded_for_steering(data: bytes, expected: bool) -> None:
    assert names_a_worker(data) is expected


@given(st.binary(max_size=200))
def test_any_bytes_after_an_allocate_header_are_walked_safely(tail: bytes) -> None:
    header = request(Method.ALLOCATE, sign=False)[:20]
    names_a_worker(header + tail)  # bounded, no exception whatever the lengths say


@given(st.binary(min_size=8, max_size=8), st.booleans())
def test_a_token_anywhere_among_the_attributes_is_found(token: bytes, first: bool) -> None:
    others: tuple[Attribute, ...] = (RequestedTransport(17), *SIGNED)
    attributes = (ReservationToken(token), *others) if first else (*others, ReservationToken(token))
    assert names_a_worker(request(Method.ALLOCATE, *attributes))
