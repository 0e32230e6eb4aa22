"""A hypothesis state machine over the TURN core (design §7), driven as a runtime drives it.

Several clients (UDP and TCP 5-tuples, static users and TURN REST identities, one of
them with a credential that expires mid-run) allocate, refresh, permit, bind channels,
send, receive peer datagrams, lose their connection, move to a new address with their
MOBILITY-TICKET (RFC 8016: the newest, a superseded one, or from a TCP connection); the
runtime binds relay ports late or fails to; time jumps by up to 1000 s and `handle_timer`
runs at each deadline.

Invariants checked after every step: the allocation tables agree with each other; the
channel <-> peer maps are a bijection whose peers hold permissions; nothing with an
expiry at or before `now` survives `handle_timer(now)`; CloseRelay comes exactly once
per allocation and only for allocations; quotas hold with pending Allocates counted; the
port pool's in-use count is allocations plus pending; a move keeps the allocation (its
relayed address, permissions and channels) under the new 5-tuple only, and only the
newest ticket of an allocation moves it; mobile allocations are live ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.helpers.turn_harness import REALM, SERVER_ADDRESS, Clock, make_server, rest_credentials
from trelay.node.mobility_tickets import SealedTickets
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    Attribute,
    ChannelNumber,
    Data,
    Lifetime,
    MobilityTicket,
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
from trelay.turn.actions import (
    Action,
    AllocationCreated,
    AllocationEnded,
    AllocationMoved,
    CloseRelay,
    OpenRelay,
    SendToClient,
    SendToPeer,
)
from trelay.turn.addressing import Address, ClientTransport, FiveTuple
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import parse_rest_username
from trelay.turn.policy import PeerPolicy

BASE = 1_700_000_000.0
USER_QUOTA = 2
TOTAL_QUOTA = 5
PORTS = (50000, 50005)  # fewer ports than clients: 508 happens too
PEERS: tuple[Address, ...] = (
    ("127.0.0.1", 4000),
    ("127.0.0.1", 4001),
    ("127.0.0.2", 4000),
    ("10.0.0.1", 5000),  # denied: 403
    ("2001:db8::9", 6000),  # other family: 443
)
CHANNELS = (0x4000, 0x4001, 0x4FFF, 0x7FFF, 0x3FFF, 0x8000)


@dataclass
class Peer:
    """One client of the machine: its 5-tuple, credentials and last exchange."""

    five_tuple: FiveTuple
    username: str
    password: str
    identity: str
    nonce: str | None = None
    last_request: bytes | None = None
    last_reply: bytes | None = None
    last_sent_at: float = 0.0

    @property
    def key(self) -> bytes:
        return long_term_key(self.username, REALM, self.password)


def _clients() -> list[Peer]:
    def five(transport: ClientTransport, index: int) -> FiveTuple:
        return FiveTuple(transport, (f"203.0.113.{10 + index}", 40000 + index), SERVER_ADDRESS)

    udp, tcp = ClientTransport.UDP, ClientTransport.TCP
    carol_1 = rest_credentials("carol", BASE + 10_000)
    carol_2 = rest_credentials("carol", BASE + 20_000, user_first=True)
    dave = rest_credentials("dave", BASE + 700)
    return [
        Peer(five(udp, 0), "alice", "secret", "alice"),
        Peer(five(tcp, 1), "alice", "secret", "alice"),
        Peer(five(udp, 2), "alice", "secret", "alice"),
        Peer(five(tcp, 3), "bob", "hunter2", "bob"),
        Peer(five(udp, 4), *carol_1, "carol"),
        Peer(five(tcp, 5), *carol_2, "carol"),
        Peer(five(udp, 6), *dave, "dave"),
    ]


class TurnCoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock(BASE)
        config = TurnConfig(
            realm=REALM, relay_host="198.51.100.1", port_range=PORTS,
            user_quota=USER_QUOTA, total_quota=TOTAL_QUOTA,
        )  # fmt: skip
        self.server = make_server(
            config, PeerPolicy.from_strings(allow_loopback=True), clock=self.clock,
            tickets=SealedTickets(b"t" * 32),
        )  # fmt: skip
        self.now = 0.0
        self.clients = _clients()
        self.by_five_tuple = {c.five_tuple: c for c in self.clients}
        self.pending: dict[FiveTuple, OpenRelay] = {}  # OpenRelay not yet answered
        self.live_relays: set[Address] = set()  # from AllocationCreated until CloseRelay
        self.created = 0
        self.closed = 0
        self.next_tid = 0
        self.answered: set[bytes] = set()
        # RFC 8016: each mobile allocation's newest ticket (by relayed address), and the
        # tickets superseded since.
        self.tickets: dict[Address, bytes] = {}
        self.superseded: set[bytes] = set()
        self.moves = 0

    # --- plumbing -------------------------------------------------------------------------

    def process(self, actions: list[Action]) -> list[bytes]:
        """Apply what a runtime would; return the data sent to clients."""
        sent: list[bytes] = []
        for action in actions:
            if isinstance(action, SendToClient):
                sent.append(action.data)
            elif isinstance(action, OpenRelay):
                self.pending[action.five_tuple] = action
            elif isinstance(action, AllocationCreated):
                assert action.relayed not in self.live_relays
                self.live_relays.add(action.relayed)
                self.pending.pop(action.five_tuple, None)
                self.created += 1
            elif isinstance(action, CloseRelay):
                assert action.relayed in self.live_relays, "CloseRelay twice or for nothing"
                self.live_relays.remove(action.relayed)
                self.closed += 1
            elif isinstance(action, AllocationEnded):
                assert action.relayed not in self.server.by_relayed
            elif isinstance(action, AllocationMoved):  # before its CloseRelay, if any
                assert action.relayed in self.live_relays
                assert action.previous.client != action.five_tuple.client
            else:
                assert isinstance(action, SendToPeer)
        return sent

    def exchange(self, client: Peer, method: Method, *attributes: Attribute) -> Message | None:
        """A signed request; on 438 (or the first 401) learn the nonce and try once more."""
        reply: Message | None = None
        for _ in range(2):
            if client.nonce is None:
                self.learn_nonce(client)
            assert client.nonce is not None
            self.next_tid += 1
            request = Message(
                method, MessageClass.REQUEST, self.next_tid.to_bytes(12, "big"),
                (*attributes, Username(client.username), Realm(REALM), Nonce(client.nonce)),
            )  # fmt: skip
            data = encode_signed(request, client.key)
            reply = self.send(client, data, request.transaction_id)
            event(f"{method.name} -> {'none' if reply is None else _code(reply) or 'ok'}")
            if reply is None or _code(reply) != 438:
                return reply
            nonce = reply.get(Nonce)
            assert nonce is not None
            client.nonce = nonce.value
        return reply

    def learn_nonce(self, client: Peer) -> None:
        self.next_tid += 1
        request = Message(
            Method.ALLOCATE, MessageClass.REQUEST, self.next_tid.to_bytes(12, "big"),
            (RequestedTransport(17),),
        )  # fmt: skip
        reply = self.send(client, encode_message(request), request.transaction_id)
        assert reply is not None and _code(reply) == 401
        nonce = reply.get(Nonce)
        assert nonce is not None
        client.nonce = nonce.value

    def send(self, client: Peer, data: bytes, transaction_id: bytes) -> Message | None:
        sent = self.process(self.server.handle_message(data, client.five_tuple, self.now))
        client.last_request, client.last_reply, client.last_sent_at = data, None, self.now
        for raw in sent:
            reply = decode_message(raw)
            assert reply.transaction_id == transaction_id
            self.check_reply(client, raw, reply)
            client.last_reply = raw
            return reply
        return None

    def check_reply(self, client: Peer, raw: bytes, reply: Message) -> None:
        """design §5: 401/438 carry REALM and NONCE; everything else authenticated is signed."""
        code = _code(reply)
        if code in (401, 438):
            assert reply.get(Realm) is not None and reply.get(Nonce) is not None
        elif client.nonce is not None:
            assert verify_integrity(raw, client.key), reply
        fresh = raw not in self.answered
        self.answered.add(raw)
        ticket = reply.get(MobilityTicket)
        if fresh and ticket is not None:
            state = self.server.allocations.get(client.five_tuple)
            assert state is not None and ticket.value, reply
            old = self.tickets.get(state.relayed)
            if old is not None:
                self.superseded.add(old)
            self.tickets[state.relayed] = ticket.value
        if (
            fresh
            and reply.message_class is MessageClass.SUCCESS
            and reply.method == Method.ALLOCATE
        ):
            # (A retransmission may get the cached success of an allocation since deleted.)
            assert client.five_tuple in self.server.allocations

    def run_timers_until(self, target: float) -> None:
        for _ in range(10_000):
            deadline = self.server.next_deadline()
            if deadline is None or deadline > target:
                break
            assert deadline >= self.now, "a deadline in the past was left behind"
            self.now = deadline
            self.clock.unix = BASE + deadline
            self.process(self.server.handle_timer(deadline))
        else:
            raise AssertionError("timers did not settle")
        self.now = target
        self.clock.unix = BASE + target
        self.process(self.server.handle_timer(target))

    def expired(self, client: Peer) -> bool:
        """Whether the client's TURN REST credential has expired by the wall clock."""
        rest = parse_rest_username(client.username)
        return rest is not None and rest[1] <= self.clock.unix

    def pick(self, index: int) -> Peer:
        """Mostly a client with an allocation (where the interesting rules apply)."""
        allocated = [c for c in self.clients if c.five_tuple in self.server.allocations]
        if allocated and index < 5:
            return allocated[index % len(allocated)]
        return self.clients[index]

    # --- rules --------------------------------------------------------------------------

    clients_index = st.integers(0, 6)

    @rule(
        index=clients_index,
        lifetime=st.sampled_from([None, 0, 30, 1200, 99999]),
        runtime=st.sampled_from(["bound", "bound", "failed", "later"]),
        mobile=st.booleans(),
    )
    def allocate(self, index: int, lifetime: int | None, runtime: str, mobile: bool) -> None:
        client = self.clients[index]
        had = client.five_tuple in self.server.allocations
        waiting = client.five_tuple in self.pending
        extra: tuple[Attribute, ...] = () if lifetime is None else (Lifetime(lifetime),)
        extra += (MobilityTicket(b""),) if mobile else ()
        reply = self.exchange(client, Method.ALLOCATE, RequestedTransport(17), *extra)
        if reply is None:
            assert client.five_tuple in self.pending  # waiting for the runtime's bind
            if runtime != "later":
                self.answer_bind(client.five_tuple, runtime == "bound")
        elif had:
            # An expired credential gets its 401 before the allocation is looked at.
            assert _code(reply) == (401 if self.expired(client) else 437)
        elif mobile and client.five_tuple.transport.is_stream and not waiting:
            # RFC 8016 §3.1.2: no mobility over TCP (its allocation ends with the connection).
            assert _code(reply) == (401 if self.expired(client) else 405)

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), bound=st.booleans())
    def runtime_answers_bind(self, data: st.DataObject, bound: bool) -> None:
        self.answer_bind(data.draw(st.sampled_from(sorted(self.pending, key=repr))), bound)

    def answer_bind(self, five_tuple: FiveTuple, bound: bool) -> None:
        open_ = self.pending.pop(five_tuple)
        client = self.by_five_tuple[five_tuple]
        if bound:
            actions = self.server.relay_opened(five_tuple, (open_.host, open_.port), self.now)
        else:
            actions = self.server.relay_failed(five_tuple, self.now)
        for raw in self.process(actions):
            reply = decode_message(raw)
            self.check_reply(client, raw, reply)
            event(f"bind answered -> {_code(reply) or 'ok'}")

    @rule(index=clients_index, lifetime=st.sampled_from([None, 0, 30, 600, 5000]))
    def refresh(self, index: int, lifetime: int | None) -> None:
        client = self.pick(index)
        state = self.server.allocations.get(client.five_tuple)
        extra = () if lifetime is None else (Lifetime(lifetime),)
        reply = self.exchange(client, Method.REFRESH, *extra)
        assert reply is not None
        if state is None:
            # After a credential's expiry every method gets its 401 (issue 15).
            assert _code(reply) == (401 if self.expired(client) else 437)
        elif _code(reply) is None:
            alive = self.server.allocations.get(client.five_tuple) is state
            assert alive == (lifetime != 0)

    @rule(
        index=clients_index,
        which=st.sampled_from(["newest", "newest", "superseded", "over_tcp"]),
        lifetime=st.sampled_from([None, None, 0]),
    )
    def client_moves(self, index: int, which: str, lifetime: int | None) -> None:
        """RFC 8016 §3.2: the client's address changed; it refreshes with a ticket."""
        client = self.pick(index)
        state = self.server.allocations.get(client.five_tuple)
        ticket = None if state is None else self.tickets.get(state.relayed)
        if state is None or ticket is None or client.five_tuple in self.pending:
            return
        if which == "superseded":
            if not self.superseded:
                return
            ticket = sorted(self.superseded)[0]
        before = (state.relayed, dict(state.channels), dict(state.permissions))
        home = client.five_tuple
        self.moves += 1
        transport = ClientTransport.TCP if which == "over_tcp" else home.transport
        away = FiveTuple(transport, (f"192.0.2.{index}", 30000 + self.moves), SERVER_ADDRESS)
        self.move_client(client, away)
        extra = () if lifetime is None else (Lifetime(lifetime),)
        reply = self.exchange(client, Method.REFRESH, MobilityTicket(ticket), *extra)
        assert reply is not None
        code = _code(reply)
        if self.expired(client):
            assert code == 401
        elif which == "over_tcp":
            assert code == 405
        elif which == "superseded":
            assert code == 437
        else:
            assert code is None, reply
            if lifetime == 0:
                assert state.relayed not in self.server.by_relayed
            else:
                assert self.server.allocations[away] is state
                assert before == (state.relayed, state.channels, state.permissions)
            assert home not in self.server.allocations
            event("client moved")
            return
        assert self.server.allocations[home] is state
        self.move_client(client, home)  # it did not move after all
        client.last_request = None  # a retransmission would come from elsewhere

    def move_client(self, client: Peer, five_tuple: FiveTuple) -> None:
        del self.by_five_tuple[client.five_tuple]
        client.five_tuple = five_tuple
        self.by_five_tuple[five_tuple] = client

    @rule(index=clients_index, peers=st.lists(st.sampled_from(PEERS), min_size=1, max_size=3))
    def permit(self, index: int, peers: list[Address]) -> None:
        client = self.pick(index)
        reply = self.exchange(
            client, Method.CREATE_PERMISSION, *(XorPeerAddress(*p) for p in peers)
        )
        assert reply is not None
        state = self.server.allocations.get(client.five_tuple)
        if _code(reply) is None:
            assert state is not None
            for peer in peers:
                assert state.permissions[peer[0]] >= self.now + 300

    @rule(index=clients_index, channel=st.sampled_from(CHANNELS), peer=st.sampled_from(PEERS))
    def bind(self, index: int, channel: int, peer: Address) -> None:
        client = self.pick(index)
        state = self.server.allocations.get(client.five_tuple)
        before = None if state is None else (dict(state.channels), dict(state.permissions))
        reply = self.exchange(
            client, Method.CHANNEL_BIND, ChannelNumber(channel), XorPeerAddress(*peer)
        )
        assert reply is not None
        if _code(reply) is None:
            assert state is not None and state.channels[channel] == peer
            assert state.channel_expiry[channel] == self.now + 600
        elif state is not None and _code(reply) != 437:
            assert before == (state.channels, state.permissions), "a failed bind changed state"

    @rule(index=clients_index, peer=st.sampled_from(PEERS))
    def send_indication(self, index: int, peer: Address) -> None:
        client = self.pick(index)
        self.next_tid += 1
        message = Message(
            Method.SEND, MessageClass.INDICATION, self.next_tid.to_bytes(12, "big"),
            (XorPeerAddress(*peer), Data(b"payload")),
        )  # fmt: skip
        actions = self.server.handle_message(encode_message(message), client.five_tuple, self.now)
        state = self.server.allocations.get(client.five_tuple)
        if actions:
            assert state is not None
            assert actions == [SendToPeer(state.relayed, peer, b"payload")]
            assert state.permissions[peer[0]] > self.now
        else:
            assert state is None or peer[0] not in state.permissions

    @rule(index=clients_index, peer=st.sampled_from(PEERS))
    def peer_datagram(self, index: int, peer: Address) -> None:
        state = self.server.allocations.get(self.pick(index).five_tuple)
        if state is None:
            return
        framed = self.server.peer_datagram(state, peer, b"from peer")
        event(f"peer datagram relayed: {framed is not None}")
        channel = state.peers.get(peer)
        if channel is not None:
            assert state.channel_expiry[channel] > self.now
            assert state.permissions[peer[0]] > self.now
            assert framed is not None and int.from_bytes(framed[:2], "big") == channel
        elif peer[0] in state.permissions:
            assert state.permissions[peer[0]] > self.now
            assert framed is not None and decode_message(framed).method == Method.DATA
        else:
            assert framed is None

    @rule(index=clients_index)
    def retransmit(self, index: int) -> None:
        client = self.clients[index]
        if client.last_request is None:
            return
        previous, sent_at = client.last_reply, client.last_sent_at
        transaction_id = decode_message(client.last_request).transaction_id
        reply = self.send(client, client.last_request, transaction_id)
        fresh = self.now - sent_at < 40  # inside the response cache's time
        if previous is not None and fresh and decode_message(previous).get(Nonce) is None:
            # Answered from the cache: byte-identical, nothing ran twice.
            assert client.last_reply == previous, reply

    @rule(
        seconds=st.one_of(
            st.integers(0, 60), st.integers(0, 1000), st.floats(0, 1000, allow_nan=False)
        )
    )
    def advance_time(self, seconds: float) -> None:
        self.run_timers_until(self.now + seconds)

    @rule(index=st.sampled_from([1, 3, 5]), bound=st.booleans())
    def connection_closed(self, index: int, bound: bool) -> None:
        five_tuple = self.clients[index].five_tuple
        self.clients[index].last_request = None  # TCP never retransmits on a new connection
        had = five_tuple in self.server.allocations
        actions = self.server.connection_closed(five_tuple)
        self.process(actions)
        assert len([a for a in actions if isinstance(a, CloseRelay)]) == int(had)
        self.orphan(five_tuple, bound)

    @rule(identity=st.sampled_from(["alice", "bob", "carol", "dave"]))
    def operator_ends_identity(self, identity: str) -> None:
        had = sum(a.identity == identity for a in self.server.allocations.values())
        actions = self.server.end_identity(identity)
        self.process(actions)
        assert len([a for a in actions if isinstance(a, CloseRelay)]) == had
        assert not self.server.allocation_views(self.now, identity)

    @rule(index=clients_index, by_relayed=st.booleans())
    def operator_ends_one(self, index: int, by_relayed: bool) -> None:
        five_tuple = self.clients[index].five_tuple
        allocation = self.server.allocations.get(five_tuple)
        if by_relayed and allocation is None:
            return
        which = allocation.relayed if by_relayed and allocation is not None else five_tuple
        actions = self.server.end_allocation(which)
        self.process(actions)
        assert len([a for a in actions if isinstance(a, CloseRelay)]) == int(allocation is not None)
        assert five_tuple not in self.server.allocations

    @precondition(lambda self: not self.server.draining)
    @rule(bound=st.booleans(), dice=st.integers(0, 9))
    def shutdown(self, bound: bool, dice: int) -> None:
        if dice:
            return  # shutdown ends the interesting part of a run: make it rare
        self.process(self.server.shutdown())
        assert not self.server.allocations
        for five_tuple in list(self.pending):
            self.orphan(five_tuple, bound)

    def orphan(self, five_tuple: FiveTuple, bound: bool) -> None:
        """The runtime finishes a bind whose Allocate is gone: the socket must be closed."""
        open_ = self.pending.pop(five_tuple, None)
        if open_ is None:
            return
        relayed = (open_.host, open_.port)
        if bound:
            assert self.server.relay_opened(five_tuple, relayed, self.now) == [CloseRelay(relayed)]
        else:
            assert self.server.relay_failed(five_tuple, self.now) == []

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def tables_agree(self) -> None:
        server = self.server
        tables = [server.client_table(t, SERVER_ADDRESS) for t in ClientTransport]
        assert len(server.by_relayed) == len(server.allocations)
        assert sum(len(t) for t in tables) == len(server.allocations)
        for five_tuple, state in server.allocations.items():
            assert state.five_tuple == five_tuple
            assert server.by_relayed[state.relayed] is state
            assert (
                server.client_table(five_tuple.transport, five_tuple.server)[five_tuple.client]
                is state
            )
        assert self.live_relays == set(server.by_relayed)
        assert self.created - self.closed == len(server.allocations)
        assert server.state_sizes()["mobile_allocations"] <= len(server.allocations)

    @invariant()
    def channels_are_a_bijection(self) -> None:
        for state in self.server.allocations.values():
            assert len(state.channels) == len(state.peers) == len(state.channel_expiry)
            for number, peer in state.channels.items():
                assert state.peers[peer] == number
                assert 0x4000 <= number <= 0x7FFF
                assert state.permissions[peer[0]] >= state.channel_expiry[number]

    @invariant()
    def nothing_expired_survives(self) -> None:
        for state in self.server.allocations.values():
            assert state.expires_at > self.now
            assert all(expiry > self.now for expiry in state.permissions.values())
            assert all(expiry > self.now for expiry in state.channel_expiry.values())

    @invariant()
    def quotas_hold(self) -> None:
        live = [s.identity for s in self.server.allocations.values()]
        waiting = [self.by_five_tuple[f].identity for f in self.pending]
        per_identity = Counter(live + waiting)
        assert all(count <= USER_QUOTA for count in per_identity.values()), per_identity
        assert self.server.allocation_count == len(live) + len(waiting) <= TOTAL_QUOTA
        assert self.server.ports is not None
        assert self.server.ports.in_use == len(live) + len(waiting)


def _code(message: Message) -> int | None:
    attribute = message.get(ErrorCodeAttribute)
    return None if attribute is None else attribute.code


TurnCoreMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
test_turn_core = TurnCoreMachine.TestCase
