"""Stream deframing of STUN and ChannelData over TCP/TLS (trelay.stun.framing)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.stun.attributes import Software
from trelay.stun.channel_data import MAX_CHANNEL, MAX_DATA_LENGTH, MIN_CHANNEL, encode_channel_data
from trelay.stun.codes import HEADER_LENGTH, MAGIC_COOKIE_BYTES, MessageClass, Method
from trelay.stun.errors import StunDecodeError
from trelay.stun.framing import MAX_FRAME_SIZE, Frame, StreamDeframer
from trelay.stun.message import Message, decode_message, encode_message

TID = bytes(range(12))


def stun_bytes(body: bytes, first_two: bytes = b"\x00\x01") -> bytes:
    """A raw STUN message: the deframer only looks at the header."""
    return first_two + len(body).to_bytes(2, "big") + MAGIC_COOKIE_BYTES + TID + body


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, Frame]:
    """A valid stream frame: (its bytes on the wire, the Frame the deframer must yield)."""
    if draw(st.booleans()):
        channel = draw(st.integers(MIN_CHANNEL, MAX_CHANNEL))
        data = draw(st.binary(max_size=40))
        return encode_channel_data(channel, data, pad=True), Frame(channel, data)
    message_type = draw(st.integers(0, 0x3FFF)).to_bytes(2, "big")
    words = draw(st.integers(0, 10))
    wire = stun_bytes(draw(st.binary(min_size=4 * words, max_size=4 * words)), message_type)
    return wire, Frame(None, wire)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_all(deframer: StreamDeframer, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(deframer.feed(chunk))
        assert deframer.buffered < MAX_FRAME_SIZE
    return out


def test_max_frame_size_bounds_both_kinds() -> None:
    assert MAX_FRAME_SIZE == 65535 + 20
    assert HEADER_LENGTH + 0xFFFC <= MAX_FRAME_SIZE  # largest STUN message
    assert 4 + MAX_DATA_LENGTH + 1 <= MAX_FRAME_SIZE  # largest padded ChannelData


def test_one_stun_message_round_trips_through_decode_message() -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TID, (Software("trelay"),))
    wire = encode_message(message)
    deframer = StreamDeframer()
    (frame,) = deframer.feed(wire)
    assert frame == Frame(None, wire)
    assert frame.channel is None
    assert decode_message(frame.data) == message
    assert deframer.buffered == 0


def test_channel_data_padding_is_stripped() -> None:
    deframer = StreamDeframer()
    wire = b"\x40\x05\x00\x03abc\x00" + b"\x4f\xff\x00\x00" + b"\x41\x00\x00\x04wxyz"
    assert deframer.feed(wire) == [
        Frame(0x4005, b"abc"),
        Frame(0x4FFF, b""),
        Frame(0x4100, b"wxyz"),
    ]
    assert deframer.buffered == 0


def test_partial_frames_wait_and_are_counted_in_buffered() -> None:
    deframer = StreamDeframer()
    assert deframer.feed(b"\x40") == []
    assert deframer.buffered == 1
    assert deframer.feed(b"\x00\x00\x05hello") == []  # padding not yet here
    assert deframer.buffered == 9
    assert deframer.feed(b"\x00\x00\x00" + stun_bytes(b"")[:10]) == [Frame(0x4000, b"hello")]
    assert deframer.buffered == 10
    assert deframer.feed(stun_bytes(b"")[10:]) == [Frame(None, stun_bytes(b""))]
    assert deframer.buffered == 0


def test_pending_channel_names_the_unfinished_channel_data_at_the_head() -> None:
    """What a runtime judges a ChannelData frame by before its data has arrived."""
    deframer = StreamDeframer()
    assert deframer.pending_channel is None  # nothing buffered
    assert deframer.feed(b"\x78") == []
    assert deframer.pending_channel is None  # half a channel number
    assert deframer.feed(b"\x78\x78") == []
    assert deframer.pending_channel == 0x7878  # the channel, its length still incomplete
    assert deframer.feed(b"\x78" + b"x" * 100) == []
    assert deframer.pending_channel == 0x7878
    other = StreamDeframer()
    assert other.feed(encode_channel_data(0x4001, b"done", pad=True) + b"\x40\x02\x00") == [
        Frame(0x4001, b"done")
    ]
    assert other.pending_channel == 0x4002  # the next frame, after a complete one
    assert other.feed(b"\x01a\x00\x00\x00") == [Frame(0x4002, b"a")]
    assert other.pending_channel is None  # the buffer is empty again
    stun = StreamDeframer()
    assert stun.feed(stun_bytes(b"abcd")[:10]) == []
    assert stun.pending_channel is None  # a STUN message waits, no channel


def test_largest_frames_in_small_chunks_stay_within_the_bound() -> None:
    big_channel = encode_channel_data(0x4000, bytes(range(256)) * 255 + bytes(255), pad=True)
    big_stun = stun_bytes(bytes(0xFFFC))
    stream = big_channel + big_stun + big_channel
    deframer = StreamDeframer()
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    got = feed_all(deframer, chunks)
    assert [f.channel for f in got] == [0x4000, None, 0x4000]
    assert got[0].data == bytes(range(256)) * 255 + bytes(255)
    assert got[1].data == big_stun
    assert deframer.buffered == 0


@pytest.mark.parametrize("first", [0x80, 0x16 | 0x80, 0xFF])
def test_a_foreign_first_byte_is_rejected_at_once(first: int) -> None:
    deframer = StreamDeframer()
    with pytest.raises(StunDecodeError, match="neither STUN nor ChannelData") as info:
        deframer.feed(bytes([first]))
    assert info.value.error_code == 400


def test_stun_without_magic_cookie_is_rejected() -> None:
    rfc3489 = b"\x00\x01\x00\x00" + b"\x12\x34\x56\x78" + TID
    with pytest.raises(StunDecodeError, match="magic cookie"):
        StreamDeframer().feed(rfc3489)
    # Detected as soon as the cookie's four bytes are in, before the whole header.
    deframer = StreamDeframer()
    assert deframer.feed(rfc3489[:7]) == []
    with pytest.raises(StunDecodeError, match="magic cookie"):
        deframer.feed(rfc3489[7:8])


def test_stun_length_not_a_multiple_of_4_is_rejected() -> None:
    with pytest.raises(StunDecodeError, match="multiple of 4"):
        StreamDeframer().feed(b"\x00\x01\x00\x05")


def test_after_an_error_the_deframer_keeps_failing() -> None:
    deframer = StreamDeframer()
    with pytest.raises(StunDecodeError) as first:
        deframer.feed(encode_channel_data(0x4000, b"ok", pad=True) + b"\xff")
    assert deframer.buffered == 0
    with pytest.raises(StunDecodeError) as again:
        deframer.feed(encode_channel_data(0x4000, b"ok", pad=True))
    assert again.value is first.value


def test_unpadded_channel_data_on_a_stream_desynchronises_into_an_error() -> None:
    # A peer that forgets §12.5 padding: its next frame's header is read as padding.
    deframer = StreamDeframer()
    wire = encode_channel_data(0x4000, b"abc") + encode_channel_data(0x4000, b"abc")
    with pytest.raises(StunDecodeError):
        deframer.feed(wire + b"\x00" * 3)


@given(
    stream=st.lists(frames(), max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_frames_do_not_depend_on_how_the_stream_is_split(
    stream: list[tuple[bytes, Frame]], cuts: list[int]
) -> None:
    wire = b"".join(w for w, _ in stream)
    expected = [f for _, f in stream]
    whole = StreamDeframer()
    assert whole.feed(wire) == expected
    deframer = StreamDeframer()
    assert feed_all(deframer, split(wire, cuts)) == expected
    assert deframer.buffered == 0


@given(stream=st.lists(frames(), max_size=5))
def test_one_byte_chunks(stream: list[tuple[bytes, Frame]]) -> None:
    wire = b"".join(w for w, _ in stream)
    deframer = StreamDeframer()
    assert feed_all(deframer, [wire[i : i + 1] for i in range(len(wire))]) == [f for _, f in stream]
    assert deframer.buffered == 0


@given(
    stream=st.lists(frames(), max_size=4),
    junk=st.binary(min_size=1, max_size=8).filter(lambda b: b[0] > 0x7F),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
)
def test_valid_frames_then_junk_raises(
    stream: list[tuple[bytes, Frame]], junk: bytes, cuts: list[int]
) -> None:
    wire = b"".join(w for w, _ in stream) + junk
    deframer = StreamDeframer()
    with pytest.raises(StunDecodeError):
        feed_all(deframer, split(wire, cuts))


@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_random_bytes_only_raise_stun_decode_error(data: bytes, cuts: list[int]) -> None:
    deframer = StreamDeframer()
    try:
        got = feed_all(deframer, split(data, cuts))
    except StunDecodeError:
        return
    # Whatever it accepted is a well-formed frame, and nothing was lost or invented.
    consumed = 0
    for frame in got:
        if frame.channel is None:
            assert frame.data[4:8] == MAGIC_COOKIE_BYTES
            assert len(frame.data) == HEADER_LENGTH + int.from_bytes(frame.data[2:4], "big")
            consumed += len(frame.data)
        else:
            assert MIN_CHANNEL <= frame.channel <= MAX_CHANNEL
            consumed += 4 + (len(frame.data) + 3) // 4 * 4
    assert consumed + deframer.buffered == len(data)


@given(
    prefix=st.lists(frames(), max_size=3),
    length_words=st.integers(0, 0x3FFF),
    channel_length=st.integers(0, MAX_DATA_LENGTH),
    use_stun=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_buffered_never_exceeds_the_bound_for_headers_that_promise_a_lot(
    prefix: list[tuple[bytes, Frame]],
    length_words: int,
    channel_length: int,
    use_stun: bool,
    cuts: list[int],
) -> None:
    if use_stun:
        body = 4 * length_words
        header = b"\x00\x01" + body.to_bytes(2, "big") + MAGIC_COOKIE_BYTES + TID
    else:
        body = (channel_length + 3) // 4 * 4
        header = b"\x4a\xbc" + channel_length.to_bytes(2, "big")
    # Less than the header promises, so the last frame stays unfinished (unless empty).
    filler = bytes(min(500, max(body - 1, 0)))
    wire = b"".join(w for w, _ in prefix) + header + filler
    deframer = StreamDeframer()
    got = feed_all(deframer, split(wire, cuts))  # asserts the bound after every feed
    assert got[: len(prefix)] == [f for _, f in prefix]
    if body:
        assert len(got) == len(prefix)
        assert deframer.buffered == len(header) + len(filler)
    else:
        assert len(got) == len(prefix) + 1
        assert deframer.buffered == 0
