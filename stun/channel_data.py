"""TURN ChannelData messages: the 4-byte-header framing of relayed data (RFC 8656 §12.4-12.5).

Owns the ChannelData layout:

     0                   1                   2                   3
    +-------------------------------+-------------------------------+
    |        Channel Number         |            Length             |
    +-------------------------------+-------------------------------+
    |                  Application Data (Length bytes)              |
    |                               +-------------------------------+
    |                               |  padding to 4 bytes (TCP/TLS) |
    +-------------------------------+

Invariants:
- RFC 8656 §12 lets clients bind 0x4000-0x4FFF (`MIN_CHANNEL`-`MAX_CHANNEL`, first byte
  0x40-0x4F, what RFC 7983 demultiplexing relies on). RFC 5766 allowed 0x4000-0x7FFF,
  and clients of that era still pick numbers up to 0x7FFF (coturn's own `turnutils_uclient`
  does, at random). The codec therefore accepts the wire format's whole range,
  0x4000-0x7FFF (first byte 0x40-0x7F, the `01` prefix no STUN message has); which
  numbers may be *bound* is the server's decision (`trelay.turn.config.TurnConfig`).
- The length field counts the application data only, never the padding (§12.4).
- Over TCP/TLS the message is padded to a multiple of 4 (§12.5); over UDP padding is
  optional, so a datagram decoder accepts it with or without (part of) the padding,
  but never with more bytes than length + padding, nor fewer than length.

The relay handles one of these per relayed packet, so the hot path is a bounds check and
one `CHANNEL_HEADER.unpack_from`, with no object but the payload slice:

    channel, length = parse_channel_header(packet)   # validated; raises StunDecodeError
    payload = packet[CHANNEL_HEADER_LENGTH : CHANNEL_HEADER_LENGTH + length]

or, with `memoryview(packet)[4 : 4 + length]`, not even a copy of the payload.
"""

from __future__ import annotations

import struct

from trelay.stun.errors import StunDecodeError

MIN_CHANNEL = 0x4000
MAX_CHANNEL = 0x4FFF  # RFC 8656 §12
MAX_RFC5766_CHANNEL = 0x7FFF  # RFC 5766 §11, and the codec's limit
# The first byte of every ChannelData message (RFC 7983 §7): the channel number's high
# byte, 0x40-0x7F. A STUN message starts below (its two top bits are zero, RFC 8489 §5),
# so `FIRST_CHANNEL_BYTE` is also the bound a STUN first byte stays under. The one
# definition of that split: the stream deframer, `is_stun_header` and the runtime's
# datagram loop all read it from here.
FIRST_CHANNEL_BYTE = MIN_CHANNEL >> 8
LAST_CHANNEL_BYTE = MAX_RFC5766_CHANNEL >> 8
# Channel number and length, both 16-bit big-endian (RFC 8656 §12.4).
CHANNEL_HEADER = struct.Struct("!HH")
CHANNEL_HEADER_LENGTH = CHANNEL_HEADER.size
MAX_DATA_LENGTH = 0xFFFF

_pack = CHANNEL_HEADER.pack
_unpack_from = CHANNEL_HEADER.unpack_from
# What a datagram decoder accepts: the relay may hand over a view of its receive buffer.
ByteString = bytes | bytearray | memoryview
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # indexed by length % 4


def is_valid_channel(channel: int, *, rfc5766: bool = False) -> bool:
    """RFC 8656 §12: only 0x4000-0x4FFF may be bound; RFC 5766: 0x4000-0x7FFF."""
    return MIN_CHANNEL <= channel <= (MAX_RFC5766_CHANNEL if rfc5766 else MAX_CHANNEL)


def padded_length(length: int) -> int:
    """`length` rounded up to a multiple of 4, the size of padded data (§12.5)."""
    return (length + 3) & ~3


def encode_channel_data(channel: int, data: bytes, *, pad: bool = False) -> bytes:
    """One ChannelData message; `pad=True` for TCP/TLS, where §12.5 requires padding.

    The length field is always `len(data)`; the padding bytes are zero.
    """
    if not MIN_CHANNEL <= channel <= MAX_RFC5766_CHANNEL:
        raise ValueError(f"channel 0x{channel:04x} outside 0x4000-0x7FFF")
    length = len(data)
    if length > MAX_DATA_LENGTH:
        raise ValueError(f"ChannelData of {length} bytes does not fit the 16-bit length")
    if pad:
        return _pack(channel, length) + data + _PADDING[length & 3]
    return _pack(channel, length) + data


def parse_channel_header(packet: ByteString) -> tuple[int, int]:
    """Validate a ChannelData datagram and return (channel, data length).

    The application data is `packet[4 : 4 + length]`. Raises `StunDecodeError` (400)
    when the packet is shorter than the header, the channel is outside 0x4000-0x7FFF,
    the length field claims more bytes than the datagram holds, or bytes follow the
    data beyond its padding to 4.
    """
    size = len(packet)
    if size < 4:
        raise StunDecodeError("ChannelData shorter than its 4-byte header")
    channel, length = _unpack_from(packet)
    if not MIN_CHANNEL <= channel <= MAX_RFC5766_CHANNEL:
        raise StunDecodeError(f"channel number 0x{channel:04x} outside 0x4000-0x7FFF")
    # RFC 8656 §12.5: over UDP the padding may or may not be there.
    extra = size - 4 - length
    if extra < 0:
        raise StunDecodeError(f"ChannelData length {length} exceeds the {size - 4} bytes sent")
    if extra > (-length & 3):
        raise StunDecodeError(f"{extra} bytes after ChannelData of length {length}")
    return channel, length


def decode_channel_data(packet: ByteString) -> tuple[int, bytes]:
    """Parse a ChannelData datagram into (channel, application data), padding dropped."""
    channel, length = parse_channel_header(packet)
    return channel, bytes(packet[4 : 4 + length])
