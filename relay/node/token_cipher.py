"""Decrypting RFC 7635 ACCESS-TOKENs (AES-GCM via `cryptography`) on a relay node.

Owns the AEAD the pure core may not import: `AesGcmTokenCipher` is the
`trelay.turn.third_party.TokenDecryptor` a node's `ThirdPartyAuthorizer` uses (RFC 7635
§6.2). The key's length picks the algorithm: 32 bytes AES-256-GCM (RFC 7635's mandatory
one), 16 bytes AES-128-GCM (JOSE "A128GCM"). Any failure (wrong tag, wrong key size,
nonce outside 8..128 bytes) is None: a client's bytes never raise. Minting is the token
API's job (`trelay.credentials.token_crypto`).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZES = frozenset((16, 32))


class AesGcmTokenCipher:
    """AES-GCM decryption for `trelay.turn.third_party.ThirdPartyAuthorizer`."""

    __slots__ = ()

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
        if len(key) not in KEY_SIZES:
            return None
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError, OverflowError):
            return None
