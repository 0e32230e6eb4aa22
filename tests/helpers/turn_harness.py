"""A scripted TURN client for driving the pure core in tests: builds signed requests,
feeds them to a `TurnServer` with a chosen `now`, and decodes what comes back.

Also: TURN REST credentials (`rest_credentials`), a runtime-like timer loop
(`run_timers`), and `assert_error`, which checks the code and the design §5 rules
(401/438 carry REALM and NONCE; responses to authenticated requests are signed).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    Attribute,
    ChannelNumber,
    Data,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.credentials import long_term_key
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.integrity import encode_signed, verify_integrity
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn.actions import Action, OpenRelay, SendToClient
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.auth import LongTermAuthenticator, RevocationCheck
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import (
    CredentialSources,
    SharedSecrets,
    StaticUsers,
    rest_password,
)
from trelay.turn.mobility import TicketCodec
from trelay.turn.nonces import NonceStamper
from trelay.turn.policy import PeerPolicy
from trelay.turn.server import TurnServer
from trelay.turn.third_party import ThirdPartyAuthorizer

REALM = "example.org"
SERVER_ADDRESS = ("192.0.2.1", 3478)
SECRET = b"shared-secret-for-tests"


@dataclass
class Clock:
    unix: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.unix


def make_server(
    config: TurnConfig | None = None,
    policy: PeerPolicy | None = None,
    users: dict[str, str] | None = None,
    clock: Clock | None = None,
    secrets: Iterable[bytes] = (SECRET,),
    nonce_lifetime: float = 600,
    *,
    third_party: ThirdPartyAuthorizer | None = None,
    is_revoked: RevocationCheck | None = None,
    security_features: bool = True,
    tickets: TicketCodec | None = None,
) -> TurnServer:
    config = config or TurnConfig(realm=REALM, relay_host="198.51.100.1")
    sources = CredentialSources(
        StaticUsers(users if users is not None else {"alice": "secret", "bob": "hunter2"}, REALM),
        SharedSecrets(secrets, REALM),
    )
    auth = LongTermAuthenticator(
        REALM,
        sources,
        NonceStamper(b"n" * 32, nonce_lifetime),
        third_party=third_party,
        is_revoked=is_revoked,
        security_features=security_features,
    )
    return TurnServer(
        config,
        auth,
        policy or PeerPolicy.from_strings(allow_loopback=True),
        wall_clock=clock or Clock(),
        rng=random.Random(7),
        tickets=tickets,
    )


_TIDS = random.Random(1)


def tid(rng: random.Random = _TIDS) -> bytes:
    return rng.randbytes(12)


def rest_credentials(
    user: str, expiry: float, secret: bytes = SECRET, *, user_first: bool = False
) -> tuple[str, str]:
    """A TURN REST (username, password): `<expiry>:<user>`, or `<user>:<expiry>`."""
    username = f"{user}:{int(expiry)}" if user_first else f"{int(expiry)}:{user}"
    return username, rest_password(secret, username)


def run_timers(server: TurnServer, until: float, max_steps: int = 10_000) -> list[Action]:
    """Call `handle_timer` at every deadline up to `until`, then at `until`, as a runtime."""
    actions: list[Action] = []
    for _ in range(max_steps):
        deadline = server.next_deadline()
        if deadline is None or deadline > until:
            break
        actions += server.handle_timer(deadline)
    else:
        raise AssertionError("timers did not settle")
    return actions + server.handle_timer(until)


_RELAY_PORTS = itertools.count(49152)


@dataclass
class Client:
    """One client 5-tuple with its credentials; remembers the nonce it was given."""

    server: TurnServer
    address: Address = ("203.0.113.5", 50000)
    username: str = "alice"
    password: str = "secret"
    transport: ClientTransport = ClientTransport.UDP
    nonce: str | None = None
    # The port the fake runtime "binds" when the server lets the kernel choose (port 0).
    relay_port: int = field(default_factory=lambda: next(_RELAY_PORTS))
    now: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(2))
    # False: keep OpenRelay actions in `opens` for the test to answer, as a slow runtime.
    auto_open: bool = True
    opens: list[OpenRelay] = field(default_factory=list)
    last_raw: bytes | None = None  # the bytes of the last response `response` matched
    # True: `call` answers a 438 once with its fresh NONCE, as real clients do.
    retry_stale: bool = False

    @property
    def five_tuple(self) -> FiveTuple:
        return FiveTuple(self.transport, self.address, SERVER_ADDRESS)

    @property
    def key(self) -> bytes:
        return long_term_key(self.username, REALM, self.password)

    def request(self, method: Method, *attributes: Attribute, sign: bool = True) -> Message:
        extra: tuple[Attribute, ...] = ()
        if sign:
            assert self.nonce is not None
            extra = (Username(self.username), Realm(REALM), Nonce(self.nonce))
        return Message(method, MessageClass.REQUEST, self.rng.randbytes(12), (*attributes, *extra))

    def send_raw(self, data: bytes) -> list[Action]:
        actions = self.server.handle_message(data, self.five_tuple, self.now)
        out: list[Action] = []
        for action in actions:
            out.append(action)
            if isinstance(action, OpenRelay) and not self.auto_open:
                self.opens.append(action)
            elif isinstance(action, OpenRelay):
                port = action.port or self.relay_port
                port += (action.even or action.reserve_next) and port % 2  # EVEN-PORT
                relayed = (action.host, port)
                # The R bit: the runtime holds port+1 too (RFC 8656 §7.2).
                reserved = (action.host, port + 1) if action.reserve_next else None
                # A dual allocation: the other family's socket, on the same port here.
                second = None if action.dual_host is None else (action.dual_host, port)
                out += self.server.relay_opened(
                    self.five_tuple, relayed, self.now, reserved=reserved, second=second
                )
        return out

    def send(self, message: Message, sign: bool = True) -> Message | None:
        key = self.key if sign else None
        data = encode_signed(message, key) if key else encode_message(message)
        return self.response(self.send_raw(data), message)

    def response(self, actions: list[Action], request: Message) -> Message | None:
        for action in actions:
            if isinstance(action, SendToClient):
                reply = decode_message(action.data)
                if reply.transaction_id == request.transaction_id:
                    self.last_raw = action.data
                    if self.nonce is not None and reply.get(ErrorCodeAttribute) is None:
                        assert verify_integrity(action.data, self.key), "unsigned success"
                    return reply
        return None

    def signed(self) -> bool:
        """Whether the last response carries a valid MESSAGE-INTEGRITY under our key."""
        assert self.last_raw is not None
        return verify_integrity(self.last_raw, self.key)

    def use_rest(
        self, user: str, expiry: float, secret: bytes = SECRET, *, user_first: bool = False
    ) -> None:
        self.username, self.password = rest_credentials(user, expiry, secret, user_first=user_first)

    def authenticate(self) -> None:
        """Learn a nonce from the 401 challenge."""
        reply = self.send(self.request(Method.ALLOCATE, RequestedTransport(17), sign=False), False)
        assert reply is not None
        nonce = reply.get(Nonce)
        assert nonce is not None
        self.nonce = nonce.value

    def call(self, method: Method, *attributes: Attribute) -> Message:
        """A signed request. With `retry_stale`, a 438 is answered once with its fresh
        NONCE, as real clients do (RFC 8489 §9.2.5; the server retires an address's nonces
        when its allocation ends); without, the 438 is the reply."""
        if self.nonce is None:
            self.authenticate()
        reply = self.send(self.request(method, *attributes))
        assert reply is not None, "no response"
        fresh = reply.get(Nonce)
        stale = error_code(reply) == 438 and fresh is not None and fresh.value != self.nonce
        if self.retry_stale and stale and fresh is not None:
            self.nonce = fresh.value
            reply = self.send(self.request(method, *attributes))
            assert reply is not None, "no response"
        return reply

    def allocate(self, *attributes: Attribute) -> Message:
        return self.call(Method.ALLOCATE, RequestedTransport(17), *attributes)

    def refresh(self, lifetime: int | None = None) -> Message:
        return self.call(Method.REFRESH, *(() if lifetime is None else (Lifetime(lifetime),)))

    def permit(self, *peers: Address) -> Message:
        return self.call(Method.CREATE_PERMISSION, *(XorPeerAddress(*p) for p in peers))

    def bind(self, channel: int, peer: Address) -> Message:
        return self.call(Method.CHANNEL_BIND, ChannelNumber(channel), XorPeerAddress(*peer))

    def send_indication(self, peer: Address, data: bytes, *extra: Attribute) -> list[Action]:
        message = Message(
            Method.SEND, MessageClass.INDICATION, self.rng.randbytes(12),
            (XorPeerAddress(*peer), Data(data), *extra),
        )  # fmt: skip
        return self.send_raw(encode_message(message))


def error_code(message: Message | None) -> int | None:
    assert message is not None
    attribute = message.get(ErrorCodeAttribute)
    return None if attribute is None else attribute.code


def assert_error(client: Client, reply: Message | None, code: int, *, signed: bool) -> None:
    """`reply` is error `code`; 401/438 carry REALM and NONCE; signed iff `signed`."""
    assert reply is not None, "no response"
    assert reply.message_class is MessageClass.ERROR, reply
    assert error_code(reply) == code, reply
    if code in (401, 438):
        realm = reply.get(Realm)
        assert realm is not None and realm.value == REALM
        assert reply.get(Nonce) is not None
    assert client.signed() is signed


def assert_success(client: Client, reply: Message | None) -> None:
    assert reply is not None, "no response"
    assert reply.message_class is MessageClass.SUCCESS, reply
    assert client.signed()
