"""The TURN client core, sans I/O: requests out as bytes, received bytes in as events.

Owns the client side of RFC 8656 for one client 5-tuple: building Allocate (§7.1),
Refresh (§8.1), CreatePermission (§9.1) and ChannelBind (§11.1) requests, Binding
requests (RFC 8489 §3), Send indications (§10.1) and ChannelData (§12.4, padded over
streams §12.5); matching each response to its request by transaction id (RFC 8489 §6.3);
the long-term credential challenge (RFC 8489 §9.2.5: the first request goes unsigned, a
401 or 438 gives REALM and NONCE, the request is sent again signed, under a new
transaction id); checking the integrity of responses to signed requests; and decoding
Data indications (§10.4) and ChannelData (§12.6). How to sign is in
`trelay.turn.client_auth`, what comes out in `trelay.turn.client_events`.

Used like h11 or aioquic (design §3): the caller owns the socket, the clock and the
retransmission timer.

    session = TurnClientSession(LongTermCredentials("alice", "pw"), transaction_ids=new_id)
    request = session.allocate(lifetime=600)
    sock.send(request.data)                  # resend request.data as is until answered
    for event in session.receive_datagram(sock.recv(65536)):
        match event:
            case Retrying(request=again): sock.send(again.data)   # challenged: signed now
            case Allocated(relayed=relayed): ...
            case RequestFailed(code=code, reason=reason): ...

Invariants:
- no I/O, no clock, no randomness: transaction ids come from the injected callable;
- bytes that are neither STUN nor ChannelData raise `StunDecodeError`, misuse raises
  `TurnClientError`; nothing else escapes `receive_*`;
- a response to a signed request is accepted only with valid integrity under the key
  that signed it (RFC 8489 §9.2.5), except 401 and 438, which a server cannot sign for
  credentials it rejects; an unverified response is `Discarded` and the transaction
  stays open, as if the response was never received;
- at most `MAX_PENDING` transactions are remembered (the oldest is forgotten first):
  a caller that never hears back cannot make the session grow without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    Attribute,
    ChannelNumber,
    Data,
    DontFragment,
    EvenPort,
    Fingerprint,
    Lifetime,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Software,
)
from trelay.stun.channel_data import (
    FIRST_CHANNEL_BYTE,
    LAST_CHANNEL_BYTE,
    decode_channel_data,
    encode_channel_data,
)
from trelay.stun.codes import AddressFamily, ErrorCode, MessageClass, Method, TransportProtocol
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.framing import StreamDeframer
from trelay.stun.integrity import encode_signed, verify_fingerprint, verify_integrity
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn.addressing import Address
from trelay.turn.client_auth import (
    Challenge,
    Credentials,
    RequestSigning,
    parse_challenge,
    signing_for,
)
from trelay.turn.client_events import (
    Allocated,
    ChannelBound,
    ClientEvent,
    DataReceived,
    Discarded,
    DiscardReason,
    InvalidResponse,
    OutgoingRequest,
    Refreshed,
    RequestFailed,
    Retrying,
    TransactionEnded,
    TurnClientError,
    error_code,
)
from trelay.turn.client_results import read_data_indication, read_success

MAX_PENDING = 64
# Unsigned, 401, signed, 438, signed again: two challenges answered per request at most.
MAX_CHALLENGES = 2
_CHALLENGES = (ErrorCode.UNAUTHORIZED, ErrorCode.STALE_NONCE)


@dataclass(frozen=True, slots=True)
class _Transaction:
    method: int
    attributes: tuple[Attribute, ...]  # as the caller gave them, before credentials
    signing: RequestSigning | None  # what signed it; None: sent unsigned
    answer_challenges: bool
    challenges: int


class TurnClientSession:
    """One client 5-tuple talking to one TURN server: its credentials, its open
    transactions, the challenge it last answered and the allocation it holds."""

    def __init__(
        self,
        credentials: Credentials | None,
        *,
        transaction_ids: Callable[[], bytes],
        stream: bool = False,
        verify_responses: bool = True,
        fingerprint: bool = True,
        software: str | None = None,
    ) -> None:
        """`stream`: the control connection is TCP/TLS (ChannelData padded, §12.5).
        `verify_responses=False` skips the integrity check (a load generator's choice).
        `fingerprint`: unsigned requests carry FINGERPRINT too (signed ones follow the
        credentials' own `fingerprint`)."""
        self.credentials = credentials
        self._new_id = transaction_ids
        self.stream = stream
        self.verify_responses = verify_responses
        self.fingerprint = fingerprint
        self._software = () if software is None else (Software(software),)
        self.challenge: Challenge | None = None
        self.signing: RequestSigning | None = None
        self.relayed: Address | None = None
        self.mapped: Address | None = None
        self.lifetime: int | None = None
        self.channels: dict[int, Address] = {}
        self._pending: dict[bytes, _Transaction] = {}
        self._deframer = StreamDeframer()

    @property
    def realm(self) -> str | None:
        return None if self.signing is None else self.signing.realm

    @property
    def nonce(self) -> str | None:
        return None if self.signing is None else self.signing.nonce

    def pending(self) -> tuple[bytes, ...]:
        """Transaction ids still waiting for their response, oldest first."""
        return tuple(self._pending)

    def cancel(self, transaction_id: bytes) -> None:
        """The caller gave up on a transaction (RFC 8489 §6.2.1 timeout); forget it."""
        self._pending.pop(transaction_id, None)

    # --- requests ---------------------------------------------------------------------

    def request(
        self,
        method: int,
        attributes: Iterable[Attribute] = (),
        *,
        sign: bool | None = None,
        transaction_id: bytes | None = None,
    ) -> OutgoingRequest:
        """Any request. `sign`: None signs once a challenge has been answered; False never
        signs and takes no challenge (Binding); True requires a challenge answered first."""
        if sign and self.signing is None:
            raise TurnClientError("cannot sign: no 401/438 challenge answered yet")
        signing = self.signing if sign is not False else None
        attributes = (*attributes, *self._software)
        return self._send(method, attributes, signing, sign is not False, 0, transaction_id)

    def allocate(
        self,
        *,
        lifetime: int | None = None,
        transport: TransportProtocol = TransportProtocol.UDP,
        family: AddressFamily | None = None,
        even_port: bool | None = None,
        reservation_token: bytes | None = None,
        dont_fragment: bool = False,
        extra: Iterable[Attribute] = (),
    ) -> OutgoingRequest:
        """RFC 8656 §7.1. `even_port`: None leaves EVEN-PORT out, else its R bit."""
        attributes: list[Attribute] = [RequestedTransport(transport)]
        if lifetime is not None:
            attributes.append(Lifetime(lifetime))
        if family is not None:
            attributes.append(RequestedAddressFamily(family))
        if even_port is not None:
            attributes.append(EvenPort(even_port))
        if reservation_token is not None:
            attributes.append(ReservationToken(reservation_token))
        if dont_fragment:
            attributes.append(DontFragment())
        return self.request(Method.ALLOCATE, (*attributes, *extra))

    def refresh(
        self, lifetime: int | None = None, *, extra: Iterable[Attribute] = ()
    ) -> OutgoingRequest:
        """RFC 8656 §8.1: LIFETIME 0 deletes the allocation; None lets the server choose."""
        attributes = () if lifetime is None else (Lifetime(lifetime),)
        return self.request(Method.REFRESH, (*attributes, *extra))

    def create_permission(
        self, *peers: Address, extra: Iterable[Attribute] = ()
    ) -> OutgoingRequest:
        """RFC 8656 §9.1: install or refresh permissions for the peers' IP addresses."""
        if not peers:
            raise TurnClientError("CreatePermission needs at least one XOR-PEER-ADDRESS")
        return self.request(
            Method.CREATE_PERMISSION, (*(XorPeerAddress(*p) for p in peers), *extra)
        )

    def channel_bind(
        self, channel: int, peer: Address, *, extra: Iterable[Attribute] = ()
    ) -> OutgoingRequest:
        """RFC 8656 §11.1: bind (or refresh) `channel` to `peer`."""
        attributes = (ChannelNumber(channel), XorPeerAddress(*peer), *extra)
        return self.request(Method.CHANNEL_BIND, attributes)

    def binding(self, *, extra: Iterable[Attribute] = ()) -> OutgoingRequest:
        """RFC 8489 §3: an unauthenticated Binding request (what is my address?)."""
        return self.request(Method.BINDING, tuple(extra), sign=False)

    # --- data -------------------------------------------------------------------------

    def send_indication(
        self,
        peer: Address,
        data: bytes,
        *,
        dont_fragment: bool = False,
        extra: Iterable[Attribute] = (),
    ) -> bytes:
        """RFC 8656 §10.1: a Send indication (never signed, no response)."""
        attributes: tuple[Attribute, ...] = (XorPeerAddress(*peer), Data(data))
        if dont_fragment:
            attributes += (DontFragment(),)
        indication = Message(
            Method.SEND, MessageClass.INDICATION, self._new_id(), (*attributes, *extra)
        )
        return encode_message(indication)

    def channel_data(self, channel: int, data: bytes) -> bytes:
        """RFC 8656 §12.4: ChannelData, padded to 4 bytes over TCP/TLS (§12.5)."""
        try:
            return encode_channel_data(channel, data, pad=self.stream)
        except ValueError as exc:
            raise TurnClientError(str(exc)) from exc

    # --- receiving --------------------------------------------------------------------

    def receive_datagram(self, data: bytes) -> list[ClientEvent]:
        """One UDP datagram from the server: a STUN message or ChannelData (RFC 7983)."""
        if data and FIRST_CHANNEL_BYTE <= data[0] <= LAST_CHANNEL_BYTE:
            return [self._channel_data(*decode_channel_data(data))]
        return [self.receive_message(data)]

    def receive_stream(self, data: bytes) -> list[ClientEvent]:
        """Bytes from a TCP/TLS control connection; framing is kept across calls."""
        events: list[ClientEvent] = []
        for frame in self._deframer.feed(data):
            if frame.channel is None:
                events.append(self.receive_message(frame.data))
            else:
                events.append(self._channel_data(frame.channel, frame.data))
        return events

    def receive_message(self, data: bytes) -> ClientEvent:
        """One complete STUN message; raises `StunDecodeError` if it is not one."""
        message = decode_message(data)
        if message.get(Fingerprint) is not None and not verify_fingerprint(data):
            return Discarded(message.transaction_id, DiscardReason.MALFORMED)  # RFC 8489 §7.3
        if message.message_class is MessageClass.INDICATION and message.method == Method.DATA:
            return read_data_indication(message)
        if message.message_class in (MessageClass.REQUEST, MessageClass.INDICATION):
            return Discarded(message.transaction_id, DiscardReason.NOT_FOR_CLIENT)
        transaction = self._pending.get(message.transaction_id)
        if transaction is None or transaction.method != message.method:
            return Discarded(message.transaction_id, DiscardReason.UNKNOWN_TRANSACTION)
        error = message.get(ErrorCodeAttribute)
        code = None if error is None else error.code
        challenged = message.message_class is MessageClass.ERROR and code in _CHALLENGES
        signing = transaction.signing if self.verify_responses and not challenged else None
        if signing is not None and not verify_integrity(data, signing.key):
            return Discarded(message.transaction_id, DiscardReason.BAD_INTEGRITY)
        del self._pending[message.transaction_id]
        if message.message_class is MessageClass.SUCCESS:
            return self._track(read_success(transaction.attributes, message))
        if error is None:
            return InvalidResponse(
                message.transaction_id, message.method, "error response without ERROR-CODE",
                message,
            )  # fmt: skip
        if challenged:
            retry = self._answer_challenge(transaction, error.code, message)
            if retry is not None:
                return retry
        return RequestFailed(
            message.transaction_id, message.method, error_code(error.code), error.reason, message
        )

    # --- internals --------------------------------------------------------------------

    def _send(
        self,
        method: int,
        attributes: tuple[Attribute, ...],
        signing: RequestSigning | None,
        answer_challenges: bool,
        challenges: int,
        transaction_id: bytes | None = None,
    ) -> OutgoingRequest:
        tid = self._new_id() if transaction_id is None else transaction_id
        try:
            message = Message(method, MessageClass.REQUEST, tid, attributes)
            if signing is None:
                data = encode_signed(message, fingerprint=self.fingerprint)
            else:
                data = signing.sign(message)
        except ValueError as exc:  # a bad transaction id, an oversized message
            raise TurnClientError(str(exc)) from exc
        self._pending[tid] = _Transaction(
            method, attributes, signing, answer_challenges, challenges
        )
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        return OutgoingRequest(tid, method, data, signing is not None)

    def _answer_challenge(
        self, transaction: _Transaction, code: int, response: Message
    ) -> Retrying | None:
        """RFC 8489 §9.2.5: sign the request again under the challenge, if that can help."""
        if (
            self.credentials is None
            or not transaction.answer_challenges
            or transaction.challenges >= MAX_CHALLENGES
        ):
            return None
        challenge = parse_challenge(code, response)
        if challenge is None:
            return None  # no REALM or NONCE: nothing to sign with
        previous = transaction.signing
        # A 401 to a signed request: these credentials were refused. Only a new realm
        # (other credentials, another key) is worth another try.
        if code == ErrorCode.UNAUTHORIZED and previous and previous.realm == challenge.realm:
            return None
        try:
            signing = signing_for(self.credentials, challenge)
        except TurnClientError:
            return None  # bid-down detected or no common algorithm: the 401/438 stands
        self.challenge, self.signing = challenge, signing
        request = self._send(
            transaction.method, transaction.attributes, signing, True, transaction.challenges + 1
        )
        return Retrying(response.transaction_id, error_code(code), request)

    def _track(self, event: TransactionEnded) -> TransactionEnded:
        """Keep the allocation's state (relayed address, lifetime, channels) current."""
        if isinstance(event, Allocated):
            self.relayed, self.mapped, self.lifetime = event.relayed, event.mapped, event.lifetime
            self.channels = {}
        elif isinstance(event, Refreshed):
            self.lifetime = event.lifetime
            if event.lifetime == 0:  # §8.1: the allocation is gone
                self.relayed, self.channels = None, {}
        elif isinstance(event, ChannelBound):
            self.channels[event.channel] = event.peer
        return event

    def _channel_data(self, channel: int, data: bytes) -> DataReceived:
        return DataReceived(self.channels.get(channel), channel, data)
