"""A hypothesis state machine over EVEN-PORT, RESERVATION-TOKEN and dual allocations
(RFC 8656 §7.2, §7.3, §14.6, §14.9, §14.11), driven as the runtime drives the core: it
binds late or fails (a dual allocation's IPv6 socket alone, too), holds reserved
sockets, and closes what it is told to.

Clients allocate plainly, with EVEN-PORT, with the R bit, or with a token (a live one, a
used or expired one, a random one; alone or with EVEN-PORT or a family), or ask for both
families (alone, or with the R bit: 400); the runtime answers binds; allocations are
deleted (or their IPv6 address alone), connections close, time jumps past the 30 s of
reservations, and the server shuts down. With a port range and without one.

Invariants after every step: the runtime holds exactly the reserved sockets the core
knows (and those a pending redemption is about to take), CloseRelay comes once and
only for what the runtime holds; ports in use, identity counts and the total are
allocations plus pending slots plus reservations, within the quotas; no reservation
outlives its 30 s; an EVEN-PORT allocation's port is even; a redeemed token gets
exactly its reserved address; a token works once; a dual allocation is keyed by both
addresses (and its IPv6 socket is closed once, alone or with the allocation).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.helpers.turn_harness import REALM, Client, error_code, make_server
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import (
    AdditionalAddressFamily,
    Attribute,
    EvenPort,
    Lifetime,
    Nonce,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
)
from trelay.stun.codes import AddressFamily, MessageClass, Method
from trelay.stun.error_attributes import AddressErrorCode
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message
from trelay.turn.actions import Action, CloseRelay, OpenRelay, SendToClient
from trelay.turn.addressing import Address, FiveTuple
from trelay.turn.config import TurnConfig
from trelay.turn.reservations import RESERVATION_SECONDS
from trelay.turn.server import TurnServer

HOST = "198.51.100.1"
USER_QUOTA = 3
TOTAL_QUOTA = 7
PORTS = (50000, 50009)
USERS = (("alice", "secret"), ("alice", "secret"), ("alice", "secret"), ("bob", "hunter2"),
         ("bob", "hunter2"))  # fmt: skip
HOST6 = "2001:db8::1"
KINDS = ("plain", "even", "reserve", "token", "token+even", "token+family", "dual", "dual+reserve")
BAD = ("token+even", "token+family", "dual+reserve")  # 400 (§7.2 steps 5 and 8)


@dataclass
class Issued:
    """A token the machine saw in a success response."""

    token: bytes
    relayed: Address
    expires_at: float
    used: bool = False


@dataclass
class Waiting:
    """An Allocate whose OpenRelay the runtime has not answered yet."""

    client: Client
    request: Message
    open: OpenRelay
    kind: str
    issued: Issued | None  # the token it redeems


@dataclass
class FakeRuntime:
    """What the runtime holds: relay sockets and reserved (held) sockets by address."""

    relays: set[Address] = field(default_factory=set)
    held: set[Address] = field(default_factory=set)
    ports: itertools.count[int] = field(default_factory=lambda: itertools.count(20000, 2))


class ReservationMachine(RuleBasedStateMachine):
    port_range: tuple[int, int] | None = PORTS

    def __init__(self) -> None:
        super().__init__()
        config = TurnConfig(
            realm=REALM, relay_host=HOST, relay_host_v6=HOST6, port_range=self.port_range,
            user_quota=USER_QUOTA,
            total_quota=TOTAL_QUOTA,
        )  # fmt: skip
        self.server: TurnServer = make_server(config)
        self.clients = [
            Client(
                self.server,
                address=("203.0.113.7", 40000 + i),
                username=u,
                password=p,
                auto_open=False,
            )
            for i, (u, p) in enumerate(USERS)
        ]
        self.now = 0.0
        self.runtime = FakeRuntime()
        self.waiting: dict[FiveTuple, Waiting] = {}
        self.issued: list[Issued] = []
        self.even: set[FiveTuple] = set()  # allocations made with EVEN-PORT
        self.dual: set[FiveTuple] = set()  # dual allocations made (both, or IPv4 only)

    # --- plumbing ---------------------------------------------------------------------------

    def process(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, CloseRelay):
                address = action.relayed
                assert (address in self.runtime.relays) != (address in self.runtime.held), address
                self.runtime.relays.discard(address)
                self.runtime.held.discard(address)

    def reply_in(self, actions: list[Action], client: Client, request: Message) -> Message | None:
        for action in actions:
            if isinstance(action, SendToClient) and action.five_tuple == client.five_tuple:
                reply = decode_message(action.data)
                if reply.transaction_id == request.transaction_id:
                    return reply
        return None

    def exchange(
        self, client: Client, method: Method, *attributes: Attribute
    ) -> tuple[Message, Message | None, list[Action]]:
        """A signed request (answering a 438 once with its fresh nonce, as clients do):
        the request, its reply (None while the runtime binds) and every action."""
        if client.nonce is None:
            client.authenticate()
        for _ in range(2):
            request = client.request(method, *attributes)
            assert client.key
            actions = client.send_raw(encode_signed(request, client.key))
            reply = self.reply_in(actions, client, request)
            fresh = None if reply is None else reply.get(Nonce)
            if reply is None or error_code(reply) != 438 or fresh is None:
                break
            client.nonce = fresh.value
        return request, reply, actions

    def tick(self) -> None:
        for client in self.clients:
            client.now = self.now

    # --- rules ------------------------------------------------------------------------------

    @rule(
        index=st.integers(0, len(USERS) - 1),
        kind=st.sampled_from(KINDS),
        pick=st.integers(0, 9),
        now=st.booleans(),
    )
    def allocate(self, index: int, kind: str, pick: int, now: bool) -> None:
        """An Allocate of `kind`; with `now` the runtime binds its port at once (as the
        real one does), else later (`runtime_answers`)."""
        client = self.clients[index]
        five_tuple = client.five_tuple
        if five_tuple in self.waiting:
            return  # one Allocate at a time per 5-tuple (a retransmission is answered [])
        issued: Issued | None = None
        attributes: list[Attribute] = [RequestedTransport(17)]
        if kind == "even":
            attributes.append(EvenPort())
        elif kind == "reserve":
            attributes.append(EvenPort(reserve_next=True))
        elif kind.startswith("dual"):  # both families (ADDITIONAL-ADDRESS-FAMILY)
            attributes.append(AdditionalAddressFamily(AddressFamily.IPV6))
            if kind == "dual+reserve":
                attributes.append(EvenPort(reserve_next=True))
        elif kind.startswith("token"):
            live = self.live_tokens()
            tokens = live if live and pick < 6 else self.issued  # mostly one that works
            if tokens and pick < 8:
                issued = tokens[pick % len(tokens)]
                attributes.append(ReservationToken(issued.token))
            else:
                attributes.append(ReservationToken(pick.to_bytes(8, "big")))  # never issued
            if kind == "token+even":
                attributes.append(EvenPort())
            elif kind == "token+family":
                attributes.append(RequestedAddressFamily(AddressFamily.IPV4))
        had = five_tuple in self.server.allocations
        client.opens.clear()
        request, reply, actions = self.exchange(client, Method.ALLOCATE, *attributes)
        self.process(actions)
        if reply is None:
            (open_,) = client.opens
            self.waiting[five_tuple] = Waiting(client, request, open_, kind, issued)
            assert not had
            if kind == "token":
                assert issued is not None and not issued.used and issued.expires_at > self.now
                assert open_.reserved and (open_.host, open_.port) == issued.relayed
                issued.used = True
            else:
                assert not open_.reserved
                assert open_.reserve_next == (kind == "reserve")
                assert open_.dual_host == (HOST6 if kind == "dual" else None)
            event(f"allocate {kind} -> pending")
            if now:
                self.answer(five_tuple, bound=True)
            return
        code = error_code(reply)
        event(f"allocate {kind} -> {code}")
        if had:
            assert code == 437
        elif kind in BAD:
            assert code == 400
        elif kind == "token" and (issued is None or issued.used or issued.expires_at <= self.now):
            assert code == 508
        else:
            assert code in (486, 508)  # quotas, or no port (pair) free in the range

    def live_tokens(self) -> list[Issued]:
        return [i for i in self.issued if not i.used and i.expires_at > self.now]

    @precondition(lambda self: bool(self.live_tokens()))
    @rule(index=st.integers(0, len(USERS) - 1), pick=st.integers(0, 5), now=st.booleans())
    def redeem(self, index: int, pick: int, now: bool) -> None:
        """An Allocate with a token that works (unless the client has an allocation, or
        the quota is reached)."""
        self.allocate(index, "token", pick, now)

    @precondition(lambda self: bool(self.waiting))
    @rule(data=st.data(), bound=st.sampled_from([True, True, True, False]), second=st.booleans())
    def runtime_answers(self, data: st.DataObject, bound: bool, second: bool) -> None:
        self.answer(data.draw(st.sampled_from(sorted(self.waiting, key=repr))), bound, second)

    def answer(self, five_tuple: FiveTuple, bound: bool, second_binds: bool = True) -> None:
        """The runtime binds (or fails to bind) a waiting Allocate's socket(s)."""
        waiting = self.waiting.pop(five_tuple)
        open_ = waiting.open
        server, runtime = self.server, self.runtime
        if open_.reserved:
            runtime.held.discard((open_.host, open_.port))  # the runtime takes it
        if not bound:
            actions = server.relay_failed(five_tuple, self.now)
        else:
            port = open_.port or next(runtime.ports)  # the kernel's (even) choice
            relayed: Address = (open_.host, port)
            reserved: Address | None = (open_.host, port + 1) if open_.reserve_next else None
            second: Address | None = None
            if open_.dual_host is not None and second_binds:  # on the same port, as the node
                second = (open_.dual_host, port)
                runtime.relays.add(second)
            runtime.relays.add(relayed)
            if reserved is not None:
                runtime.held.add(reserved)
            actions = server.relay_opened(
                five_tuple, relayed, self.now, reserved=reserved, second=second
            )  # fmt: skip
        self.process(actions)
        retried = [a for a in actions if isinstance(a, OpenRelay)]
        if retried:  # the pool had another port (pair) to try
            assert not bound and not open_.reserved
            self.waiting[five_tuple] = Waiting(waiting.client, waiting.request, retried[0],
                                               waiting.kind, None)  # fmt: skip
            return
        reply = self.reply_in(actions, waiting.client, waiting.request)
        assert reply is not None
        event(f"bind {'ok' if bound else 'failed'} -> {error_code(reply)}")
        if not bound:
            assert error_code(reply) == 508
            return
        assert reply.message_class is MessageClass.SUCCESS
        addresses = reply.get_all(XorRelayedAddress)
        if waiting.kind == "dual":  # both, or IPv4 and an ADDRESS-ERROR-CODE for IPv6
            assert [a.host for a in addresses] == [HOST, HOST6][: 1 + (second is not None)]
            assert (reply.get(AddressErrorCode) is None) == (second is not None)
            self.dual.add(five_tuple)
        address = addresses[0]
        got = (address.host, address.port)
        if waiting.issued is not None:
            assert got == waiting.issued.relayed  # exactly the reserved address
        if waiting.kind in ("even", "reserve"):
            assert got[1] % 2 == 0
            self.even.add(five_tuple)
        token = reply.get(ReservationToken)
        assert (token is not None) == (waiting.kind == "reserve")
        if token is not None:
            held = (got[0], got[1] + 1)
            self.issued.append(Issued(token.value, held, self.now + RESERVATION_SECONDS))

    @rule(index=st.integers(0, len(USERS) - 1))
    def delete(self, index: int) -> None:
        client = self.clients[index]
        if client.five_tuple not in self.server.allocations:
            return
        _, reply, actions = self.exchange(client, Method.REFRESH, Lifetime(0))
        self.process(actions)
        assert reply is not None and error_code(reply) is None
        assert client.five_tuple not in self.server.allocations
        self.even.discard(client.five_tuple)

    @rule(index=st.integers(0, len(USERS) - 1))
    def delete_ipv6(self, index: int) -> None:
        """Refresh LIFETIME 0 naming IPv6: a dual allocation loses its IPv6 address alone;
        a single-family IPv4 one answers 443 (§7.3)."""
        client = self.clients[index]
        allocation = self.server.allocations.get(client.five_tuple)
        if allocation is None:
            return
        second = allocation.second
        family = RequestedAddressFamily(AddressFamily.IPV6)
        _, reply, actions = self.exchange(client, Method.REFRESH, Lifetime(0), family)
        self.process(actions)
        assert reply is not None
        if second is None:
            assert error_code(reply) == 443
            return
        assert error_code(reply) is None
        assert [a for a in actions if isinstance(a, CloseRelay)] == [CloseRelay(second)]
        assert self.server.allocations[client.five_tuple] is allocation
        assert allocation.second is None

    @rule(index=st.integers(0, len(USERS) - 1))
    def connection_closed(self, index: int) -> None:
        five_tuple = self.clients[index].five_tuple
        self.process(self.server.connection_closed(five_tuple))
        self.even.discard(five_tuple)
        self.orphan(five_tuple)

    def orphan(self, five_tuple: FiveTuple) -> None:
        """The runtime's late answer to an Allocate the core dropped: it closes what it
        bound (both sockets of a reserving one) again."""
        waiting = self.waiting.pop(five_tuple, None)
        if waiting is None:
            return
        open_ = waiting.open
        if open_.reserved:
            self.runtime.held.discard((open_.host, open_.port))
        relayed: Address = (open_.host, open_.port or next(self.runtime.ports))
        reserved = (open_.host, relayed[1] + 1) if open_.reserve_next else None
        second = None if open_.dual_host is None else (open_.dual_host, relayed[1])
        actions = self.server.relay_opened(
            five_tuple, relayed, self.now, reserved=reserved, second=second
        )  # fmt: skip
        extra = [a for a in (reserved, second) if a is not None]
        assert actions == [CloseRelay(relayed), *(CloseRelay(a) for a in extra)]

    @rule(seconds=st.sampled_from([0.5, 5, 15, 29, 30, 31, 45]))
    def advance_time(self, seconds: float) -> None:
        target = self.now + seconds
        for _ in range(1000):
            deadline = self.server.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.process(self.server.handle_timer(self.now))
        self.now = target
        self.process(self.server.handle_timer(target))
        self.tick()

    @precondition(lambda self: not self.server.draining)
    @rule(dice=st.integers(0, 19))
    def shutdown(self, dice: int) -> None:
        if dice:
            return  # rare: it ends the interesting part of a run
        self.process(self.server.shutdown())
        for five_tuple in list(self.waiting):
            self.orphan(five_tuple)
        assert not self.runtime.held and not self.runtime.relays
        self.even.clear()

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def runtime_holds_what_the_core_reserves(self) -> None:
        table = self.server._table  # white-box: the reservations themselves
        reserved = {r.relayed for r in table.reservations.values()}
        redeeming = {(w.open.host, w.open.port) for w in self.waiting.values() if w.open.reserved}
        assert self.runtime.held == reserved | redeeming
        assert self.runtime.relays >= set(self.server.by_relayed)
        for reservation in table.reservations.values():
            assert reservation.expires_at > self.now  # timers ran at every step's end
            assert reservation.relayed[1] % 2 == 1

    @invariant()
    def slots_and_ports_add_up(self) -> None:
        table = self.server._table
        slots: Counter[str] = Counter()
        for allocation in table.allocations.values():
            slots[allocation.identity] += 1
        for pending in table.pending.values():
            slots[pending.auth.credential.identity] += pending.slots
        for reservation in table.reservations.values():
            slots[reservation.identity] += 1
        assert dict(self.server.identity_counts()) == dict(+slots)
        assert all(count <= USER_QUOTA for count in slots.values())
        assert table.slots == sum(slots.values()) <= TOTAL_QUOTA
        if self.server.ports is not None:
            ports_held = (
                len(table.allocations)
                + sum(1 + p.reserve for p in table.pending.values())
                + len(table.reservations)
            )
            assert self.server.ports.in_use == ports_held

    @invariant()
    def dual_allocations_are_keyed_by_both(self) -> None:
        by_relayed = self.server.by_relayed
        for allocation in self.server.allocations.values():
            assert by_relayed[allocation.relayed] is allocation
            if allocation.second is not None:
                assert allocation.five_tuple in self.dual
                assert by_relayed[allocation.second] is allocation
                assert allocation.second[0] == HOST6
        live = self.server.allocations.values()
        assert len(by_relayed) == sum(1 + (a.second is not None) for a in live)

    @invariant()
    def even_allocations_are_even(self) -> None:
        for five_tuple in self.even:
            allocation = self.server.allocations.get(five_tuple)
            assert allocation is None or allocation.relayed[1] % 2 == 0


class KernelPortsMachine(ReservationMachine):
    """The same without a port range: the runtime picks (even) ports."""

    port_range = None


_SETTINGS = settings(max_examples=150, stateful_step_count=40, deadline=None)
ReservationMachine.TestCase.settings = _SETTINGS
KernelPortsMachine.TestCase.settings = _SETTINGS
test_reservations_with_a_port_range = ReservationMachine.TestCase
test_reservations_with_kernel_ports = KernelPortsMachine.TestCase
