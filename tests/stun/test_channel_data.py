"""TURN ChannelData encoding and datagram decoding (trelay.stun.channel_data, RFC 8656 §12)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.stun.channel_data import (
    CHANNEL_HEADER,
    CHANNEL_HEADER_LENGTH,
    FIRST_CHANNEL_BYTE,
    LAST_CHANNEL_BYTE,
    MAX_CHANNEL,
    MAX_DATA_LENGTH,
    MAX_RFC5766_CHANNEL,
    MIN_CHANNEL,
    decode_channel_data,
    encode_channel_data,
    is_valid_channel,
    padded_length,
    parse_channel_header,
)
from trelay.stun.codes import MessageClass
from trelay.stun.errors import StunDecodeError
from trelay.stun.message import Message, encode_message, is_stun_header

channels = st.integers(MIN_CHANNEL, MAX_CHANNEL)


def test_constants() -> None:
    assert (MIN_CHANNEL, MAX_CHANNEL) == (0x4000, 0x4FFF)
    assert CHANNEL_HEADER.size == CHANNEL_HEADER_LENGTH == 4
    assert MAX_DATA_LENGTH == 0xFFFF
    assert (FIRST_CHANNEL_BYTE, LAST_CHANNEL_BYTE) == (0x40, 0x7F)  # RFC 7983 §7


@given(
    channel=st.integers(MIN_CHANNEL, MAX_RFC5766_CHANNEL),
    data=st.binary(max_size=64),
    pad=st.booleans(),
)
def test_channel_data_starts_in_the_channel_byte_range(
    channel: int, data: bytes, pad: bool
) -> None:
    packet = encode_channel_data(channel, data, pad=pad)
    assert FIRST_CHANNEL_BYTE <= packet[0] <= LAST_CHANNEL_BYTE
    assert not is_stun_header(packet + bytes(20))


@given(
    method=st.integers(0, 0xFFF),
    message_class=st.sampled_from(MessageClass),
    transaction_id=st.binary(min_size=12, max_size=12),
)
def test_every_stun_message_starts_below_the_channel_bytes(
    method: int, message_class: MessageClass, transaction_id: bytes
) -> None:
    packet = encode_message(Message(method, message_class, transaction_id))
    assert packet[0] < FIRST_CHANNEL_BYTE
    assert is_stun_header(packet)


@pytest.mark.parametrize(
    ("channel", "data", "pad", "expected"),
    [
        (0x4000, b"abc", False, b"\x40\x00\x00\x03abc"),
        (0x4000, b"abc", True, b"\x40\x00\x00\x03abc\x00"),
        (0x4FFF, b"", False, b"\x4f\xff\x00\x00"),
        (0x4FFF, b"", True, b"\x4f\xff\x00\x00"),
        (0x4001, b"a", True, b"\x40\x01\x00\x01a\x00\x00\x00"),
        (0x4123, b"ab", True, b"\x41\x23\x00\x02ab\x00\x00"),
        (0x4123, b"abcd", True, b"\x41\x23\x00\x04abcd"),
        (0x4123, b"abcde", False, b"\x41\x23\x00\x05abcde"),
    ],
)
def test_encode_exact_bytes(channel: int, data: bytes, pad: bool, expected: bytes) -> None:
    assert encode_channel_data(channel, data, pad=pad) == expected


def test_encode_max_length_padded() -> None:
    packet = encode_channel_data(0x4000, bytes(MAX_DATA_LENGTH), pad=True)
    assert packet[:4] == b"\x40\x00\xff\xff"  # the length field never counts padding
    assert len(packet) == 4 + MAX_DATA_LENGTH + 1


@pytest.mark.parametrize("channel", [0, 0x3FFF, 0x8000, 0xFFFF, -1])
def test_encode_rejects_channels_outside_range(channel: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_channel_data(channel, b"x")


def test_encode_rejects_data_over_65535_bytes() -> None:
    with pytest.raises(ValueError, match="16-bit length"):
        encode_channel_data(0x4000, bytes(MAX_DATA_LENGTH + 1))


def test_is_valid_channel_and_padded_length() -> None:
    numbers = (0x3FFF, 0x4000, 0x4FFF, 0x5000, 0x7FFF, 0x8000)
    assert [is_valid_channel(c) for c in numbers] == [False, True, True, False, False, False]
    assert [is_valid_channel(c, rfc5766=True) for c in numbers] == [
        False, True, True, True, True, False,
    ]  # fmt: skip
    assert [padded_length(n) for n in range(9)] == [0, 4, 4, 4, 4, 8, 8, 8, 8]


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (b"\x40\x00\x00\x03abc", (0x4000, b"abc")),  # UDP: no padding
        (b"\x40\x00\x00\x03abc\x00", (0x4000, b"abc")),  # UDP: padding included
        (b"\x4f\xff\x00\x01z\xaa\xbb", (0x4FFF, b"z")),  # partial padding, any content
        (b"\x4f\xff\x00\x01z\x00\x00\x00", (0x4FFF, b"z")),
        (b"\x41\x00\x00\x00", (0x4100, b"")),
        (b"\x41\x00\x00\x04wxyz", (0x4100, b"wxyz")),
    ],
)
def test_decode(packet: bytes, expected: tuple[int, bytes]) -> None:
    assert decode_channel_data(packet) == expected
    channel, length = parse_channel_header(packet)
    assert (channel, packet[4 : 4 + length]) == expected


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "shorter than"),
        (b"\x40", "shorter than"),
        (b"\x40\x00\x00", "shorter than"),
        (b"\x3f\xff\x00\x00", "outside"),
        (b"\x80\x00\x00\x00", "outside"),
        (b"\xff\xff\x00\x00", "outside"),
        (b"\x00\x01\x00\x00", "outside"),
        (b"\x40\x00\x00\x04abc", "exceeds"),  # lying length
        (b"\x40\x00\xff\xff", "exceeds"),
        (b"\x40\x00\x00\x03abc\x00\x00", "after"),  # trailing junk beyond the padding
        (b"\x40\x00\x00\x04abcd\x00", "after"),  # aligned data takes no padding
        (b"\x40\x00\x00\x00\x00", "after"),
    ],
)
def test_decode_errors(packet: bytes, message: str) -> None:
    with pytest.raises(StunDecodeError, match=message) as info:
        decode_channel_data(packet)
    assert info.value.error_code == 400


def test_decode_accepts_memoryview_without_copying_the_header() -> None:
    view = memoryview(b"\x40\x02\x00\x02hi\x00\x00")
    assert parse_channel_header(view) == (0x4002, 2)
    assert decode_channel_data(view) == (0x4002, b"hi")


@given(channel=channels, data=st.binary(max_size=300), pad=st.booleans())
def test_round_trip(channel: int, data: bytes, pad: bool) -> None:
    packet = encode_channel_data(channel, data, pad=pad)
    assert len(packet) == 4 + (padded_length(len(data)) if pad else len(data))
    assert len(packet) % 4 == 0 or not pad
    assert decode_channel_data(packet) == (channel, data)


@given(st.binary(max_size=80))
def test_random_bytes_only_raise_stun_decode_error(packet: bytes) -> None:
    try:
        channel, data = decode_channel_data(packet)
    except StunDecodeError:
        return
    # Whatever decodes is a channel of the wire format's range (RFC 5766's, which the
    # codec accepts), and re-encodes to a prefix of the input.
    assert is_valid_channel(channel, rfc5766=True)
    assert packet.startswith(encode_channel_data(channel, data))
    assert len(packet) - 4 - len(data) <= 3
