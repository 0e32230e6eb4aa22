"""Property tests of the STUN codec, driven by the public strategies in trelay.stun.strategies.

Round trips (`decode(encode(m)) == m`), totality of the decoder (arbitrary and almost
valid bytes only ever raise `StunDecodeError`) and the strategies' own promises.
"""

from __future__ import annotations

import importlib
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trelay.stun import strategies as stun_st
from trelay.stun.attributes import Attribute, Fingerprint, MessageIntegrity, UnknownAttribute
from trelay.stun.codes import (
    MAGIC_COOKIE,
    AddressFamily,
    MessageClass,
    Method,
    is_comprehension_required,
)
from trelay.stun.errors import StunDecodeError
from trelay.stun.integrity import verify_fingerprint, verify_integrity
from trelay.stun.message import (
    ATTRIBUTE_CLASS_BY_TYPE,
    ATTRIBUTE_CLASSES,
    Message,
    decode_message,
    encode_attribute,
    encode_message,
)

# No deadline: a slow CI machine must not turn into a failure (no timing thresholds).
MANY = settings(max_examples=1000, deadline=None)
FEW = settings(max_examples=40, deadline=None)
TID = bytes(12)


def decode_or_error(data: bytes) -> Message | None:
    """Decode, or return None if and only if the decoder raised `StunDecodeError`."""
    try:
        return decode_message(data)
    except Exception as exc:
        assert type(exc) is StunDecodeError, f"{type(exc).__name__}: {exc}"
        return None


# --- the strategies keep their promises ------------------------------------------------------


def test_one_strategy_per_attribute_class() -> None:
    assert list(stun_st.ATTRIBUTE_STRATEGIES) == list(ATTRIBUTE_CLASSES)


@pytest.mark.parametrize("kind", ATTRIBUTE_CLASSES, ids=lambda cls: cls.__name__)
@FEW
@given(data=st.data())
def test_every_attribute_round_trips(kind: type[Attribute], data: st.DataObject) -> None:
    attribute = data.draw(stun_st.attributes_of(kind))
    transaction_id = data.draw(stun_st.transaction_ids())
    assert type(attribute) is kind
    value = attribute.encode_value(transaction_id)
    assert kind.decode_value(value, transaction_id) == attribute
    assert len(encode_attribute(attribute, transaction_id)) % 4 == 0


@FEW
@given(stun_st.unknown_attributes(True), stun_st.unknown_attributes(False))
def test_unknown_attribute_types(required: UnknownAttribute, optional: UnknownAttribute) -> None:
    for attribute in (required, optional):
        assert attribute.type not in ATTRIBUTE_CLASS_BY_TYPE
    assert is_comprehension_required(required.type)
    assert not is_comprehension_required(optional.type)


@FEW
@given(stun_st.addresses(AddressFamily.IPV4), stun_st.addresses(AddressFamily.IPV6))
def test_addresses_by_family(v4: tuple[str, int], v6: tuple[str, int]) -> None:
    assert "." in v4[0] and ":" not in v4[0]
    assert ":" in v6[0]
    assert 0 <= v4[1] <= 0xFFFF and 0 <= v6[1] <= 0xFFFF


@FEW
@given(stun_st.messages(methods=[Method.SEND], classes=[MessageClass.INDICATION], trailer=False))
def test_messages_respects_methods_classes_and_trailer(message: Message) -> None:
    assert (message.method, message.message_class) == (Method.SEND, MessageClass.INDICATION)
    assert message.get(Fingerprint) is None
    assert message.get(MessageIntegrity) is None


@settings(max_examples=300, deadline=None)
@given(stun_st.signed_messages())
def test_signed_messages_verify(signed: stun_st.SignedMessage) -> None:
    decoded = decode_message(signed.data)
    assert decoded.transaction_id == signed.message.transaction_id
    assert decoded.attributes[: len(signed.message.attributes)] == signed.message.attributes
    if signed.key is not None:
        assert verify_integrity(signed.data, signed.key)
        assert not verify_integrity(signed.data, signed.key + b"x")
    if decoded.attributes and isinstance(decoded.attributes[-1], Fingerprint):
        assert verify_fingerprint(signed.data)


@FEW
@given(stun_st.encoded_messages(), st.data())
def test_almost_valid_messages_change_the_encoding(valid: bytes, data: st.DataObject) -> None:
    corrupted = data.draw(stun_st.almost_valid_messages(st.just(valid)))
    assert corrupted != valid


def test_import_without_hypothesis_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "trelay.stun.strategies")
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.setitem(sys.modules, "hypothesis.strategies", None)
    with pytest.raises(ImportError, match=r"trelay\[hypothesis\]"):
        importlib.import_module("trelay.stun.strategies")


# --- the codec -----------------------------------------------------------------------------


@MANY
@given(stun_st.messages())
def test_round_trip(message: Message) -> None:
    data = encode_message(message)
    assert decode_message(data) == message
    assert encode_message(decode_message(data)) == data


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    decode_or_error(data)


@settings(max_examples=1500, deadline=None)
@given(stun_st.almost_valid_messages())
def test_almost_valid_messages_only_raise_decode_error(data: bytes) -> None:
    message = decode_or_error(data)
    if message is not None:
        # What decodes is a message again: re-encoding it is stable.
        assert decode_message(encode_message(message)) == message


_known_tlv = st.tuples(
    st.sampled_from(sorted(ATTRIBUTE_CLASS_BY_TYPE)),
    st.binary(max_size=40),
    st.binary(min_size=3, max_size=3),
)


@st.composite
def framed_random_attributes(draw: st.DrawFn) -> bytes:
    """A correct header and TLV framing around random values of known attribute types.

    Reaches every attribute's `decode_value` with arbitrary bytes (and arbitrary padding).
    """
    body = b"".join(
        struct.pack("!HH", kind, len(value)) + value + padding[: -len(value) % 4]
        for kind, value, padding in draw(st.lists(_known_tlv, max_size=4))
    )
    message_type = draw(st.integers(0, 0x3FFF))
    transaction_id = draw(stun_st.transaction_ids())
    return struct.pack("!HHI12s", message_type, len(body), MAGIC_COOKIE, transaction_id) + body


@settings(max_examples=2000, deadline=None)
@given(framed_random_attributes())
def test_random_attribute_values_only_raise_decode_error(data: bytes) -> None:
    message = decode_or_error(data)
    if message is not None:
        assert decode_message(encode_message(message)) == message
