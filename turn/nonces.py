"""Stateless nonces: HMAC-stamped with an expiry and bound to the client's address.

Owns the NONCE values of the long-term credential mechanism (RFC 8489 §9.2). A nonce is
`<expiry, 8 hex digits><tag, 22 base64url chars>` where the tag is HMAC-SHA256 over the
expiry and the client's transport address, keyed by a server secret. Any process that
holds the secret checks a nonce without shared state; a nonce replayed from another
address, a forged one or an expired one is stale (438).

Expiry is wall-clock Unix seconds (workers and restarts agree on it), passed in by the
caller. The alphabet (hex and base64url) is safe inside RFC 8489's quoted-string NONCE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from turn.addressing import Address


class NonceStamper:
    """Mints and checks nonces; `lifetime` seconds after minting they turn stale."""

    __slots__ = ("_key", "lifetime")

    def __init__(self, key: bytes, lifetime: float = 3600.0) -> None:
        if len(key) < 16:
            raise ValueError("nonce key must be at least 16 bytes")
        self._key = key
        self.lifetime = lifetime

    def _tag(self, expiry_hex: str, client: Address) -> str:
        message = f"{expiry_hex}|{client[0]}|{client[1]}".encode()
        digest = hmac.digest(self._key, message, hashlib.sha256)[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def mint(self, client: Address, unix_now: float) -> str:
        expiry_hex = f"{int(unix_now + self.lifetime) & 0xFFFFFFFF:08x}"
        return expiry_hex + self._tag(expiry_hex, client)

    def is_valid(self, nonce: str, client: Address, unix_now: float) -> bool:
        """True if we minted `nonce` for `client` and it has not expired."""
        if not nonce.isascii():
            return False  # not ours; and compare_digest refuses non-ASCII str (TypeError)
        expiry_hex, tag = nonce[:8], nonce[8:]
        try:
            expiry = int(expiry_hex, 16)
        except ValueError:
            return False
        if len(expiry_hex) != 8 or expiry < unix_now:
            return False
        return hmac.compare_digest(tag, self._tag(expiry_hex, client))
