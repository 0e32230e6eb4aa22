"""`encode_attributes`, inlined for the responses' sake (issue 13 part 4), writes what
`encode_attribute` writes for each attribute, joined: every attribute class, unknown
attributes of every padding length, and the encoding of whole messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.stun import strategies as stun_st
from trelay.stun.attributes import Attribute, Fingerprint, UnknownAttribute
from trelay.stun.codes import HEADER_LENGTH, AttributeType, MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, encode_attribute, encode_attributes


def joined(attributes: tuple[Attribute, ...], transaction_id: bytes) -> bytes:
    return b"".join(encode_attribute(a, transaction_id) for a in attributes)


@given(stun_st.messages())
def test_a_message_is_encoded_as_its_attributes_one_by_one(message: Message) -> None:
    tid = message.transaction_id
    assert encode_attributes(message.attributes, tid) == joined(message.attributes, tid)


@given(st.lists(stun_st.unknown_attributes(True) | stun_st.unknown_attributes(False)))
def test_unknown_attributes_are_padded_as_before(attributes: list[UnknownAttribute]) -> None:
    tid = bytes(12)
    assert encode_attributes(attributes, tid) == joined(tuple(attributes), tid)


@given(stun_st.messages(trailer=False))
def test_signing_appends_to_the_attributes_as_encoded(message: Message) -> None:
    """encode_signed (its check now by TYPE) signs messages without computed attributes."""
    body = encode_attributes(message.attributes, message.transaction_id)
    signed = encode_signed(message, b"key")
    assert signed[HEADER_LENGTH : HEADER_LENGTH + len(body)] == body
    assert len(signed) == HEADER_LENGTH + len(body) + 24 + 8  # MESSAGE-INTEGRITY, FINGERPRINT


@pytest.mark.parametrize(
    "computed",
    [
        UnknownAttribute(AttributeType.FINGERPRINT, bytes(4)),
        UnknownAttribute(AttributeType.MESSAGE_INTEGRITY, bytes(20)),
        UnknownAttribute(AttributeType.MESSAGE_INTEGRITY_SHA256, bytes(32)),
        Fingerprint(0),
    ],
    ids=repr,
)
def test_signing_refuses_computed_attributes_however_they_are_held(computed: Attribute) -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, bytes(12), (computed,))
    with pytest.raises(ValueError, match="computed here"):
        encode_signed(message, b"key")
