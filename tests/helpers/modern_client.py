"""Clients for the pure core that speak what legacy clients do not: RFC 8489 SHA-256
keys, USERHASH, MESSAGE-INTEGRITY-SHA256 and PASSWORD-ALGORITHMS (`Rfc8489Client`), and
RFC 7635 ACCESS-TOKEN (`TokenClient`). Both extend `tests.helpers.turn_harness.Client`.

The credential attributes and the signing come from the client core's lower layer
(`trelay.turn.client_auth.RequestSigning`, `parse_challenge`), built from explicit knobs
instead of `signing_for`'s policy, so a test can send what a correct client never would:
a key of the other algorithm, an altered PASSWORD-ALGORITHMS, USERHASH the server never
offered, a token that does not decode."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.helpers.turn_harness import REALM, Client
from trelay.stun.attributes import Attribute, RequestedTransport, UnknownAttribute, UserHash
from trelay.stun.attributes import Username as UsernameAttribute
from trelay.stun.auth_attributes import PasswordAlgorithm, PasswordAlgorithms
from trelay.stun.codes import AttributeType, MessageClass, Method, PasswordAlgorithmId
from trelay.stun.credentials import long_term_key, userhash
from trelay.stun.integrity import integrity_algorithms
from trelay.stun.message import Message, encode_message
from trelay.turn.client_auth import RequestSigning, parse_challenge


@dataclass
class Rfc8489Client(Client):
    """Signs with `algorithm`'s key; USERHASH or USERNAME; MI-SHA256 or MI."""

    algorithm: PasswordAlgorithmId = PasswordAlgorithmId.SHA256
    realm: str = REALM
    use_userhash: bool = True
    mi_sha256: bool = True
    fingerprint: bool = True
    # What goes into PASSWORD-ALGORITHM(S); by default what the server offered.
    send_algorithms: bool = True
    offered: PasswordAlgorithms | None = None
    chosen: PasswordAlgorithm | None = None
    # A key other than the one `algorithm` derives (to sign with the wrong one).
    key_override: bytes | None = None
    challenge_attributes: tuple[Attribute, ...] = field(default_factory=tuple)

    @property
    def key(self) -> bytes:
        if self.key_override is not None:
            return self.key_override
        return long_term_key(self.username, self.realm, self.password, self.algorithm)

    def identification(self) -> UsernameAttribute | UserHash:
        if self.use_userhash:
            return UserHash(userhash(self.username, self.realm))
        return UsernameAttribute(self.username)

    def extra(self) -> tuple[Attribute, ...]:
        """What follows USERNAME/USERHASH, REALM and NONCE (§9.2.4)."""
        if not self.send_algorithms:
            return ()
        chosen = self.chosen or PasswordAlgorithm(self.algorithm)
        return tuple(a for a in (self.offered, chosen) if a is not None)

    def signing(self) -> RequestSigning:
        assert self.nonce is not None
        return RequestSigning(
            self.identification(), self.realm, self.nonce, self.key, self.extra(),
            sha256=self.mi_sha256, fingerprint=self.fingerprint,
        )  # fmt: skip

    def request(self, method: Method, *attributes: Attribute, sign: bool = True) -> Message:
        message = Message(method, MessageClass.REQUEST, self.rng.randbytes(12), attributes)
        return self.signing().attach(message) if sign else message

    def encode(self, message: Message) -> bytes:
        return self.signing().encode(message)

    def send(self, message: Message, sign: bool = True) -> Message | None:
        data = self.encode(message) if sign else encode_message(message)
        return self.response(self.send_raw(data), message)

    def authenticate(self) -> None:
        """Learn the nonce and the offered algorithms from the 401 challenge."""
        probe = self.request(Method.ALLOCATE, RequestedTransport(17), sign=False)
        reply = self.send(probe, False)
        assert reply is not None
        challenge = parse_challenge(401, reply)
        assert challenge is not None, "401 without REALM and NONCE"
        self.nonce = challenge.nonce
        if self.offered is None:
            self.offered = challenge.offered
        self.challenge_attributes = challenge.attributes

    def signed_with_sha256(self) -> bool:
        """The last response carries MESSAGE-INTEGRITY-SHA256 and no MESSAGE-INTEGRITY."""
        assert self.last_raw is not None
        found = integrity_algorithms(self.last_raw)
        return found.sha256 and not found.sha1


@dataclass
class TokenClient(Rfc8489Client):
    """RFC 7635: USERNAME = kid, ACCESS-TOKEN, integrity keyed by the token's mac_key."""

    token: bytes = b""
    mac_key: bytes = b""
    use_userhash: bool = False
    mi_sha256: bool = False
    send_algorithms: bool = False

    @property
    def key(self) -> bytes:
        return self.mac_key

    def extra(self) -> tuple[Attribute, ...]:
        # Raw bytes, not `AccessToken`: tests send tokens that do not even decode (the
        # same attribute `AccessTokenCredentials` sends).
        token = UnknownAttribute(AttributeType.ACCESS_TOKEN, self.token)
        return (*super().extra(), token)
