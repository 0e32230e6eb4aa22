"""The client side of STUN authentication: credentials, challenges, and signing requests.

Owns RFC 8489 §9.2.3-9.2.5 as a client sees them (the long-term credential mechanism:
the server's 401/438 challenge carries REALM and NONCE; the client answers with
USERNAME or USERHASH, REALM, NONCE and MESSAGE-INTEGRITY(-SHA256) keyed by the
long-term key), the RFC 8489 security features it negotiates through the nonce cookie
(§9.2.1: PASSWORD-ALGORITHMS / PASSWORD-ALGORITHM, §14.11-14.12; USERHASH, §14.4;
MESSAGE-INTEGRITY-SHA256, §14.6), and RFC 7635 §6.2 ACCESS-TOKEN (USERNAME = kid,
integrity keyed by the token's mac_key).

Three layers, from policy to bytes:
- `LongTermCredentials` / `AccessTokenCredentials`: what the user configured;
- `parse_challenge` turns a 401/438 into a `Challenge`; `signing_for` decides how to
  answer it (which algorithm, which identity, which integrity attribute);
- `RequestSigning` is that decision, explicit in every field, so a test can build one
  by hand to send what a correct client never would (a key of the wrong algorithm, an
  altered PASSWORD-ALGORITHMS, a token that does not decode).

Pure: no clock, no randomness, standard library and `trelay.stun` only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from trelay.stun.attributes import (
    Attribute,
    Nonce,
    Realm,
    ThirdPartyAuthorization,
    UnknownAttribute,
    UserHash,
    Username,
)
from trelay.stun.auth_attributes import PasswordAlgorithm, PasswordAlgorithms
from trelay.stun.codes import AttributeType, PasswordAlgorithmId
from trelay.stun.credentials import long_term_key, userhash
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message
from trelay.stun.nonce_cookie import SecurityFeature, parse_nonce_cookie
from trelay.turn.client_events import TurnClientError

SHA256 = PasswordAlgorithmId.SHA256
MD5 = PasswordAlgorithmId.MD5


@dataclass(frozen=True, slots=True)
class LongTermCredentials:
    """A username and password for the long-term mechanism (RFC 8489 §9.2).

    `password_algorithms`: what the client accepts when the server offers
    PASSWORD-ALGORITHMS under a nonce cookie (§9.2.4), in the client's order of
    preference; empty means "an RFC 5389 client" (MD5, USERNAME, MESSAGE-INTEGRITY,
    cookie ignored). `use_userhash`: send USERHASH instead of USERNAME when the cookie
    offers username anonymity. `integrity_sha256`: None means MESSAGE-INTEGRITY-SHA256
    exactly when the SHA-256 password algorithm is used.
    """

    username: str
    password: str
    password_algorithms: tuple[PasswordAlgorithmId, ...] = (SHA256, MD5)
    use_userhash: bool = False
    integrity_sha256: bool | None = None
    fingerprint: bool = True


@dataclass(frozen=True, slots=True)
class AccessTokenCredentials:
    """RFC 7635 §6.2: `kid` goes into USERNAME, `token` (the ACCESS-TOKEN value as the
    authorization server issued it, opaque here) beside it, and `mac_key` signs."""

    kid: str
    mac_key: bytes
    token: bytes
    integrity_sha256: bool = False
    fingerprint: bool = True


Credentials = LongTermCredentials | AccessTokenCredentials


@dataclass(frozen=True, slots=True)
class Challenge:
    """What a 401 or 438 tells the client (RFC 8489 §9.2.5, RFC 7635 §6.1).

    `features` are the nonce cookie's bits, None without a cookie (an RFC 5389 server).
    """

    code: int
    realm: str
    nonce: str
    features: SecurityFeature | None = None
    offered: PasswordAlgorithms | None = None
    third_party_server: str | None = None
    attributes: tuple[Attribute, ...] = ()


def parse_challenge(code: int, response: Message) -> Challenge | None:
    """The challenge in an error response, or None without REALM or NONCE (no way to sign)."""
    realm, nonce = response.get(Realm), response.get(Nonce)
    if realm is None or nonce is None:
        return None
    third_party = response.get(ThirdPartyAuthorization)
    return Challenge(
        code,
        realm.value,
        nonce.value,
        parse_nonce_cookie(nonce.value),
        response.get(PasswordAlgorithms),
        None if third_party is None else third_party.value,
        response.attributes,
    )


@dataclass(frozen=True, slots=True)
class RequestSigning:
    """How requests are authenticated under one challenge: the credential attributes
    they carry and the key and attribute that sign them.

    `extra` follows the identity, REALM and NONCE: PASSWORD-ALGORITHMS and
    PASSWORD-ALGORITHM (§9.2.4), ACCESS-TOKEN (RFC 7635). `sha256` selects
    MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
    """

    identity: Username | UserHash
    realm: str
    nonce: str
    key: bytes
    extra: tuple[Attribute, ...] = ()
    sha256: bool = False
    fingerprint: bool = True

    def attributes(self) -> tuple[Attribute, ...]:
        return (self.identity, Realm(self.realm), Nonce(self.nonce), *self.extra)

    def attach(self, message: Message) -> Message:
        """`message` with the credential attributes appended (not yet signed)."""
        return message.with_attributes(*self.attributes())

    def encode(self, message: Message) -> bytes:
        """Encode a message that already carries the credentials, computing its integrity."""
        return encode_signed(
            message, self.key, sha1=not self.sha256, sha256=self.sha256,
            fingerprint=self.fingerprint,
        )  # fmt: skip

    def sign(self, message: Message) -> bytes:
        return self.encode(self.attach(message))


@functools.lru_cache(maxsize=64)
def _long_term_key(
    username: str, realm: str, password: str, algorithm: PasswordAlgorithmId
) -> bytes:
    # OpaqueString preparation is slow (per-character Unicode checks); a load generator
    # signs thousands of requests under the same realm.
    return long_term_key(username, realm, password, algorithm)


def signing_for(credentials: Credentials, challenge: Challenge) -> RequestSigning:
    """Answer `challenge` as RFC 8489 §9.2.4-9.2.5 (or RFC 7635 §6.2) asks.

    Raises `TurnClientError` when it cannot be answered: no common password algorithm,
    the bid-down check of §9.2.5, or a REALM that is not an OpaqueString.
    """
    if isinstance(credentials, AccessTokenCredentials):
        token = UnknownAttribute(AttributeType.ACCESS_TOKEN, credentials.token)
        return RequestSigning(
            Username(credentials.kid), challenge.realm, challenge.nonce, credentials.mac_key,
            (token,), credentials.integrity_sha256, credentials.fingerprint,
        )  # fmt: skip
    algorithm, extra = _negotiate(credentials, challenge)
    features = challenge.features or SecurityFeature.NONE
    try:
        key = _long_term_key(credentials.username, challenge.realm, credentials.password, algorithm)
        identity: Username | UserHash = Username(credentials.username)
        if credentials.use_userhash and SecurityFeature.USERNAME_ANONYMITY in features:
            identity = UserHash(userhash(credentials.username, challenge.realm))
    except ValueError as exc:  # OpaqueString refused the realm (or the username)
        raise TurnClientError(f"cannot derive a key: {exc}") from exc
    sha256 = credentials.integrity_sha256
    if sha256 is None:
        sha256 = algorithm == SHA256
    return RequestSigning(
        identity, challenge.realm, challenge.nonce, key, extra, sha256, credentials.fingerprint
    )


def _negotiate(
    credentials: LongTermCredentials, challenge: Challenge
) -> tuple[PasswordAlgorithmId, tuple[Attribute, ...]]:
    """The password algorithm, and the attributes that declare it (§9.2.4)."""
    features = challenge.features
    if not credentials.password_algorithms or features is None:
        return MD5, ()  # RFC 5389 client, or RFC 5389 server: MD5, nothing declared
    if SecurityFeature.PASSWORD_ALGORITHMS not in features:
        return MD5, ()
    offered = challenge.offered
    if offered is None:
        # §9.2.5: the cookie says the server sent PASSWORD-ALGORITHMS and it is gone:
        # somebody removed it on the way (a bid-down attack). Do not retry.
        raise TurnClientError("nonce cookie announces PASSWORD-ALGORITHMS, none received")
    for algorithm in credentials.password_algorithms:
        if (algorithm, b"") in offered.algorithms:
            # §9.2.4: echo the list unchanged, and name the choice.
            return algorithm, (offered, PasswordAlgorithm(algorithm))
    raise TurnClientError(f"no common password algorithm in {offered.algorithms}")
