"""First-byte demultiplexing of a shared UDP port (RFC 7983 §7, as updated by RFC 9443).

Owns the map from the first byte of a datagram to the protocol that sent it, so that a
relay port (or an ICE agent's socket) can tell STUN from TURN ChannelData, DTLS and
SRTP/SRTCP without parsing anything else.

The ranges (first byte, decimal):

    0-3      STUN       the message type's two top bits are zero, and RFC 7983 has
                        STUN methods 0x100-0xFFF reserved, so the byte stays below 4
    4-15     (drop)     reserved
    16-19    ZRTP       RFC 6189
    20-63    DTLS       record content types 20-63; the DTLS 1.3 unified header
                        (0b001xxxxx, 32-63) falls in this range too
    64-79    TURN       ChannelData, channel numbers 0x4000-0x4FFF (RFC 8656 §12)
    80-127   QUIC       RFC 9443 (RFC 7983: drop)
    128-191  RTP/RTCP   version 2 (SRTP and SRTCP included)
    192-255  QUIC       RFC 9443 (RFC 7983: drop)

What RFC 9443 changes: RFC 7983 dropped 80-127 and 192-255; RFC 9443 assigns them to
QUIC (short headers begin 0b01, long headers 0b11). TURN keeps 64-79, which matches the
channel range 0x4000-0x4FFF of RFC 8656 §12. A QUIC short header can also begin with
64-79; this table resolves that overlap in favour of TURN ChannelData, as a TURN relay must.

Invariant: every one of the 256 values maps to exactly one `PacketKind`. The map is a
precomputed tuple because the relay consults it for every datagram.
"""

from __future__ import annotations

from enum import Enum


class PacketKind(Enum):
    """What a datagram is, judged by its first byte alone."""

    STUN = "stun"
    ZRTP = "zrtp"
    DTLS = "dtls"
    TURN_CHANNEL = "turn-channel"
    RTP_RTCP = "rtp-rtcp"
    QUIC = "quic"
    UNKNOWN = "unknown"


# Inclusive (first, last, kind) ranges; together they cover 0-255 with no overlap.
RANGES: tuple[tuple[int, int, PacketKind], ...] = (
    (0, 3, PacketKind.STUN),
    (4, 15, PacketKind.UNKNOWN),
    (16, 19, PacketKind.ZRTP),
    (20, 63, PacketKind.DTLS),
    (64, 79, PacketKind.TURN_CHANNEL),
    (80, 127, PacketKind.QUIC),
    (128, 191, PacketKind.RTP_RTCP),
    (192, 255, PacketKind.QUIC),
)


def _build_table() -> tuple[PacketKind, ...]:
    table = [PacketKind.UNKNOWN] * 256
    for first, last, kind in RANGES:
        for value in range(first, last + 1):
            table[value] = kind
    return tuple(table)


# Hot path: `KIND_BY_FIRST_BYTE[datagram[0]]` is one tuple index, no call, no check.
# Indexing with `bytes[0]` always yields 0-255, so no bounds check is needed there.
KIND_BY_FIRST_BYTE: tuple[PacketKind, ...] = _build_table()


def classify(first_byte: int) -> PacketKind:
    """The protocol whose datagrams start with `first_byte` (0-255)."""
    if not 0 <= first_byte <= 0xFF:
        # A negative index would silently read the table from the end.
        raise ValueError(f"first byte {first_byte} outside 0-255")
    return KIND_BY_FIRST_BYTE[first_byte]


def classify_packet(packet: bytes) -> PacketKind:
    """Classify a whole datagram; an empty one is `UNKNOWN` (to be dropped)."""
    return KIND_BY_FIRST_BYTE[packet[0]] if packet else PacketKind.UNKNOWN
