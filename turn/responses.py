"""Building the responses the TURN core sends: success and error, signed when they must be.

Owns the response rules of RFC 8489 §6.3.3/§6.3.4 and DESIGN §5: every response carries
SOFTWARE and ends in FINGERPRINT; a response to an authenticated request is signed with
the request's key (error responses included: aioice drops unsigned ones and retries
until it times out); ERROR-CODE carries the RFC's reason phrase unless a more precise
one is given.
"""

from __future__ import annotations

from stun.attributes import Attribute, ErrorCodeAttribute, Software
from stun.codes import ErrorCode, MessageClass
from stun.integrity import encode_signed
from stun.message import Message


def success(
    request: Message, attributes: tuple[Attribute, ...], software: Software, key: bytes | None
) -> bytes:
    response = Message(
        request.method, MessageClass.SUCCESS, request.transaction_id, (*attributes, software)
    )
    return encode_signed(response, key)


def error(
    request: Message,
    code: ErrorCode,
    software: Software,
    key: bytes | None = None,
    *,
    reason: str | None = None,
    extra: tuple[Attribute, ...] = (),
) -> bytes:
    attributes = (ErrorCodeAttribute(code, reason or code.reason), *extra, software)
    response = Message(request.method, MessageClass.ERROR, request.transaction_id, attributes)
    return encode_signed(response, key)
