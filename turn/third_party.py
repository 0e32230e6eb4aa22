"""RFC 7635 third-party authorization: the ACCESS-TOKEN a TURN server checks on its own.

Owns the token's encrypted block and what a valid token grants. An authorization
server and this TURN server share one long-term key per `kid` (RFC 7635 §4.1: the
"key table"); the client gets a token and its `mac_key` from the authorization server,
and sends ACCESS-TOKEN, USERNAME = kid and a MESSAGE-INTEGRITY computed with `mac_key`
(RFC 7635 §5, §6.2).

Token layout (RFC 7635 §6.2; the outer nonce/ciphertext split is `trelay.stun.attributes.
AccessToken`):

    nonce_length (16) | nonce | encrypted_block
    encrypted_block = AEAD(key[kid], nonce, plaintext, associated data = server name)
    plaintext       = key_length (16) | mac_key | timestamp (64) | lifetime (32)

`timestamp` is Unix time in fixed point: 48 bits of seconds, 16 bits of 1/64000 s
(RFC 7635 §6.2). A token is valid while `timestamp - clock_skew <= now <
timestamp + lifetime` (wall clock passed in; `clock_skew` tolerates an authorization
server whose clock runs a little ahead, RFC 7635 §9.2 leaves the margin to the server).

The AEAD (AES-256-GCM for 32-byte keys, AES-128-GCM / A128GCM for 16-byte keys) lives
behind `TokenDecryptor`: the pure core imports no crypto library (import-linter
contract); the runtime passes `trelay.credentials.token_crypto.AesGcmTokenCipher`.

Identity for quotas and revocation: `<kid>#<16 hex digits of SHA-256(mac_key)>`. A kid
names a key shared with an authorization server, not a user (one kid serves all its
users, and is rotated on its own schedule), so counting allocations per kid would put
every user of that server in one quota. Each token carries a fresh mac_key, so its
fingerprint stands for the grant that the authorization server made to one client;
revoking the bare kid (see `trelay.turn.auth`) refuses every token under it.

Invariants: `open` is total (any bytes give a `Credential` or None, never an
exception); a decryptor that raises is a bug in the runtime, not a client's doing.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from trelay.stun.auth_attributes import AccessToken
from trelay.turn.credential_sources import Credential

_FRACTIONS = 64000  # units of the 16-bit fraction of the timestamp (RFC 7635 §6.2)
_TAIL = struct.Struct("!QI")  # timestamp, lifetime
_MAX_SECONDS = (1 << 48) - 1


class TokenDecryptor(Protocol):
    """AEAD decryption: the plaintext, or None if the tag does not verify (or bad sizes)."""

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
        """`ciphertext` includes the AEAD tag; `aad` is the associated data."""
        ...


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """The plaintext of an encrypted block (RFC 7635 §6.2)."""

    mac_key: bytes
    timestamp: float  # Unix seconds
    lifetime: int  # seconds

    @property
    def expires_at(self) -> float:
        return self.timestamp + self.lifetime


def encode_timestamp(unix: float) -> int:
    """Unix seconds as 48.16 fixed point, the fraction in 1/64000 s."""
    seconds = int(unix)
    if not 0 <= seconds <= _MAX_SECONDS:
        raise ValueError("timestamp outside the 48-bit range")
    fraction = min(int((unix - seconds) * _FRACTIONS), _FRACTIONS - 1)
    return seconds << 16 | fraction


def decode_timestamp(value: int) -> float:
    return (value >> 16) + (value & 0xFFFF) / _FRACTIONS


def encode_grant(grant: TokenGrant) -> bytes:
    """The plaintext the authorization server encrypts."""
    if len(grant.mac_key) > 0xFFFF or not 0 <= grant.lifetime <= 0xFFFFFFFF:
        raise ValueError("mac_key longer than 65535 bytes or lifetime out of range")
    return (
        len(grant.mac_key).to_bytes(2, "big")
        + grant.mac_key
        + _TAIL.pack(encode_timestamp(grant.timestamp), grant.lifetime)
    )


def decode_grant(plaintext: bytes) -> TokenGrant | None:
    """Parse a decrypted block; None unless the lengths add up exactly."""
    if len(plaintext) < 2:
        return None
    key_length = int.from_bytes(plaintext[:2], "big")
    if len(plaintext) != 2 + key_length + _TAIL.size or key_length == 0:
        return None
    timestamp, lifetime = _TAIL.unpack_from(plaintext, 2 + key_length)
    return TokenGrant(bytes(plaintext[2 : 2 + key_length]), decode_timestamp(timestamp), lifetime)


def token_identity(kid: str, mac_key: bytes) -> str:
    """The identity quotas count for a token (module docstring: why not the kid)."""
    return f"{kid}#{hashlib.sha256(mac_key).hexdigest()[:16]}"


class ThirdPartyAuthorizer:
    """Checks ACCESS-TOKENs against the key table; the answer is a `Credential` or None.

    `server_name` is the associated data of the AEAD (this TURN server's name, as the
    authorization server knows it); `authorization_server` is what 401s announce in
    THIRD-PARTY-AUTHORIZATION (RFC 7635 §6.1).
    """

    __slots__ = ("_aad", "_decryptor", "_keys", "authorization_server", "clock_skew")

    def __init__(
        self,
        server_name: str,
        authorization_server: str,
        keys: Mapping[str, bytes],
        decryptor: TokenDecryptor,
        *,
        clock_skew: float = 5.0,
    ) -> None:
        self._aad = server_name.encode("utf-8")
        self.authorization_server = authorization_server
        self._keys = dict(keys)
        self._decryptor = decryptor
        self.clock_skew = clock_skew

    def replace_keys(self, keys: Mapping[str, bytes]) -> None:
        """Use this key table from now on (a kid added, rotated or withdrawn)."""
        self._keys = dict(keys)

    def open(self, token: AccessToken, kid: str, unix_now: float) -> Credential | None:
        """RFC 7635 §5: decrypt with kid's key and our name as AAD; check the lifetime."""
        key = self._keys.get(kid)
        if key is None:
            return None
        plaintext = self._decryptor.decrypt(key, token.nonce, token.encrypted_block, self._aad)
        if plaintext is None:
            return None
        grant = decode_grant(plaintext)
        if grant is None:
            return None
        if not grant.timestamp - self.clock_skew <= unix_now < grant.expires_at:
            return None
        # RFC 7635 §6.2: mac_key is the HMAC key of MESSAGE-INTEGRITY, used as it is.
        return Credential(grant.mac_key, token_identity(kid, grant.mac_key), grant.expires_at)
