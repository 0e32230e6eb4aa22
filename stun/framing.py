"""Stream deframing of STUN and TURN ChannelData over TCP and TLS.

Owns the cutting of a byte stream into frames (RFC 8489 §6.2.2, RFC 8656 §12.5). On a
stream, STUN messages and ChannelData messages follow one another with no other
delimiter; the first byte tells them apart (RFC 7983 §7; the boundary is
`trelay.stun.channel_data.FIRST_CHANNEL_BYTE`):

- 0x00-0x3F: a STUN message, `HEADER_LENGTH + length` bytes, where the header must carry
  the magic cookie and a length that is a multiple of 4 (RFC 8489 §5, §6.3);
- 0x40-0x7F: ChannelData, 4 + length bytes plus padding to a multiple of 4, which is
  mandatory over TCP/TLS (RFC 8656 §12.5); channels up to 0x7FFF as RFC 5766 allowed
  (`trelay.stun.channel_data`);
- anything else, or a STUN header without the cookie or with an unaligned length, is a
  broken or hostile stream: `feed` raises `StunDecodeError` and the caller closes the
  connection. The deframer is then spent: every later `feed` raises the same error.

Frames are `Frame(channel, data)` tuples: `channel is None` for a STUN message (`data` is
the whole message, header included, ready for `decode_message`), else the ChannelData
channel number with `data` the application data, padding stripped. A named tuple keeps
the per-packet cost of the ChannelData case at one small tuple and one copy.

Invariants:
- Between calls, the buffer holds less than one frame, whose header (as much of it as
  has arrived) is valid; so `buffered < MAX_FRAME_SIZE` after every `feed`, and while a
  `feed` runs the buffer holds at most that plus the chunk it was given. A runtime can
  close a connection whose `buffered` stays non-zero too long (a stalled sender).
- Splitting the stream differently never changes the frames: `feed` is a pure function
  of the concatenated input.
- No quadratic copying: frames are cut at an advancing offset within one `feed`, and the
  consumed prefix is dropped once per `feed`; what is moved then is the unfinished frame,
  which is moved at most once before it completes.
"""

from __future__ import annotations

from typing import NamedTuple

from trelay.stun.channel_data import (
    CHANNEL_HEADER,
    FIRST_CHANNEL_BYTE,
    LAST_CHANNEL_BYTE,
    MAX_DATA_LENGTH,
    ByteString,
)
from trelay.stun.codes import HEADER_LENGTH, MAGIC_COOKIE_BYTES
from trelay.stun.errors import StunDecodeError

# The larger of a STUN message (20 + 65532) and padded ChannelData (4 + 65535 + 1).
MAX_FRAME_SIZE = HEADER_LENGTH + MAX_DATA_LENGTH

_COOKIE_START = 4  # the magic cookie follows the 16-bit type and 16-bit length
_COOKIE_END = _COOKIE_START + len(MAGIC_COOKIE_BYTES)
_PREFIX = CHANNEL_HEADER.size  # type (or channel) and length: enough to size any frame
_unpack_prefix = CHANNEL_HEADER.unpack_from


class Frame(NamedTuple):
    """One frame cut from a stream.

    `channel` is None for a STUN message, `data` then being the complete message; for
    ChannelData it is the channel number (0x4000-0x4FFF) and `data` the application
    data without padding.
    """

    channel: int | None
    data: bytes


class StreamDeframer:
    """Cuts a TCP/TLS byte stream into STUN and ChannelData frames (sans I/O)."""

    __slots__ = ("_buffer", "_error")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._error: StunDecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame (< MAX_FRAME_SIZE)."""
        return len(self._buffer)

    @property
    def pending_channel(self) -> int | None:
        """The channel of the unfinished ChannelData frame the buffer starts with, once
        its channel number has arrived; None when the buffer starts no ChannelData.

        Lets a runtime judge a ChannelData frame by its header, before waiting for up
        to 64 KiB of data that a desynchronized stream may never send."""
        buffer = self._buffer
        if len(buffer) < 2 or not FIRST_CHANNEL_BYTE <= buffer[0] <= LAST_CHANNEL_BYTE:
            return None
        return (buffer[0] << 8) | buffer[1]

    def feed(self, data: ByteString) -> list[Frame]:
        """Append `data` and return every frame it completes, in stream order.

        Raises `StunDecodeError` on a stream that is not STUN/ChannelData; frames that
        the same chunk completed before the bad bytes are not returned, since the
        connection is to be closed anyway.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        offset = 0
        try:
            with memoryview(buffer) as view:
                offset = self._cut(view, frames)
        except StunDecodeError as exc:
            self._error = exc
            buffer.clear()
            raise
        if offset:
            # Once per feed; CPython even makes this O(1) by moving the buffer's start.
            del buffer[:offset]
        return frames

    def _cut(self, view: memoryview, frames: list[Frame]) -> int:
        """Append the complete frames in `view` to `frames`; return the bytes consumed."""
        end = len(view)
        offset = 0
        append = frames.append
        while offset < end:
            first = view[offset]
            if first > LAST_CHANNEL_BYTE:
                # Rejected on its first byte, before any more of it is buffered.
                raise StunDecodeError(
                    f"stream byte 0x{first:02x} starts neither STUN nor ChannelData"
                )
            if end - offset < _PREFIX:
                break
            head, length = _unpack_prefix(view, offset)
            if first >= FIRST_CHANNEL_BYTE:
                # RFC 8656 §12.5: over TCP/TLS ChannelData is padded to 4 bytes; the
                # length field counts the data only. `head` is the channel number.
                frame_end = offset + _PREFIX + ((length + 3) & ~3)
                if frame_end > end:
                    break
                start = offset + _PREFIX
                append(Frame(head, bytes(view[start : start + length])))
            else:
                # RFC 8489 §6.2.2: a STUN message over a stream is framed by its length.
                _check_stun_header(view, offset, end, length)
                frame_end = offset + HEADER_LENGTH + length
                if frame_end > end:
                    break
                append(Frame(None, bytes(view[offset:frame_end])))
            offset = frame_end
        return offset


def _check_stun_header(view: memoryview, offset: int, end: int, length: int) -> None:
    """RFC 8489 §6.3: a 4-aligned length and, once it has arrived, the magic cookie."""
    if length & 3:
        raise StunDecodeError(f"STUN length {length} is not a multiple of 4")
    if end - offset >= _COOKIE_END and (
        view[offset + _COOKIE_START : offset + _COOKIE_END] != MAGIC_COOKIE_BYTES
    ):
        raise StunDecodeError("STUN header without the magic cookie")
