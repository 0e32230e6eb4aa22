"""Which worker of the node a request names, read from its bytes before any worker
answers it: what the UDP hand-over (`trelay.node.mobility_steering`) and the TCP/TLS
proxy (`trelay.node.bind_proxy`) share (design §4, steering across workers).

Both look only at a few request types (the first two bytes of the message: method and
request class), decode just those, and read the worker from an attribute; a
RESERVATION-TOKEN's first byte names the worker that issued it (RFC 8656 §7.2,
`trelay.turn.reservations.token_worker`).
"""

from __future__ import annotations

from collections.abc import Collection

from trelay.stun.attributes import ReservationToken
from trelay.stun.codes import Method
from trelay.stun.errors import StunDecodeError
from trelay.stun.message import Message, decode_message
from trelay.turn.reservations import token_worker

# The first two bytes of a request of each method (the request class adds no bits).
ALLOCATE_REQUEST = Method.ALLOCATE.to_bytes(2, "big")
REFRESH_REQUEST = Method.REFRESH.to_bytes(2, "big")
CONNECTION_BIND_REQUEST = Method.CONNECTION_BIND.to_bytes(2, "big")


def decode_request(data: bytes, kinds: Collection[bytes]) -> Message | None:
    """`data` decoded when its first two bytes are one of `kinds` (the requests above);
    None for anything else or what does not decode (then answered where it arrived)."""
    if data[:2] not in kinds:
        return None
    try:
        return decode_message(data)
    except StunDecodeError:
        return None


def reservation_worker(message: Message) -> int | None:
    """The worker an Allocate's RESERVATION-TOKEN names; None without one."""
    token = message.get(ReservationToken)
    return None if token is None else token_worker(token.value)
