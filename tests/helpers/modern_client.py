"""Clients for the pure core that speak what legacy clients do not: RFC 8489 SHA-256
keys, USERHASH, MESSAGE-INTEGRITY-SHA256 and PASSWORD-ALGORITHMS (`Rfc8489Client`), and
RFC 7635 ACCESS-TOKEN (`TokenClient`). Both extend `tests.helpers.turn_harness.Client`."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.helpers.turn_harness import REALM, Client
from trelay.stun.attributes import (
    Attribute,
    Nonce,
    RequestedTransport,
    UnknownAttribute,
    UserHash,
    Username,
)
from trelay.stun.attributes import Realm as RealmAttribute
from trelay.stun.auth_attributes import PasswordAlgorithm, PasswordAlgorithms
from trelay.stun.codes import AttributeType, MessageClass, Method, PasswordAlgorithmId
from trelay.stun.credentials import long_term_key, userhash
from trelay.stun.integrity import encode_signed, integrity_algorithms
from trelay.stun.message import Message, encode_message


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

    def identification(self) -> tuple[Attribute, ...]:
        if self.use_userhash:
            return (UserHash(userhash(self.username, self.realm)),)
        return (Username(self.username),)

    def request(self, method: Method, *attributes: Attribute, sign: bool = True) -> Message:
        extra: tuple[Attribute, ...] = ()
        if sign:
            assert self.nonce is not None
            extra = (*self.identification(), RealmAttribute(self.realm), Nonce(self.nonce))
            if self.send_algorithms:
                chosen = self.chosen or PasswordAlgorithm(self.algorithm)
                extra += tuple(a for a in (self.offered, chosen) if a is not None)
        return Message(method, MessageClass.REQUEST, self.rng.randbytes(12), (*attributes, *extra))

    def encode(self, message: Message) -> bytes:
        return encode_signed(
            message, self.key, sha1=not self.mi_sha256, sha256=self.mi_sha256,
            fingerprint=self.fingerprint,
        )  # fmt: skip

    def send(self, message: Message, sign: bool = True) -> Message | None:
        data = self.encode(message) if sign else encode_message(message)
        return self.response(self.send_raw(data), message)

    def authenticate(self) -> None:
        """Learn the nonce and the offered algorithms from the 401 challenge."""
        probe = self.request(Method.ALLOCATE, RequestedTransport(17), sign=False)
        reply = self.send(probe, False)
        assert reply is not None
        nonce = reply.get(Nonce)
        assert nonce is not None
        self.nonce = nonce.value
        if self.offered is None:
            self.offered = reply.get(PasswordAlgorithms)
        self.challenge_attributes = reply.attributes

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

    def request(self, method: Method, *attributes: Attribute, sign: bool = True) -> Message:
        message = super().request(method, *attributes, sign=sign)
        if not sign:
            return message
        # Raw bytes, not `AccessToken`: tests send tokens that do not even decode.
        token = UnknownAttribute(AttributeType.ACCESS_TOKEN, self.token)
        return Message(
            message.method, message.message_class, message.transaction_id,
            (*message.attributes, token),
        )  # fmt: skip
