"""Building the responses the TURN core sends: success and error, signed when they must be.

Owns the response rules of RFC 8489 §6.3.3/§6.3.4 and design §5: every response carries
SOFTWARE and ends in FINGERPRINT; a response to an authenticated request is signed with
the request's key (error responses included: aioice drops unsigned ones and retries
until it times out), with MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY when
the request used it (RFC 8489 §9.2.4: the key is then a `Sha256Key`); ERROR-CODE
carries the RFC's reason phrase unless a more precise one is given.

Answers to requests that did not authenticate (`unauthenticated`: the 401, 438 and 400
of RFC 8489 §9.2.4) carry only ERROR-CODE and what §9.2.4 asks for (REALM and NONCE,
PASSWORD-ALGORITHMS when the nonce cookie offers it, THIRD-PARTY-AUTHORIZATION when
configured): no SOFTWARE, and FINGERPRINT only when the request carried one (a client
that multiplexes STUN with other traffic fingerprints its own requests, RFC 8489 §7).
Anybody can send such a request from a forged source, so its answer is kept small
(issue 15: the reflection factor stays within coturn's; tests/turn/test_amplification.py).

Each response is a `Reply`: the bytes to send and what was decided (the request's
method, the response code), so that counting responses never decodes them again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from trelay.stun.attributes import Attribute, Fingerprint, Software
from trelay.stun.codes import ErrorCode, MessageClass
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.integrity import sign_attributes
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
    data = _signed(request, MessageClass.SUCCESS, (*attributes, software), key)
    return Reply(data, request.method, SUCCESS_CODE)


def _signed(
    request: Message,
    message_class: MessageClass,
    attributes: tuple[Attribute, ...],
    key: bytes | None,
) -> bytes:
    # The response's fields straight to the encoder: no `Message` is built for it.
    sha256 = isinstance(key, Sha256Key)
    return sign_attributes(
        request.method, message_class, request.transaction_id, attributes, key,
        sha1=not sha256, sha256=sha256,
    )  # fmt: skip


def error(
    request: Message,
    code: ErrorCode,
    software: Software,
    key: bytes | None = None,
    *,
    reason: str | None = None,
    extra: tuple[Attribute, ...] = (),
) -> Reply:
    attributes = (_error_code(code, reason or code.reason), *extra, software)
    data = _signed(request, MessageClass.ERROR, attributes, key)
    return Reply(data, request.method, int(code))


def unauthenticated(
    request: Message, code: ErrorCode, reason: str, attributes: tuple[Attribute, ...]
) -> Reply:
    """An error to a request that did not authenticate: unsigned, no SOFTWARE, FINGERPRINT
    only if the request had one (module docstring)."""
    method = request.method
    data = sign_attributes(
        method, MessageClass.ERROR, request.transaction_id,
        (_error_code(code, reason), *attributes),
        fingerprint=request.get(Fingerprint) is not None,
    )  # fmt: skip
    return Reply(data, method, int(code))


@functools.lru_cache(maxsize=64)
def _error_code(code: ErrorCode, reason: str) -> ErrorCodeAttribute:
    """ERROR-CODE, the same few in most error responses (every 401): each built once."""
    return ErrorCodeAttribute(code, reason)
