"""No growth without a cause (issue 15): the core's tables return to their size.

Hundreds of thousands of Refresh, CreatePermission and ChannelBind requests (and some
allocation churn) go through the pure core, as a runtime drives it (`handle_timer` at
each deadline), on a few live allocations whose permissions and channels stay the same.
Afterwards, once the response cache's time has passed, every table the core holds
(`TurnServer.state_sizes`) has the size it had after the first round: nothing grows
with the number of requests answered. Before the fix the timer heap kept one entry per
Refresh and per permitted peer until its deadline (up to an hour later), and entries of
ended allocations kept those allocations alive: the ~200 bytes per Refresh the issue
measured.
"""

from __future__ import annotations

import random

from tests.helpers.turn_harness import REALM, Client, Clock, make_server
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    Attribute,
    ChannelNumber,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.integrity import encode_signed
from trelay.stun.message import HEADER, Message, decode_message, decode_message_type
from trelay.turn.actions import Action, OpenRelay, SendToClient
from trelay.turn.addressing import ClientTransport
from trelay.turn.server import TurnServer

REQUESTS = 200_000  # Refresh, CreatePermission and ChannelBind, in turns
STEP = 0.005  # seconds of `now` between two requests: 1000 s in all, past every lifetime
PEERS = [("127.0.0.1", 4000), ("127.0.0.2", 4001), ("127.0.0.3", 4002)]
CHANNELS = [0x4000, 0x4001]
CACHE_SECONDS = 40.0


def _code(actions: list[Action]) -> int:
    """The one response in `actions`: 0 for success, else its error code."""
    sent = [a for a in actions if isinstance(a, SendToClient)]
    assert len(sent) == 1, actions
    _, message_class = decode_message_type(HEADER.unpack_from(sent[0].data)[0])
    if message_class is MessageClass.SUCCESS:
        return 0
    error = decode_message(sent[0].data).get(ErrorCodeAttribute)
    assert error is not None
    return error.code


class Driver:
    """Signed requests from a few clients, with the runtime's timer loop."""

    def __init__(self, server: TurnServer, clients: list[Client]) -> None:
        self.server = server
        self.clients = clients
        self.now = 0.0
        self.rng = random.Random(15)
        self.keys = {c.five_tuple: c.key for c in clients}  # derived once, not per request

    def run_timers(self) -> None:
        for _ in range(10_000):
            deadline = self.server.next_deadline()
            if deadline is None or deadline > self.now:
                return
            self.server.handle_timer(self.now)
        raise AssertionError("timers did not settle")

    def request(self, client: Client, method: Method, *attributes: Attribute) -> int:
        """The request's answer code; a 438 (the client's nonces retire when its allocation
        ends) is answered once with its fresh NONCE, as real clients do."""
        code, fresh = self._send(client, method, *attributes)
        if code == 438 and fresh is not None:
            client.nonce = fresh
            code, _ = self._send(client, method, *attributes)
        return code

    def _send(
        self, client: Client, method: Method, *attributes: Attribute
    ) -> tuple[int, str | None]:
        assert client.nonce is not None
        extra = (Username(client.username), Realm(REALM), Nonce(client.nonce))
        message = Message(
            method, MessageClass.REQUEST, self.rng.randbytes(12), (*attributes, *extra)
        )
        actions = self.server.handle_message(
            encode_signed(message, self.keys[client.five_tuple]), client.five_tuple, self.now
        )
        opened = [a for a in actions if isinstance(a, OpenRelay)]
        for action in opened:
            relayed = (action.host, client.relay_port)
            actions += self.server.relay_opened(client.five_tuple, relayed, self.now)
        code = _code(actions)
        if code != 438:
            return code, None
        [reply] = [a for a in actions if isinstance(a, SendToClient)]
        nonce = decode_message(reply.data).get(Nonce)
        return code, None if nonce is None else nonce.value

    def allocate(self, client: Client) -> None:
        assert self.request(client, Method.ALLOCATE, RequestedTransport(17)) == 0

    def round(self, client: Client, turn: int) -> None:
        """One request of `client`'s cycle: Refresh, CreatePermission, ChannelBind."""
        kind = turn % 3
        if kind == 0:
            assert self.request(client, Method.REFRESH, Lifetime(600)) == 0
        elif kind == 1:
            peers = (XorPeerAddress(*p) for p in PEERS)
            assert self.request(client, Method.CREATE_PERMISSION, *peers) == 0
        else:
            channel = CHANNELS[(turn // 3) % len(CHANNELS)]
            peer = PEERS[(turn // 3) % len(CHANNELS)]
            attributes = (ChannelNumber(channel), XorPeerAddress(*peer))
            assert self.request(client, Method.CHANNEL_BIND, *attributes) == 0

    def churn(self, client: Client) -> None:
        """Delete `client`'s allocation and make a new one, with the same peers."""
        assert self.request(client, Method.REFRESH, Lifetime(0)) == 0
        self.allocate(client)
        for turn in range(6):
            self.round(client, turn)

    def settle(self) -> dict[str, int]:
        """Past the response cache's time, timers run: the tables' sizes then.

        The timer heap's length is left out: it may hold stale entries, up to as many
        as the live ones plus a fixed slack (checked apart)."""
        self.now += CACHE_SECONDS + 1
        self.run_timers()
        sizes = self.server.state_sizes()
        assert sizes["timer_entries"] <= 2 * sizes["timers_live"] + 64, sizes
        del sizes["timer_entries"]
        return sizes


def _driver() -> Driver:
    server = make_server(clock=Clock())
    transports = [ClientTransport.UDP, ClientTransport.TCP]
    clients = [
        Client(server, (f"203.0.113.{i + 1}", 40000 + i), transport=transports[i % 2])
        for i in range(4)
    ]
    driver = Driver(server, clients)
    for client in clients:
        client.authenticate()  # static user, fixed wall clock: the nonce stays valid
        driver.allocate(client)
        for turn in range(6):
            driver.round(client, turn)
        # Once through a delete: its 438 (the address's nonces retire) and the retired
        # entry are in the baseline, as they are in a node that has run a while.
        driver.churn(client)
    return driver


def test_refresh_permission_and_channel_requests_leave_no_state_behind() -> None:
    driver = _driver()
    server, clients = driver.server, driver.clients
    baseline = driver.settle()
    assert baseline["allocations"] == len(clients)
    assert baseline["permissions"] == len(clients) * len(PEERS)
    assert baseline["channels"] == len(clients) * len(CHANNELS)
    assert baseline["responses"] == 0
    peak_timers = 0
    for turn in range(REQUESTS):
        driver.now += STEP
        driver.run_timers()
        client = clients[turn % len(clients)]
        driver.round(client, turn // len(clients))
        if turn % 20_000 == 19_999:
            driver.churn(clients[(turn // 20_000) % len(clients)])
        if turn % 1000 == 0:
            sizes = server.state_sizes()
            peak_timers = max(peak_timers, sizes["timer_entries"])
            # While it runs, only the bounded caches hold more than the live state.
            assert sizes["responses"] <= server.config.response_cache_size
            assert sizes["timer_entries"] <= 2 * sizes["timers_live"] + 64, sizes
            assert sizes["timer_owners"] == sizes["allocations"], sizes
    final = driver.settle()
    assert final == baseline, {k: (baseline[k], v) for k, v in final.items() if v != baseline[k]}
    # Every live thing has exactly one timer: the allocations, permissions and channels.
    assert final["timers_live"] == len(clients) * (1 + len(PEERS) + len(CHANNELS))
    assert peak_timers <= 2 * final["timers_live"] + 64


def test_ended_allocations_leave_no_timer_behind() -> None:
    """Allocate and delete, thousands of times: no timer keeps a deleted allocation."""
    driver = _driver()
    baseline = driver.settle()
    client = driver.clients[0]
    for _ in range(3000):
        driver.now += 0.01
        driver.run_timers()
        driver.churn(client)
    final = driver.settle()
    assert final == baseline, {k: (baseline[k], v) for k, v in final.items() if v != baseline[k]}


def test_stale_timers_still_expire_what_they_name() -> None:
    """A lifetime shortened by Refresh ends the allocation then, not at the old deadline,
    and one extended by Refresh outlives its first deadline."""
    driver = _driver()
    short, extended = driver.clients[0], driver.clients[1]
    assert driver.request(short, Method.REFRESH, Lifetime(3600)) == 0
    assert driver.request(short, Method.REFRESH, Lifetime(60)) == 0
    driver.now += 300
    assert driver.request(extended, Method.REFRESH, Lifetime(3600)) == 0
    driver.now += 400  # past the first 600 s of both
    driver.run_timers()
    assert short.five_tuple not in driver.server.allocations
    assert extended.five_tuple in driver.server.allocations
    driver.now += 3600
    driver.run_timers()
    sizes = driver.server.state_sizes()
    assert sizes["allocations"] == sizes["permissions"] == sizes["channels"] == 0
    assert sizes["timer_entries"] == sizes["timers_live"] == sizes["timer_owners"] == 0
