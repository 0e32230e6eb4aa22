"""The server side of the long-term credential mechanism (RFC 8489 §9.2.4, RFC 7635 §5).

Owns the decision for one request: which key it was signed with, or which error to
answer. The order of checks follows §9.2.4:

1. no MESSAGE-INTEGRITY (or -SHA256): 401 with REALM and NONCE, unsigned;
2. integrity present but USERNAME (or USERHASH), REALM or NONCE missing: 400, unsigned;
3. NONCE not one of ours for this client, or expired: 438 with REALM and NONCE;
4. the nonce cookie has "Password algorithms": PASSWORD-ALGORITHM and
   PASSWORD-ALGORITHMS both absent means MD5; otherwise both must be present,
   PASSWORD-ALGORITHMS must equal the list we sent and PASSWORD-ALGORITHM must be one
   of its entries, else 400 (the bid-down check);
5. USERNAME (or USERHASH) unknown, ACCESS-TOKEN not valid (RFC 7635), or the MAC
   matches no candidate key: 401 with REALM and NONCE;
6. Allocate or Refresh from a revoked identity: 401 "Credentials revoked" with REALM
   and NONCE, signed (the request did authenticate); an Allocate matching only a
   retired credential (a user a reload removed or re-keyed,
   `trelay.turn.credential_sources.RetiredUsers`): 401 as for unknown credentials;
   a credential that expires (a TURN REST username, an RFC 7635 token) further than
   `max_credential_lifetime` from now: 401 "Credential lifetime too long", signed (a
   username expiring at 4294967295, or "9"x400 read as infinity, is not a credential
   anyone minted on purpose, and it would outlive every secret rotation); a credential
   past its expiry: 401 "Credentials expired", signed, for every method alike with
   `strict_expiry` (the default), for Allocate only without it;
7. otherwise the request is authenticated; every response to it is signed with its key,
   with MESSAGE-INTEGRITY-SHA256 if the request used it (§9.2.4; `Sha256Key`).

RFC 8489 security features (§9.2, on by default): 401 and 438 carry a nonce that starts
with the nonce cookie (bits "Password algorithms" and "Username anonymity"; the cookie
is HMAC-covered, `trelay.turn.nonces`) and PASSWORD-ALGORITHMS (SHA-256, MD5). Clients that
know none of it (aioice, Chrome, coturn's tools) echo the nonce, ignore the
comprehension-optional attribute and keep using MD5 keys and USERNAME: step 4 lets them
through. USERHASH is honoured only under a nonce that advertised "Username anonymity",
and finds static users only (`trelay.turn.credential_sources`).

Third-party authorization (RFC 7635, optional): 401 challenges also carry
THIRD-PARTY-AUTHORIZATION; a request with ACCESS-TOKEN is checked against the key table
(USERNAME = kid) and its token's mac_key is the only candidate key.

design §5: 401 and 438 always carry REALM and NONCE (Chrome ignores a 438 without
REALM). An accepted credential with an expiry says how long it has left
(`Authenticated.capped`): the allocation it makes or refreshes lives no longer
(issue 15: a credential expiring in 5 s got a 3600 s allocation).

Every `Rejected` says which check failed (`AuthFailure`), so that counters never read
the reason text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from trelay.stun.attributes import (
    Attribute,
    Lifetime,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    Realm,
    ThirdPartyAuthorization,
    UserHash,
    Username,
)
from trelay.stun.auth_attributes import AccessToken, PasswordAlgorithm, PasswordAlgorithms
from trelay.stun.codes import ErrorCode, Method, PasswordAlgorithmId
from trelay.stun.integrity import verify_integrity
from trelay.stun.message import Message
from trelay.stun.nonce_cookie import SecurityFeature
from trelay.turn.addressing import Address
from trelay.turn.credential_sources import Credential, CredentialSources, Sha256Key
from trelay.turn.identity_enum import IdentityEnum
from trelay.turn.nonces import NonceStamper
from trelay.turn.third_party import ThirdPartyAuthorizer

# What 401/438 offer, in preference order (RFC 8489 §14.12); compared as sent (§9.2.4).
OFFERED_ALGORITHMS = PasswordAlgorithms(
    ((PasswordAlgorithmId.SHA256, b""), (PasswordAlgorithmId.MD5, b""))
)
SECURITY_FEATURES = SecurityFeature.PASSWORD_ALGORITHMS | SecurityFeature.USERNAME_ANONYMITY
_REVOCABLE = frozenset((Method.ALLOCATE, Method.REFRESH))
# A day, and an hour for the clocks of the machines that mint credentials; the token
# API mints for at most a day (`trelay.credentials.token_api`).
DEFAULT_MAX_CREDENTIAL_LIFETIME = 90000.0

# (identity, unix_now) -> True if the identity may not allocate or refresh now.
RevocationCheck = Callable[[str, float], bool]


@dataclass(frozen=True, slots=True)
class Authenticated:
    username: str
    credential: Credential
    # Seconds until the credential expires, where its expiry binds this request.
    seconds_left: float | None = None

    def capped(self, lifetime: int) -> int:
        """`lifetime` (seconds), no longer than the credential has left (at least 1);
        0 (a Refresh that deletes) stays 0."""
        if self.seconds_left is None or lifetime == 0:
            return lifetime
        return max(1, min(lifetime, int(self.seconds_left)))


class AuthFailure(IdentityEnum):
    """Why a request failed the long-term credential checks (RFC 8489 §9.2.4)."""

    MISSING = "missing"  # no MESSAGE-INTEGRITY: the usual first 401 challenge (step 1)
    BAD_REQUEST = "bad_request"  # integrity without USERNAME, REALM or NONCE (400, steps 2, 4)
    STALE_NONCE = "stale_nonce"  # 438 (step 3)
    WRONG_CREDENTIALS = "wrong_credentials"  # unknown user, wrong key or realm (401, step 5)
    EXPIRED = "expired"  # a credential past its expiry (step 6)
    REVOKED = "revoked"  # a credential the source withdrew (step 6)
    TOO_LONG = "lifetime_too_long"  # expires beyond max_credential_lifetime (step 6)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Answer `code`; `challenge` says to include REALM and a fresh NONCE.

    `failure` is the check that failed, for counters. `key`, when set, signs the answer:
    the request authenticated but is refused.
    """

    failure: AuthFailure
    code: ErrorCode
    reason: str
    challenge: bool
    key: bytes | None = None

    @property
    def anonymous(self) -> bool:
        """A request without any integrity attribute: the one kind that is rate-limited."""
        return self.failure is AuthFailure.MISSING


class LongTermAuthenticator:
    """RFC 8489 §9.2 long-term credentials (and RFC 7635 tokens) for a TURN server.

    Everything it consults is given at construction and read-only afterwards; what a
    runtime may change later goes through named methods: the revocation check
    (`use_revocation_check`) and the credential sources (`use_credentials`, a reload).
    """

    __slots__ = (
        "_credentials", "_features", "_is_revoked", "_max_lifetime", "_nonces", "_realm",
        "_realm_attribute", "_third_party",
    )  # fmt: skip

    def __init__(
        self,
        realm: str,
        credentials: CredentialSources,
        nonces: NonceStamper,
        *,
        security_features: bool = True,
        third_party: ThirdPartyAuthorizer | None = None,
        is_revoked: RevocationCheck | None = None,
        max_credential_lifetime: float = DEFAULT_MAX_CREDENTIAL_LIFETIME,
    ) -> None:
        if not max_credential_lifetime > 0:
            raise ValueError("max_credential_lifetime must be positive")
        self._max_lifetime = max_credential_lifetime
        self._realm = realm
        self._realm_attribute = Realm(realm)  # in every 401 and 438: built once
        self._credentials = credentials
        self._nonces = nonces
        self._features = SECURITY_FEATURES if security_features else SecurityFeature.NONE
        self._third_party = third_party
        self._is_revoked = is_revoked

    @property
    def realm(self) -> str:
        return self._realm

    @property
    def credentials(self) -> CredentialSources:
        return self._credentials

    @property
    def nonces(self) -> NonceStamper:
        return self._nonces

    @property
    def features(self) -> SecurityFeature:
        return self._features

    @property
    def third_party(self) -> ThirdPartyAuthorizer | None:
        return self._third_party

    @property
    def max_credential_lifetime(self) -> float:
        return self._max_lifetime

    @property
    def is_revoked(self) -> RevocationCheck | None:
        return self._is_revoked

    def use_revocation_check(self, check: RevocationCheck | None) -> None:
        """Ask `check` from now on whether an identity is revoked (None: nobody is).

        For a check that exists only after construction (a revocations source loaded
        or replaced later); requests already answered are not revisited.
        """
        self._is_revoked = check

    def challenge(self, client: Address, unix_now: float) -> tuple[Attribute, ...]:
        """REALM, NONCE and what the server offers: the attributes of a 401 or 438."""
        features, third_party = self._features, self._third_party
        nonce = Nonce(self._nonces.mint(client, unix_now, features))
        attributes: tuple[Attribute, ...] = (self._realm_attribute, nonce)
        if SecurityFeature.PASSWORD_ALGORITHMS in features:
            attributes += (OFFERED_ALGORITHMS,)
        if third_party is not None:
            attributes += (ThirdPartyAuthorization(third_party.authorization_server),)
        return attributes

    def check(
        self,
        request: Message,
        raw: bytes,
        client: Address,
        unix_now: float,
        *,
        strict_expiry: bool = True,
    ) -> Authenticated | Rejected:
        """Step by step as the module docstring says. `strict_expiry`: an expired
        credential is refused for every method (else for Allocate only)."""
        if request.get(MessageIntegrity) is None and request.get(MessageIntegritySha256) is None:
            return _CHALLENGE
        username = request.get(Username)
        hashed = request.get(UserHash)
        realm = request.get(Realm)
        nonce = request.get(Nonce)
        if realm is None or nonce is None or (username is None and hashed is None):
            return _bad_request("USERNAME, REALM and NONCE required")
        features = self._nonces.features(nonce.value, client, unix_now)
        if features is None:
            return _STALE
        if username is None and SecurityFeature.USERNAME_ANONYMITY not in features:
            # USERHASH only where our nonce offered it (§9.2.4, §14.4).
            return _bad_request("USERNAME, REALM and NONCE required")
        algorithm = _password_algorithm(request, features)
        if algorithm is None:
            return _bad_request("PASSWORD-ALGORITHMS mismatch")
        name = username.value if username is not None else self._unhash(hashed)
        # Every candidate is checked (not first-match) so timing does not tell which
        # secret or whether the user exists beyond what the candidate count reveals.
        matched: Credential | None = None
        for credential in self._candidates(request, name, algorithm, unix_now):
            if verify_integrity(raw, credential.key) and matched is None:
                matched = credential
        if name is None or matched is None or realm.value != self._realm:
            return Rejected(
                AuthFailure.WRONG_CREDENTIALS, ErrorCode.UNAUTHORIZED, "Wrong credentials", True
            )
        if matched.retired and request.method == Method.ALLOCATE:
            # Removed (or re-keyed) by a reload: its allocations live on, no new one.
            return Rejected(
                AuthFailure.WRONG_CREDENTIALS, ErrorCode.UNAUTHORIZED, "Wrong credentials", True
            )
        if request.get(MessageIntegritySha256) is not None:
            # §9.2.4: answer with the integrity algorithm the request used.
            matched = dataclasses.replace(matched, key=Sha256Key(matched.key))
        if self._revoked(request, name, matched, unix_now):
            return Rejected(
                AuthFailure.REVOKED, ErrorCode.UNAUTHORIZED, "Credentials revoked", True,
                key=matched.key,
            )  # fmt: skip
        return self._within_lifetime(request, name, matched, unix_now, strict_expiry)

    def _within_lifetime(
        self, request: Message, name: str, credential: Credential, unix_now: float, strict: bool
    ) -> Authenticated | Rejected:
        expires_at = credential.expires_at
        if expires_at is None:
            return Authenticated(name, credential)
        if not expires_at <= unix_now + self._max_lifetime:  # NaN and infinity too
            return Rejected(
                AuthFailure.TOO_LONG, ErrorCode.UNAUTHORIZED, "Credential lifetime too long",
                True, key=credential.key,
            )  # fmt: skip
        if not strict and request.method != Method.ALLOCATE:
            return Authenticated(name, credential)  # lenient: only Allocate minds expiry
        if expires_at <= unix_now:
            return Rejected(
                AuthFailure.EXPIRED, ErrorCode.UNAUTHORIZED, "Credentials expired", True,
                key=credential.key,
            )  # fmt: skip
        return Authenticated(name, credential, expires_at - unix_now)

    def _unhash(self, hashed: UserHash | None) -> str | None:
        return None if hashed is None else self.credentials.username_for_hash(hashed.value)

    def _candidates(
        self, request: Message, name: str | None, algorithm: PasswordAlgorithmId, unix_now: float
    ) -> tuple[Credential, ...]:
        if name is None:
            return ()
        token = request.get(AccessToken)
        third_party = self._third_party
        if token is not None and third_party is not None:
            # RFC 7635 §5: USERNAME is the kid; the token's mac_key is the HMAC key.
            granted = third_party.open(token, name, unix_now)
            return () if granted is None else (granted,)
        return self._credentials.candidates(name, algorithm)

    def _revoked(
        self, request: Message, name: str, credential: Credential, unix_now: float
    ) -> bool:
        is_revoked = self._is_revoked
        if is_revoked is None or request.method not in _REVOCABLE:
            return False
        lifetime = request.get(Lifetime)
        if request.method == Method.REFRESH and lifetime is not None and lifetime.value == 0:
            return False  # a deletion frees the relay: let a revoked identity end its allocation
        identities = {credential.identity}
        if request.get(AccessToken) is not None:
            identities.add(name)  # the kid: revoking it refuses every token under that key
        return any(is_revoked(identity, unix_now) for identity in identities)

    def use_credentials(self, credentials: CredentialSources) -> None:
        """Look usernames up in `credentials` from now on (a reload changed the users).

        Requests already answered are not revisited; nonces stay valid (their key is not
        part of the credentials). To keep the allocations of users removed or re-keyed,
        build `credentials` with `CredentialSources.with_static_users` (as
        `TurnServer.use_users` does).
        """
        self._credentials = credentials


# The two answers every client meets (each Allocate starts with the 401), built once.
_CHALLENGE = Rejected(AuthFailure.MISSING, ErrorCode.UNAUTHORIZED, "Unauthorized", True)
_STALE = Rejected(AuthFailure.STALE_NONCE, ErrorCode.STALE_NONCE, "Stale Nonce", True)


def _bad_request(reason: str) -> Rejected:
    return Rejected(AuthFailure.BAD_REQUEST, ErrorCode.BAD_REQUEST, reason, False)


def _password_algorithm(request: Message, features: SecurityFeature) -> PasswordAlgorithmId | None:
    """RFC 8489 §9.2.4: the algorithm of the key, or None for 400 (a bid-down attempt)."""
    # `in`, not `&`: a Flag's `&` builds a member through the Enum machinery (1 µs).
    if SecurityFeature.PASSWORD_ALGORITHMS not in features:
        return PasswordAlgorithmId.MD5  # a nonce without the feature: RFC 5389 keys
    chosen = request.get(PasswordAlgorithm)
    offered = request.get(PasswordAlgorithms)
    if chosen is None and offered is None:
        return PasswordAlgorithmId.MD5
    if chosen is None or offered != OFFERED_ALGORITHMS:
        return None
    if (chosen.algorithm, chosen.parameters) not in OFFERED_ALGORITHMS.algorithms:
        return None
    return PasswordAlgorithmId(chosen.algorithm)
