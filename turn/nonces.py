"""Stateless nonces: HMAC-stamped with an expiry and bound to the client's address.

Owns the NONCE values of the long-term credential mechanism (RFC 8489 §9.2). A nonce is
`[cookie]<expiry, 8 hex digits><tag, 22 base64url chars>` where the tag is HMAC-SHA256
over the cookie, the expiry and the client's transport address, keyed by a server
secret. Any process that holds the secret checks a nonce without shared state; a nonce
replayed from another address, a forged one or an expired one is stale (438).

The optional cookie is RFC 8489 §9.2's "nonce cookie" ("obMatJos2" + the 24 security
feature bits, `trelay.stun.nonce_cookie`). It is covered by the tag, so the feature bits a
client echoes are the ones we sent: an attacker who strips or alters them in the
(unauthenticated) 401 makes the nonce stale, which is the bid-down protection of §9.2.1.
A nonce without a cookie is exactly the pre-RFC 8489 format (legacy clients, and nonces
minted by older workers stay valid).

Expiry is wall-clock Unix seconds (workers and restarts agree on it), passed in by the
caller. The alphabet (hex, base64 and base64url) is safe inside RFC 8489's quoted-string
NONCE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from trelay.stun.nonce_cookie import (
    NONCE_COOKIE_LENGTH,
    SecurityFeature,
    make_nonce_cookie,
    parse_nonce_cookie,
)
from trelay.turn.addressing import Address

_BODY_LENGTH = 30  # 8 hex digits of expiry + 22 base64url characters of tag


class NonceStamper:
    """Mints and checks nonces; `lifetime` seconds after minting they turn stale."""

    __slots__ = ("_key", "lifetime")

    def __init__(self, key: bytes, lifetime: float = 3600.0) -> None:
        if len(key) < 16:
            raise ValueError("nonce key must be at least 16 bytes")
        self._key = key
        self.lifetime = lifetime

    def _tag(self, cookie: str, expiry_hex: str, client: Address) -> str:
        message = f"{cookie}{expiry_hex}|{client[0]}|{client[1]}".encode()
        digest = hmac.digest(self._key, message, hashlib.sha256)[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def mint(
        self,
        client: Address,
        unix_now: float,
        features: SecurityFeature = SecurityFeature.NONE,
    ) -> str:
        """A nonce for `client`; with `features`, it starts with the nonce cookie."""
        cookie = make_nonce_cookie(features) if features else ""
        expiry_hex = f"{int(unix_now + self.lifetime) & 0xFFFFFFFF:08x}"
        return cookie + expiry_hex + self._tag(cookie, expiry_hex, client)

    def is_valid(self, nonce: str, client: Address, unix_now: float) -> bool:
        """True if we minted `nonce` for `client` and it has not expired."""
        return self.features(nonce, client, unix_now) is not None

    def features(self, nonce: str, client: Address, unix_now: float) -> SecurityFeature | None:
        """The security features stamped into a valid `nonce` (NONE: no cookie), else None."""
        if not nonce.isascii():
            return None  # not ours; and compare_digest refuses non-ASCII str (TypeError)
        features = SecurityFeature.NONE
        cookie = ""
        if len(nonce) == NONCE_COOKIE_LENGTH + _BODY_LENGTH:
            parsed = parse_nonce_cookie(nonce)
            if parsed is None:
                return None
            features, cookie = parsed, nonce[:NONCE_COOKIE_LENGTH]
        elif len(nonce) != _BODY_LENGTH:
            return None
        body = nonce[len(cookie) :]
        expiry_hex, tag = body[:8], body[8:]
        try:
            expiry = int(expiry_hex, 16)
        except ValueError:
            return None
        if expiry < unix_now or not hmac.compare_digest(tag, self._tag(cookie, expiry_hex, client)):
            return None
        return features
