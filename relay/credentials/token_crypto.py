"""Minting RFC 7635 ACCESS-TOKENs (AES-GCM via `cryptography`) for non-browser clients.

Owns the authorization server's half of third-party authorization (the nodes decrypt
with `trelay.node.token_cipher`; `trelay.turn.third_party` holds the token format and
the checks):

- `mint_access_token`: what the authorization server (our HTTP API) does for a
  non-browser client: a fresh random mac_key and 12-byte nonce, the block encrypted
  under the kid's key with the TURN server's name as associated data. The client sends
  the token in ACCESS-TOKEN, the kid in USERNAME and signs with mac_key.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trelay.node.token_cipher import KEY_SIZES
from trelay.stun.auth_attributes import AccessToken
from trelay.turn.third_party import TokenGrant, encode_grant

NONCE_BYTES = 12  # the GCM nonce size NIST SP 800-38D recommends
MAC_KEY_BYTES = 32  # enough for HMAC-SHA256 (MESSAGE-INTEGRITY-SHA256) as well as -SHA1
_MAX_USERNAME_BYTES = 509  # RFC 8489 §14.3: the kid travels in USERNAME


def mint_access_token(
    kid: str,
    key: bytes,
    server_name: str,
    lifetime: int,
    now: float,
    *,
    mac_key: bytes | None = None,
) -> tuple[bytes, bytes]:
    """(ACCESS-TOKEN value, mac_key) valid from `now` (Unix seconds) for `lifetime` s.

    `kid` is not inside the token (the client sends it as USERNAME); it is checked here
    so that a token is never minted for a kid that cannot travel in USERNAME.
    """
    if not kid or len(kid.encode("utf-8")) > _MAX_USERNAME_BYTES:
        raise ValueError("kid must be 1..509 bytes of UTF-8 (it is sent as USERNAME)")
    if len(key) not in KEY_SIZES:
        raise ValueError("key must be 16 (A128GCM) or 32 (AES-256-GCM) bytes")
    if lifetime <= 0:
        raise ValueError("lifetime must be positive")
    mac_key = secrets.token_bytes(MAC_KEY_BYTES) if mac_key is None else mac_key
    plaintext = encode_grant(TokenGrant(mac_key, now, lifetime))
    nonce = secrets.token_bytes(NONCE_BYTES)
    block = AESGCM(key).encrypt(nonce, plaintext, server_name.encode("utf-8"))
    token = AccessToken(nonce, block).encode_value(b"")
    return token, mac_key
