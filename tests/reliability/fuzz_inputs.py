"""What the node fuzzer sends: mutated valid STUN/TURN messages, ChannelData and garbage.

Built on the public strategies of `trelay.stun.strategies` (every method, every attribute
class, `almost_valid_messages` for targeted corruptions), with one restriction that keeps
the fuzzer on this machine: every address attribute names a loopback or a denied peer
(`PEER_HOSTS`), on one of the ports in `peer_ports` (the test's own sink and the node's
own listeners, which must be refused), so a permission the fuzzer wins can only ever
relay to a socket the test owns.

`Frame`s are what one example sends: `signed` frames are completed at send time with the
USERNAME, REALM and NONCE of a real challenge and MESSAGE-INTEGRITY (they reach past
authentication into Allocate, Refresh, CreatePermission, ChannelBind...), optionally
corrupted after signing; the others go as drawn. `stream_bytes` lays frames out as a TCP
stream does (RFC 8656 §12.5: ChannelData padded to 4 bytes) and may end with a frame whose
length field promises more than ever comes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, SearchStrategy

from trelay.stun import address_attributes as addr
from trelay.stun import attributes as attrs
from trelay.stun import strategies as stun_st
from trelay.stun.attributes import Attribute
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, encode_message

# Loopback (allowed: the node runs with --allow-loopback-peers) and forms the peer policy
# denies (private, the IPv4-mapped loopback, unspecified): none routes off the machine.
PEER_HOSTS = ("127.0.0.1", "10.0.0.1", "192.168.1.1", "0.0.0.0", "::1", "::ffff:127.0.0.1")
# Filled in by the test before the first example: the ports a peer address may name.
peer_ports: list[int] = [9]

_ports = st.integers(0, 7).map(lambda i: peer_ports[i % len(peer_ports)])
_hosts = st.just("127.0.0.1") | st.sampled_from(PEER_HOSTS)
_safe_addresses = st.one_of(*(st.builds(cls, _hosts, _ports) for cls in addr.ADDRESS_ATTRIBUTES))
safe_attributes: SearchStrategy[Attribute] = st.one_of(
    _safe_addresses,
    _safe_addresses,  # twice: peers are what TURN methods are about
    *(s for cls, s in stun_st.ATTRIBUTE_STRATEGIES.items() if cls not in addr.ADDRESS_ATTRIBUTES),
    stun_st.unknown_attributes(),
)
# Every method, the known ones most often; requests and indications (what a client sends).
_methods = st.sampled_from(Method) | st.integers(0, 0xFFF)
_classes = st.sampled_from([MessageClass.REQUEST, MessageClass.INDICATION]) | st.sampled_from(
    MessageClass
)
messages = stun_st.messages(
    methods=_methods, classes=_classes, attributes=safe_attributes, max_attributes=6
)


# Requests a client really sends, so that signed ones succeed often enough to build state
# (an allocation, permissions, channels 0x4000-0x4003 the ChannelData frames then use),
# with random attributes mixed in.
_plausible = {
    Method.ALLOCATE: st.builds(attrs.RequestedTransport, st.just(17)),
    Method.REFRESH: st.builds(attrs.Lifetime, st.integers(0, 3600)),
    Method.CREATE_PERMISSION: st.builds(addr.XorPeerAddress, _hosts, _ports),
    Method.CHANNEL_BIND: st.builds(attrs.ChannelNumber, st.integers(0x4000, 0x4003)),
    Method.SEND: st.builds(attrs.Data, st.binary(max_size=100)),
}


@st.composite
def plausible_messages(draw: DrawFn) -> Message:
    method = draw(st.sampled_from(sorted(_plausible)))
    first = draw(st.lists(_plausible[method], min_size=1, max_size=2 if draw(st.booleans()) else 1))
    peer = draw(st.builds(addr.XorPeerAddress, _hosts, _ports))
    extra = draw(st.lists(safe_attributes, max_size=1).map(_without_trailer))
    body = (*first, peer, *extra) if method is not Method.ALLOCATE else (*first, *extra)
    message_class = MessageClass.INDICATION if method is Method.SEND else MessageClass.REQUEST
    return Message(method, message_class, draw(stun_st.transaction_ids()), tuple(body))


def _without_trailer(attributes: list[Attribute]) -> list[Attribute]:
    trailer = (attrs.MessageIntegrity, attrs.MessageIntegritySha256, attrs.Fingerprint)
    return [a for a in attributes if not isinstance(a, trailer)]


@dataclass(frozen=True)
class Frame:
    """One thing to send: bytes as they are, or a message to sign at send time."""

    data: bytes = b""
    signed: Message | None = None
    corruption: int | None = None  # a byte offset to flip after signing (mod length)

    def encode(self, auth: tuple[Attribute, ...], key: bytes) -> bytes:
        if self.signed is None:
            return self.data
        message = Message(
            self.signed.method,
            self.signed.message_class,
            self.signed.transaction_id,
            (*self.signed.attributes, *auth),
        )
        data = bytearray(encode_signed(message, key))
        if self.corruption is not None:
            data[self.corruption % len(data)] ^= 0x01
        return bytes(data)


@st.composite
def channel_data(draw: DrawFn) -> bytes:
    """ChannelData (RFC 8656 §12.4): valid, or with a lying length or an unbound number."""
    channel = draw(st.integers(0x4000, 0x4003) | st.integers(0x4000, 0x7FFF))
    payload = draw(st.binary(max_size=200))
    length = draw(st.just(len(payload)) | st.integers(0, 0xFFFF))
    return struct.pack("!HH", channel, length) + payload


# Without integrity or fingerprint: the real ones are appended when signing.
_signed_messages = stun_st.messages(
    methods=_methods,
    classes=_classes,
    attributes=safe_attributes,
    max_attributes=6,
    trailer=False,
)
frames: SearchStrategy[Frame] = st.one_of(
    st.builds(Frame, signed=plausible_messages()),
    st.builds(Frame, signed=_signed_messages),
    st.builds(Frame, signed=_signed_messages, corruption=st.integers(0, 1 << 16)),
    st.builds(Frame, data=messages.map(encode_message)),
    st.builds(Frame, data=stun_st.almost_valid_messages(messages.map(encode_message))),
    st.builds(Frame, data=channel_data()),
    st.builds(Frame, data=st.binary(min_size=1, max_size=300)),
)


@st.composite
def batches(draw: DrawFn) -> list[Frame]:
    """1-16 frames, most often after a signed Allocate (so the rest has an allocation)."""
    rest = draw(st.lists(frames, min_size=1, max_size=16))
    if not draw(st.booleans()):
        return rest
    tid = draw(stun_st.transaction_ids())
    first = Message(Method.ALLOCATE, MessageClass.REQUEST, tid, (attrs.RequestedTransport(17),))
    return [Frame(signed=first), *rest]


def stream_bytes(frames_data: list[bytes], oversized_tail: int | None) -> bytes:
    """Frames back to back as on a stream (ChannelData padded to 4, RFC 8656 §12.5); with
    `oversized_tail`, a last STUN header whose length promises that many bytes, never sent."""
    out = bytearray()
    for data in frames_data:
        out += data
        if data and 0x40 <= data[0] <= 0x7F:
            out += bytes(-len(data) % 4)
    if oversized_tail is not None:
        out += struct.pack("!HHI", 0x0003, oversized_tail & 0xFFFC, 0x2112A442) + bytes(12)
    return bytes(out)
