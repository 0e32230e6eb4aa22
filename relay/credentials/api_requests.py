"""The token API's HTTP plumbing: refusals, who is asking, and bounded request bodies.

Owns how a request to `trelay.credentials.token_api` is read: `Authorization` (RFC 7617
Basic with an API key SID and secret, RFC 6750 Bearer with an access token), a body of at most
`MAX_BODY_BYTES`, an `application/x-www-form-urlencoded` form, and every refusal as a
4xx with JSON {"error": reason, "message": ...} and, for 401, a WWW-Authenticate
challenge. Only reasons and paths are logged: never a header, a body or a secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trelay.config.api_keys import ApiKey, ApiKeys
from trelay.credentials.access_tokens import TokenError, VerifiedToken, verify_token
from trelay.turn.auth import RevocationCheck

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024


class ApiError(Exception):
    """A refusal: HTTP `status`, a machine `reason`, a human `message`."""

    def __init__(self, status: int, reason: str, message: str, scheme: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.scheme = scheme  # WWW-Authenticate challenge for 401s


def refusal(request: Request, error: ApiError) -> Response:
    # Reason and path only: never the Authorization header or the body.
    log.info("token api: %s %s refused: %s", request.method, request.url.path, error.reason)
    headers = {}
    if error.status == 401 and error.scheme is not None:
        headers["WWW-Authenticate"] = error.scheme
    body = {"error": error.reason, "message": error.message}
    return JSONResponse(body, status_code=error.status, headers=headers)


BASIC_CHALLENGE = 'Basic realm="trelay"'
BEARER_CHALLENGE = 'Bearer realm="trelay", error="invalid_token"'


def authorization(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower(), value.strip()


def basic_key(keys: ApiKeys, request: Request, now: float) -> ApiKey:
    """The API key of HTTP Basic credentials (RFC 7617 §2): "<key sid>:<key secret>"."""
    found = authorization(request)
    if found is None or found[0] != "basic":
        raise ApiError(401, "missing", "HTTP Basic auth with an API key required", BASIC_CHALLENGE)
    try:
        decoded = base64.b64decode(found[1], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "malformed", "bad Basic credentials", BASIC_CHALLENGE) from None
    sid, _, secret = decoded.partition(":")
    key = keys.by_sid(sid)
    # Compare even for an unknown SID so that timing says little about which keys exist.
    expected = key.secret if key is not None else "\0" * 32
    if not hmac.compare_digest(secret.encode("utf-8"), expected.encode("utf-8")) or key is None:
        raise ApiError(401, "unauthorized", "unknown API key or wrong secret", BASIC_CHALLENGE)
    if not key.usable_at(now):
        raise ApiError(401, "expired", f"the API key {key.sid} is past its not_after")
    return key


def bearer_token(
    keys: ApiKeys, is_revoked: RevocationCheck, request: Request, now: float
) -> VerifiedToken:
    """The verified access token of `Authorization: Bearer` (RFC 6750 §2.1)."""
    found = authorization(request)
    token = found[1] if found is not None and found[0] == "bearer" else None
    try:
        return verify_token(token, keys, now, is_revoked)
    except TokenError as exc:
        log.info("token api: access token refused: %s", exc.reason)
        raise ApiError(401, str(exc.reason), exc.message, BEARER_CHALLENGE) from None


async def read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> dict[str, str]:
    body = await read_body(request)
    if not body:
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ApiError(400, "malformed_body", "expected application/x-www-form-urlencoded")
    try:
        return dict(parse_qsl(body.decode("utf-8"), strict_parsing=True))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "malformed_body", "the form does not parse") from None
