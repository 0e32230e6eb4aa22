"""Access tokens: HS256 JWTs in Twilio's access-token format, minted and verified.

Owns the token format and every decision about whether a token is acceptable. A token
(RFC 7519, signed per RFC 7515 with HS256, RFC 7518 §3.2) looks like what
`twilio.jwt.access_token.AccessToken` makes, so back-ends that already use Twilio's helper
libraries need no change:

    header  {"typ": "JWT", "alg": "HS256", "cty": "twilio-fpa;v=1"}
    claims  {"jti": "<key sid>-<nonce>", "iss": "<key sid>", "sub": "<account sid>",
             "nbf": <unix>, "exp": <unix>, "grants": {"identity": "alice", ...}}

Verification (`verify_token`), in order: the header parses; `alg` is exactly HS256
(never "none", never RS*/ES* with the HMAC secret as a "public key": RFC 8725 §3.1);
the key is found by `iss` (and `kid`, when present, names the same key); the signature
is valid under that key's secret; the claims have the right types; `sub` is the key's
account; `exp`, `nbf` and `iat` (when present) are finite numbers (JSON
parsers accept NaN and Infinity: such a claim is malformed, a 401, never an error
later); `nbf`/`exp` hold with `LEEWAY_SECONDS`; the key is not past its `not_after`;
the identity is not revoked. Other grants (VideoGrant, ...) are carried, not checked.

Invariants: every failure is one `TokenError` with a machine `reason` and a human
`message`; messages never contain a secret or the token; the clock is passed in.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeGuard

import jwt

from trelay.config.api_keys import ApiKey, ApiKeys

ALGORITHM = "HS256"
CONTENT_TYPE = "twilio-fpa;v=1"
LEEWAY_SECONDS = 30.0
DEFAULT_TOKEN_TTL = 3600
MAX_IDENTITY_BYTES = 256  # "<expiry>:<identity>" must stay well under 509 bytes (Chrome)


class TokenReason(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ACCOUNT = "wrong_account"
    REVOKED = "revoked"


class TokenError(Exception):
    """A token that is refused: `reason` for machines, `message` for people."""

    def __init__(self, reason: TokenReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token says. `grants` holds every grant, identity included."""

    identity: str
    key: ApiKey
    jti: str
    not_before: float | None
    expires_at: float
    grants: Mapping[str, Any] = field(repr=False)

    @property
    def account(self) -> str:
        return self.key.account


def mint_token(
    key: ApiKey,
    identity: str,
    unix_now: float,
    ttl: int = DEFAULT_TOKEN_TTL,
    grants: Mapping[str, Any] | None = None,
) -> str:
    """An access token for `identity` under `key`, valid from now for `ttl` seconds.

    The expiry never passes the key's `not_after`.
    """
    check_identity(identity)
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = int(unix_now)
    expires = issued + ttl
    if key.not_after is not None:
        expires = min(expires, int(key.not_after.timestamp()))
    claims = {
        "jti": f"{key.sid}-{secrets.token_hex(16)}",
        "iss": key.sid,
        "sub": key.account,
        "nbf": issued,
        "exp": expires,
        "grants": {**(grants or {}), "identity": identity},
    }
    headers = {"typ": "JWT", "cty": CONTENT_TYPE}
    return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers=headers)


def check_identity(identity: str) -> None:
    """ValueError unless `identity` can be put in a TURN username."""
    if not identity:
        raise ValueError("identity is empty")
    if len(identity.encode("utf-8")) > MAX_IDENTITY_BYTES:
        raise ValueError(f"identity is longer than {MAX_IDENTITY_BYTES} bytes")
    if not identity.isprintable():
        raise ValueError("identity contains control characters")


def verify_token(
    token: str | None,
    keys: ApiKeys,
    unix_now: float,
    is_revoked: Callable[[str, float], bool] | None = None,
    leeway: float = LEEWAY_SECONDS,
) -> VerifiedToken:
    """The claims of `token` if it is acceptable now; TokenError says why not."""
    if not token:
        raise TokenError(TokenReason.MISSING, "no access token")
    key = _signing_key(token, keys)
    try:
        claims = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            # Times are checked below against the injected clock, not PyJWT's.
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise TokenError(TokenReason.BAD_SIGNATURE, "signature does not verify") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(TokenReason.MALFORMED, f"cannot decode: {exc}") from None
    verified = _claims(claims, key)
    if verified.key.account != claims.get("sub"):
        raise TokenError(TokenReason.WRONG_ACCOUNT, f"sub is not the account of {key.sid}")
    if unix_now > verified.expires_at + leeway:
        raise TokenError(TokenReason.EXPIRED, "the token has expired")
    if verified.not_before is not None and unix_now + leeway < verified.not_before:
        raise TokenError(TokenReason.NOT_YET_VALID, "the token is not valid yet (nbf)")
    if not key.usable_at(unix_now):
        raise TokenError(TokenReason.EXPIRED, f"the API key {key.sid} is past its not_after")
    if is_revoked is not None and is_revoked(verified.identity, unix_now):
        raise TokenError(TokenReason.REVOKED, "the identity is revoked")
    return verified


def _signing_key(token: str, keys: ApiKeys) -> ApiKey:
    """The key the header and `iss` name, after refusing every algorithm but HS256."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise TokenError(TokenReason.MALFORMED, f"not a JWT: {exc}") from None
    algorithm = header.get("alg")
    if algorithm != ALGORITHM:
        # RFC 8725 §3.1: the algorithm is ours to choose, never the token's.
        raise TokenError(TokenReason.ALG_NOT_ALLOWED, f"alg {algorithm!r} is not {ALGORITHM}")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str):
        raise TokenError(TokenReason.MALFORMED, "iss is missing or not a string")
    kid = header.get("kid")
    if kid is not None and kid != issuer:
        raise TokenError(TokenReason.UNKNOWN_KEY, "kid and iss name different keys")
    key = keys.by_sid(issuer)
    if key is None:
        raise TokenError(TokenReason.UNKNOWN_KEY, f"no API key {issuer!r}")
    return key


def _claims(claims: Mapping[str, Any], key: ApiKey) -> VerifiedToken:
    expires = claims.get("exp")
    if not _is_time(expires):
        raise TokenError(TokenReason.MALFORMED, "exp is missing or not a finite number")
    not_before = claims.get("nbf")
    if not_before is not None and not _is_time(not_before):
        raise TokenError(TokenReason.MALFORMED, "nbf is not a finite number")
    issued = claims.get("iat")
    if issued is not None and not _is_time(issued):
        raise TokenError(TokenReason.MALFORMED, "iat is not a finite number")
    grants = claims.get("grants")
    if not isinstance(grants, dict):
        raise TokenError(TokenReason.MALFORMED, "grants is missing or not an object")
    identity = grants.get("identity")
    if not isinstance(identity, str):
        raise TokenError(TokenReason.MALFORMED, "grants.identity is missing or not a string")
    try:
        check_identity(identity)
    except ValueError as exc:
        raise TokenError(TokenReason.MALFORMED, f"grants.identity: {exc}") from None
    jti = claims.get("jti")
    return VerifiedToken(
        identity=identity,
        key=key,
        jti=jti if isinstance(jti, str) else "",
        not_before=None if not_before is None else float(not_before),
        expires_at=float(expires),
        grants=grants,
    )


def _is_time(value: object) -> TypeGuard[int | float]:
    # Finite: NaN compares false with everything (an `nbf` that never holds back) and
    # Infinity overflows every conversion to whole seconds.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)
