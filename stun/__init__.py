"""trelay's STUN codec: pure, standard library only, no sockets and no clock.

Modules: `codes` (wire numbers), `attributes` and `address_attributes` (typed
attributes), `message` (header and TLVs), `integrity` (MESSAGE-INTEGRITY,
MESSAGE-INTEGRITY-SHA256, FINGERPRINT), `credentials` (long-term keys, USERHASH,
OpaqueString), `nonce_cookie` (RFC 8489 security feature bits), `channel_data`
(TURN ChannelData, and the first byte that tells it from STUN, RFC 7983 §7), `framing`
(TCP/TLS stream deframer) and `strategies` (hypothesis strategies, needs the
`hypothesis` extra).
"""

from trelay.stun.errors import StunDecodeError
from trelay.stun.message import Message, decode_message, encode_message

__all__ = ["Message", "StunDecodeError", "decode_message", "encode_message"]
