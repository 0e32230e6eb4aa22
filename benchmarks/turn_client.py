"""A minimal synchronous TURN client over UDP, for the load generator (RFC 8656).

The blocking-socket I/O around the pure client core `trelay.turn.client`, which owns
the protocol: Allocate with the long-term credential mechanism (RFC 8489 §9.2: a first
request without credentials, the 401 carries REALM and NONCE, the retry is signed with
MESSAGE-INTEGRITY; a 438 answered once with the new NONCE), Refresh, CreatePermission
and ChannelBind, matching responses to requests, and ChannelData framing.

Invariants:
- Blocking socket, connected to the server, with a timeout: every receive is bounded, and
  every transaction is retransmitted at most `retries` times (RFC 8489 §6.2.1 in a
  simplified, fixed-interval form), then raises `TurnClientError`.
- Datagrams that are not the response being waited for (ChannelData, other
  transactions' late answers, bytes that are not STUN) are skipped, never mistaken for
  the response.
- Responses are not checked for MESSAGE-INTEGRITY (`verify_responses=False`): this is
  a load generator on loopback, and every CPU cycle it spends is a cycle the server
  under test does not get. For the same reason it signs as an RFC 5389 client (MD5 key,
  MESSAGE-INTEGRITY), as most clients in the field still do.

Not a general-purpose client: IPv4 UDP only, no DNS, no ALTERNATE-SERVER.
"""

from __future__ import annotations

import socket
import time
from typing import Self

from trelay.stun.attributes import Attribute
from trelay.stun.codes import Method
from trelay.stun.errors import StunDecodeError
from trelay.stun.message import Message, new_transaction_id
from trelay.turn.client import TurnClientSession
from trelay.turn.client_auth import LongTermCredentials
from trelay.turn.client_events import (
    Allocated,
    DataReceived,
    Discarded,
    InvalidResponse,
    OutgoingRequest,
    Refreshed,
    RequestFailed,
    Retrying,
    TransactionEnded,
    method_name,
)

Address = tuple[str, int]


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
        self.session = TurnClientSession(
            LongTermCredentials(username, password, password_algorithms=()),
            transaction_ids=new_transaction_id,
            verify_responses=False,
        )
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

    @property
    def realm(self) -> str | None:
        return self.session.realm

    @property
    def nonce(self) -> str | None:
        return self.session.nonce

    @property
    def key(self) -> bytes | None:
        return None if self.session.signing is None else self.session.signing.key

    # --- requests ---------------------------------------------------------------------

    def allocate(self, lifetime: int | None = None) -> Address:
        """RFC 8656 §7.1: a UDP relayed address; returns XOR-RELAYED-ADDRESS."""
        event = self._run(self.session.allocate(lifetime=lifetime))
        if not isinstance(event, Allocated):
            raise TurnClientError(f"Allocate answered with {event}")
        self.relayed = event.relayed
        return self.relayed

    def refresh(self, lifetime: int) -> int:
        """RFC 8656 §7.3: 0 deletes the allocation; returns the granted lifetime."""
        event = self._run(self.session.refresh(lifetime))
        if lifetime == 0:
            self.relayed = None
        return event.lifetime if isinstance(event, Refreshed) else 0

    def create_permission(self, peer: Address) -> None:
        """RFC 8656 §9.1: let datagrams from `peer`'s IP in."""
        self._run(self.session.create_permission(peer))

    def channel_bind(self, channel: int, peer: Address) -> None:
        """RFC 8656 §11.1: bind `channel` (0x4000-0x4FFF) to `peer`."""
        self._run(self.session.channel_bind(channel, peer))

    def request(self, method: Method, attributes: tuple[Attribute, ...]) -> Message:
        """Run one transaction, authenticating when challenged; the success response.

        RFC 8489 §9.2.3: without a nonce the request goes unsigned and the server answers
        401 with REALM and NONCE; the core resends it with USERNAME, REALM, NONCE and
        MESSAGE-INTEGRITY. A 438 supplies a new nonce, and the request is resent once.
        """
        response = self._run(self.session.request(method, attributes)).response
        assert response is not None
        return response

    def _run(self, request: OutgoingRequest) -> TransactionEnded:
        """`request` to its success, through the challenges the core answers; else raise."""
        name = method_name(request.method)
        while True:
            event = self._transaction(request)
            if isinstance(event, Retrying):
                request = event.request
            elif isinstance(event, RequestFailed):
                raise TurnClientError(f"{name} failed: {event.code} {event.reason}", event.code)
            elif isinstance(event, InvalidResponse):
                raise TurnClientError(f"{name}: {event.reason}")
            else:
                return event

    def _transaction(self, request: OutgoingRequest) -> TransactionEnded | Retrying:
        tid = request.transaction_id
        try:
            for _ in range(self.retries + 1):
                self.sock.send(request.data)
                event = self._await_response(tid, time.monotonic() + self.timeout)
                if event is not None:
                    return event
        finally:
            self.session.cancel(tid)  # a no-op once answered
        name = method_name(request.method)
        raise TurnClientError(f"{name}: no response after {self.retries + 1} sends")

    def _await_response(self, tid: bytes, deadline: float) -> TransactionEnded | Retrying | None:
        """What ends (or retries) transaction `tid` before `deadline`, or None."""
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
            try:
                events = self.session.receive_datagram(data)
            except StunDecodeError:
                continue
            for event in events:
                if isinstance(event, (DataReceived, Discarded)):
                    continue  # relayed data, late duplicates: not what we wait for
                if event.transaction_id == tid:
                    return event

    # --- data path --------------------------------------------------------------------

    def channel_data(self, channel: int, payload: bytes) -> bytes:
        """A ChannelData datagram (RFC 8656 §12.4; unpadded, as UDP allows)."""
        return self.session.channel_data(channel, payload)
