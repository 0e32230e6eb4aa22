"""The server side of the long-term credential mechanism (RFC 8489 §9.2.4).

Owns the decision for one request: which key it was signed with, or which error to
answer. The order of checks follows §9.2.4:

1. no MESSAGE-INTEGRITY (or -SHA256): 401 with REALM and NONCE, unsigned;
2. integrity present but USERNAME, REALM or NONCE missing: 400, unsigned;
3. NONCE not one of ours for this client, or expired: 438 with REALM and NONCE;
4. USERNAME unknown, or the MAC matches no candidate key: 401 with REALM and NONCE;
5. otherwise the request is authenticated; every response to it is signed with its key.

DESIGN §5: 401 and 438 always carry REALM and NONCE (Chrome ignores a 438 without
REALM). Credential expiry (TURN REST usernames) is the caller's decision, since it
applies to Allocate and Refresh only.
"""

from __future__ import annotations

from dataclasses import dataclass

from stun.attributes import MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Username
from stun.codes import ErrorCode
from stun.integrity import verify_integrity
from stun.message import Message
from turn.addressing import Address
from turn.credential_sources import Credential, CredentialSources
from turn.nonces import NonceStamper


@dataclass(frozen=True, slots=True)
class Authenticated:
    username: str
    credential: Credential


@dataclass(frozen=True, slots=True)
class Rejected:
    """Answer `code`; `challenge` says to include REALM and a fresh NONCE.

    `anonymous` marks a request without any integrity attribute (rate-limited).
    """

    code: ErrorCode
    reason: str
    challenge: bool
    anonymous: bool = False


class LongTermAuthenticator:
    __slots__ = ("credentials", "nonces", "realm")

    def __init__(self, realm: str, credentials: CredentialSources, nonces: NonceStamper) -> None:
        self.realm = realm
        self.credentials = credentials
        self.nonces = nonces

    def challenge(self, client: Address, unix_now: float) -> tuple[Realm, Nonce]:
        return Realm(self.realm), Nonce(self.nonces.mint(client, unix_now))

    def check(
        self, request: Message, raw: bytes, client: Address, unix_now: float
    ) -> Authenticated | Rejected:
        if request.get(MessageIntegrity) is None and request.get(MessageIntegritySha256) is None:
            return Rejected(ErrorCode.UNAUTHORIZED, "Authentication required", True, True)
        username = request.get(Username)
        realm = request.get(Realm)
        nonce = request.get(Nonce)
        if username is None or realm is None or nonce is None:
            return Rejected(ErrorCode.BAD_REQUEST, "USERNAME, REALM and NONCE required", False)
        if not self.nonces.is_valid(nonce.value, client, unix_now):
            return Rejected(ErrorCode.STALE_NONCE, "Stale Nonce", True)
        # Every candidate is checked (not first-match) so timing does not tell which
        # secret or whether the user exists beyond what the candidate count reveals.
        matched: Credential | None = None
        for credential in self.credentials.candidates(username.value):
            if verify_integrity(raw, credential.key) and matched is None:
                matched = credential
        if matched is None or realm.value != self.realm:
            return Rejected(ErrorCode.UNAUTHORIZED, "Wrong credentials", True)
        return Authenticated(username.value, matched)
