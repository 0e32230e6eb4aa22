"""Building the responses the TURN core sends: success and error, signed when they must be.

Owns the response rules of RFC 8489 §6.3.3/§6.3.4 and design §5: every response carries
SOFTWARE and ends in FINGERPRINT; a response to an authenticated request is signed with
the request's key (error responses included: aioice drops unsigned ones and retries
until it times out), with MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY when
the request used it (RFC 8489 §9.2.4: the key is then a `Sha256Key`); ERROR-CODE
carries the RFC's reason phrase unless a more precise one is given.

Each response is a `Reply`: the bytes to send and what was decided (the request's
method, the response code), so that counting responses never decodes them again.
"""

from __future__ import annotations

from dataclasses import dataclass

from trelay.stun.attributes import Attribute, Software
from trelay.stun.codes import ErrorCode, MessageClass
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message
from trelay.turn.credential_sources import Sha256Key

SUCCESS_CODE = 200  # the `Reply.code` of a success response


@dataclass(frozen=True, slots=True)
class Reply:
    """One encoded response (`data`), the request `method` it answers and its `code`:
    the ERROR-CODE of an error response (RFC 8489 §14.8), `SUCCESS_CODE` for success."""

    data: bytes
    method: int
    code: int


def success(
    request: Message, attributes: tuple[Attribute, ...], software: Software, key: bytes | None
) -> Reply:
    response = Message(
        request.method, MessageClass.SUCCESS, request.transaction_id, (*attributes, software)
    )
    return Reply(_signed(response, key), request.method, SUCCESS_CODE)


def _signed(response: Message, key: bytes | None) -> bytes:
    sha256 = isinstance(key, Sha256Key)
    return encode_signed(response, key, sha1=not sha256, sha256=sha256)


def error(
    request: Message,
    code: ErrorCode,
    software: Software,
    key: bytes | None = None,
    *,
    reason: str | None = None,
    extra: tuple[Attribute, ...] = (),
) -> Reply:
    attributes = (ErrorCodeAttribute(code, reason or code.reason), *extra, software)
    response = Message(request.method, MessageClass.ERROR, request.transaction_id, attributes)
    return Reply(_signed(response, key), request.method, int(code))
