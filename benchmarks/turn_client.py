"""A minimal synchronous TURN client over UDP, for the load generator (RFC 8656).

Owns the client side of the control messages the benchmarks need: Allocate with the
long-term credential mechanism (RFC 8489 §9.2: a first request without credentials, the
401 carries REALM and NONCE, the retry is signed with MESSAGE-INTEGRITY), Refresh,
CreatePermission and ChannelBind, plus ChannelData framing for the data path. Built on
our own codec (`trelay.stun.message`, `trelay.stun.integrity`, `trelay.stun.credentials`,
`trelay.stun.channel_data`).

Invariants:
- Blocking socket, connected to the server, with a timeout: every receive is bounded, and
  every transaction is retransmitted at most `retries` times (RFC 8489 §6.2.1 in a
  simplified, fixed-interval form), then raises `TurnClientError`.
- A 438 (Stale Nonce) is answered once with the new NONCE (RFC 8489 §9.2.5); a 401 on the
  first, unsigned, request is the normal challenge; any other error raises.
- Datagrams that are not the response being waited for (ChannelData, other
  transactions' late answers) are skipped, never mistaken for the response.
- Responses are not checked for MESSAGE-INTEGRITY: this is a load generator on loopback,
  and every CPU cycle it spends is a cycle the server under test does not get.

Not a general-purpose client: IPv4 UDP only, no DNS, no ALTERNATE-SERVER.
"""

from __future__ import annotations

import socket
import time
from typing import Self

from trelay.stun.address_attributes import XorPeerAddress, XorRelayedAddress
from trelay.stun.attributes import (
    Attribute,
    ChannelNumber,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
)
from trelay.stun.channel_data import encode_channel_data
from trelay.stun.codes import MessageClass, Method, TransportProtocol
from trelay.stun.credentials import long_term_key
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.errors import StunDecodeError
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message, is_stun_header, new_transaction_id

Address = tuple[str, int]
_UNAUTHORIZED = 401
_STALE_NONCE = 438


class TurnClientError(Exception):
    """A transaction failed: an error response (with its code) or no answer at all."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TurnClient:
    """One client 5-tuple: a UDP socket connected to `server`, at most one allocation."""

    def __init__(
        self,
        server: Address,
        username: str,
        password: str,
        *,
        bind: Address = ("127.0.0.1", 0),
        timeout: float = 0.5,
        retries: int = 4,
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.timeout = timeout
        self.retries = retries
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None
        self.relayed: Address | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(bind)
            self.sock.connect(server)
            self.sock.settimeout(timeout)
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    @property
    def local_address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return (host, port)

    # --- requests ---------------------------------------------------------------------

    def allocate(self, lifetime: int | None = None) -> Address:
        """RFC 8656 §7.1: a UDP relayed address; returns XOR-RELAYED-ADDRESS."""
        attributes: list[Attribute] = [RequestedTransport(TransportProtocol.UDP)]
        if lifetime is not None:
            attributes.append(Lifetime(lifetime))
        response = self.request(Method.ALLOCATE, tuple(attributes))
        relayed = response.get(XorRelayedAddress)
        if relayed is None:
            raise TurnClientError("Allocate success without XOR-RELAYED-ADDRESS")
        self.relayed = relayed.address
        return self.relayed

    def refresh(self, lifetime: int) -> int:
        """RFC 8656 §7.3: 0 deletes the allocation; returns the granted lifetime."""
        response = self.request(Method.REFRESH, (Lifetime(lifetime),))
        granted = response.get(Lifetime)
        if lifetime == 0:
            self.relayed = None
        return 0 if granted is None else granted.value

    def create_permission(self, peer: Address) -> None:
        """RFC 8656 §9.1: let datagrams from `peer`'s IP in."""
        self.request(Method.CREATE_PERMISSION, (XorPeerAddress(*peer),))

    def channel_bind(self, channel: int, peer: Address) -> None:
        """RFC 8656 §11.1: bind `channel` (0x4000-0x4FFF) to `peer`."""
        self.request(Method.CHANNEL_BIND, (ChannelNumber(channel), XorPeerAddress(*peer)))

    def request(self, method: Method, attributes: tuple[Attribute, ...]) -> Message:
        """Run one transaction, authenticating when challenged; the success response.

        RFC 8489 §9.2.3: without a nonce the request goes unsigned and the server answers
        401 with REALM and NONCE; it is then resent with USERNAME, REALM, NONCE and
        MESSAGE-INTEGRITY. A 438 supplies a new nonce, and the request is resent once.
        """
        challenged = self.key is not None
        for _ in range(3):  # unsigned -> 401 -> signed -> 438 -> signed again, at most
            response = self._transaction(method, attributes)
            if response.message_class == MessageClass.SUCCESS:
                return response
            error = response.get(ErrorCodeAttribute)
            code = None if error is None else error.code
            realm, nonce = response.get(Realm), response.get(Nonce)
            retry_401 = code == _UNAUTHORIZED and not challenged
            if (retry_401 or code == _STALE_NONCE) and realm is not None and nonce is not None:
                challenged = True
                self._learn(realm.value, nonce.value)
                continue
            reason = "" if error is None else error.reason
            raise TurnClientError(f"{method.name} failed: {code} {reason}", code)
        raise TurnClientError(f"{method.name}: still challenged after retrying")

    def _learn(self, realm: str, nonce: str) -> None:
        if realm != self.realm:
            self.realm = realm
            self.key = long_term_key(self.username, realm, self.password)
        self.nonce = nonce

    def _encode(self, method: Method, attributes: tuple[Attribute, ...], tid: bytes) -> bytes:
        if self.key is None or self.realm is None or self.nonce is None:
            message = Message(method, MessageClass.REQUEST, tid, attributes)
            return encode_signed(message)
        credentials = (Username(self.username), Realm(self.realm), Nonce(self.nonce))
        message = Message(method, MessageClass.REQUEST, tid, attributes + credentials)
        return encode_signed(message, self.key)

    def _transaction(self, method: Method, attributes: tuple[Attribute, ...]) -> Message:
        tid = new_transaction_id()
        data = self._encode(method, attributes, tid)
        for _ in range(self.retries + 1):
            self.sock.send(data)
            response = self._await_response(tid, time.monotonic() + self.timeout)
            if response is not None:
                return response
        raise TurnClientError(f"{method.name}: no response after {self.retries + 1} sends")

    def _await_response(self, tid: bytes, deadline: float) -> Message | None:
        """The response to `tid` arriving before `deadline`, or None."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            except ConnectionRefusedError:
                continue  # an ICMP port unreachable from an earlier send: ask again
            finally:
                self.sock.settimeout(self.timeout)
            if not is_stun_header(data) or data[8:20] != tid:
                continue
            try:
                message = decode_message(data)
            except StunDecodeError:
                continue
            if message.message_class in (MessageClass.SUCCESS, MessageClass.ERROR):
                return message

    # --- data path --------------------------------------------------------------------

    @staticmethod
    def channel_data(channel: int, payload: bytes) -> bytes:
        """A ChannelData datagram (RFC 8656 §12.4; unpadded, as UDP allows)."""
        return encode_channel_data(channel, payload)
