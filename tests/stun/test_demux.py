"""RFC 7983 / RFC 9443 first-byte demultiplexing (trelay.stun.demux)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.stun.channel_data import MAX_CHANNEL, MIN_CHANNEL, encode_channel_data
from trelay.stun.codes import MessageClass, Method
from trelay.stun.demux import KIND_BY_FIRST_BYTE, RANGES, PacketKind, classify, classify_packet
from trelay.stun.message import Message, encode_message


def expected_kind(first_byte: int) -> PacketKind:
    """The RFC 7983 §7 decision tree with RFC 9443's QUIC ranges, written out by hand."""
    if first_byte <= 3:
        return PacketKind.STUN
    if first_byte <= 15:
        return PacketKind.UNKNOWN
    if first_byte <= 19:
        return PacketKind.ZRTP
    if first_byte <= 63:
        return PacketKind.DTLS
    if first_byte <= 79:
        return PacketKind.TURN_CHANNEL
    if first_byte <= 127:
        return PacketKind.QUIC
    if first_byte <= 191:
        return PacketKind.RTP_RTCP
    return PacketKind.QUIC


def test_every_byte_value_matches_the_rfc_ranges() -> None:
    assert len(KIND_BY_FIRST_BYTE) == 256
    for value in range(256):
        assert classify(value) is expected_kind(value), value
        assert KIND_BY_FIRST_BYTE[value] is expected_kind(value), value


def test_ranges_cover_0_to_255_once_in_order() -> None:
    covered = [v for first, last, _ in RANGES for v in range(first, last + 1)]
    assert covered == list(range(256))


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (0, PacketKind.STUN),
        (3, PacketKind.STUN),
        (4, PacketKind.UNKNOWN),
        (15, PacketKind.UNKNOWN),
        (16, PacketKind.ZRTP),
        (19, PacketKind.ZRTP),
        (20, PacketKind.DTLS),
        (22, PacketKind.DTLS),  # handshake record
        (63, PacketKind.DTLS),
        (64, PacketKind.TURN_CHANNEL),
        (79, PacketKind.TURN_CHANNEL),
        (80, PacketKind.QUIC),
        (127, PacketKind.QUIC),
        (128, PacketKind.RTP_RTCP),
        (191, PacketKind.RTP_RTCP),
        (192, PacketKind.QUIC),
        (255, PacketKind.QUIC),
    ],
)
def test_range_boundaries(value: int, kind: PacketKind) -> None:
    assert classify(value) is kind


@pytest.mark.parametrize("value", [-1, -256, 256, 1 << 16])
def test_classify_rejects_values_that_are_not_a_byte(value: int) -> None:
    with pytest.raises(ValueError, match="outside 0-255"):
        classify(value)


def test_classify_packet() -> None:
    assert classify_packet(b"") is PacketKind.UNKNOWN
    assert classify_packet(b"\x80\x60\x00\x01") is PacketKind.RTP_RTCP
    assert classify_packet(b"\x16\xfe\xfd") is PacketKind.DTLS
    assert classify_packet(encode_channel_data(0x4001, b"x")) is PacketKind.TURN_CHANNEL
    binding = encode_message(Message(Method.BINDING, MessageClass.REQUEST, bytes(12)))
    assert classify_packet(binding) is PacketKind.STUN


@given(channel=st.integers(MIN_CHANNEL, MAX_CHANNEL), data=st.binary(max_size=64))
def test_channel_data_always_classifies_as_turn_channel(channel: int, data: bytes) -> None:
    assert classify_packet(encode_channel_data(channel, data)) is PacketKind.TURN_CHANNEL


@given(
    method=st.integers(0, 0x0FF),
    message_class=st.sampled_from(MessageClass),
    transaction_id=st.binary(min_size=12, max_size=12),
)
def test_stun_methods_below_0x100_classify_as_stun(
    method: int, message_class: MessageClass, transaction_id: bytes
) -> None:
    packet = encode_message(Message(method, message_class, transaction_id))
    assert classify_packet(packet) is PacketKind.STUN
