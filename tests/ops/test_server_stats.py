"""The core's counters (`trelay.turn.stats.ServerStats`) and their metrics, from the pure harness.

Auth failures by reason (missing, bad request, stale nonce, wrong credentials, expired,
revoked, lifetime too long), quota rejections (user, total, ports), the relay port gauge,
drops the core decides (rate limit, malformed, Send indications), responses by method and code, and
the multi-worker sum of snapshots.
"""

from __future__ import annotations

import dataclasses

import trio

from tests.helpers.turn_harness import REALM, Client, Clock, error_code, make_server
from trelay.node.turn_node import TurnNode
from trelay.ops.metrics import NodeCollector, combine, snapshot
from trelay.stun.attributes import RequestedTransport, Software
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn import responses
from trelay.turn.addressing import ClientTransport
from trelay.turn.auth import AuthFailure, Rejected
from trelay.turn.config import TurnConfig
from trelay.turn.server import TurnServer
from trelay.turn.stats import OTHER_METHOD, SUCCESS_CODE, Drop, Quota, ServerStats

PEER = ("127.0.0.1", 40000)  # loopback: allowed by the harness policy
DENIED = ("10.0.0.1", 4000)  # private: denied by the policy


def code_count(server: TurnServer, method: int, code: int) -> int:
    return server.stats.responses.get((method, code), 0)


def test_auth_failures_by_reason() -> None:
    clock = Clock()
    server = make_server(clock=clock)
    alice = Client(server)
    alice.allocate()  # 401 (missing), then 200
    wrong = Client(server, address=("203.0.113.6", 50000), password="wrong")
    wrong.allocate()  # 401 missing, 401 wrong credentials
    stale = Client(server, address=("203.0.113.7", 50000))
    stale.authenticate()
    stale.nonce = alice.nonce  # bound to alice's address: stale for this one (438)
    stale.send(stale.request(Method.ALLOCATE, RequestedTransport(17)))
    bad = Client(server, address=("203.0.113.8", 50000))
    bad.nonce = "x"
    # Signed but without USERNAME/REALM/NONCE: 400 (RFC 8489 §9.2.4 step 2).
    bad.send(bad.request(Method.ALLOCATE, RequestedTransport(17), sign=False), sign=True)
    expired = Client(server, address=("203.0.113.10", 50000))
    expired.use_rest("carol", clock.unix - 1)
    expired.allocate()  # 401 missing, then 401 "Credentials expired"
    too_long = Client(server, address=("203.0.113.11", 50000))
    too_long.use_rest("dave", clock.unix + 10 * 365 * 86400)
    too_long.allocate()  # 401 missing, then 401 "Credential lifetime too long"
    failures = server.stats.auth_failures
    assert failures == {
        AuthFailure.MISSING: 5,
        AuthFailure.WRONG_CREDENTIALS: 1,
        AuthFailure.STALE_NONCE: 1,
        AuthFailure.BAD_REQUEST: 1,
        AuthFailure.EXPIRED: 1,
        AuthFailure.REVOKED: 0,
        AuthFailure.TOO_LONG: 1,
    }
    # The first request of each client is a challenge, not a failure.
    assert server.stats.challenges == 5
    assert server.stats.failed_authentications() == {
        AuthFailure.WRONG_CREDENTIALS: 1,
        AuthFailure.STALE_NONCE: 1,
        AuthFailure.BAD_REQUEST: 1,
        AuthFailure.EXPIRED: 1,
        AuthFailure.REVOKED: 0,
        AuthFailure.TOO_LONG: 1,
    }
    assert code_count(server, Method.ALLOCATE, 401) == 8
    assert code_count(server, Method.ALLOCATE, 438) == 1
    assert code_count(server, Method.ALLOCATE, 400) == 1
    assert code_count(server, Method.ALLOCATE, 200) == 1


def test_each_rejection_names_the_check_that_failed() -> None:
    """`Rejected.failure` is the authenticator's own word for what failed: the counters
    read it, never the reason text. Revocation through `use_revocation_check`."""
    server = make_server()
    unix_now = Clock().unix

    def check(client: Client, message: Message, *, sign: bool = True) -> AuthFailure | None:
        raw = encode_signed(message, client.key) if sign else encode_message(message)
        result = server.auth.check(decode_message(raw), raw, client.address, unix_now)
        if isinstance(result, Rejected):
            assert result.anonymous is (result.failure is AuthFailure.MISSING)
            return result.failure
        return None

    alice = Client(server)
    alice.authenticate()
    allocate = (Method.ALLOCATE, RequestedTransport(17))
    assert check(alice, alice.request(*allocate), sign=False) is AuthFailure.MISSING
    assert check(alice, alice.request(*allocate, sign=False)) is AuthFailure.BAD_REQUEST
    assert check(alice, alice.request(*allocate)) is None
    elsewhere = Client(server, address=("203.0.113.30", 1), nonce=alice.nonce)
    assert check(elsewhere, elsewhere.request(*allocate)) is AuthFailure.STALE_NONCE
    wrong = Client(server, password="wrong", nonce=alice.nonce)
    assert check(wrong, wrong.request(*allocate)) is AuthFailure.WRONG_CREDENTIALS
    server.auth.use_revocation_check(lambda identity, _: identity == "alice")
    assert check(alice, alice.request(*allocate)) is AuthFailure.REVOKED
    server.auth.use_revocation_check(None)
    assert check(alice, alice.request(*allocate)) is None
    # And counted by that word when the server answers.
    server.auth.use_revocation_check(lambda identity, _: identity == "alice")
    assert error_code(alice.allocate()) == 401
    assert server.stats.auth_failures[AuthFailure.REVOKED] == 1


def test_quota_rejections_by_quota() -> None:
    server = make_server(TurnConfig(realm=REALM, relay_host="198.51.100.1", user_quota=1))
    Client(server).allocate()
    again = Client(server, address=("203.0.113.5", 50001)).allocate()
    assert again.message_class is MessageClass.ERROR
    total = make_server(TurnConfig(realm=REALM, relay_host="198.51.100.1", total_quota=1))
    Client(total).allocate()
    Client(total, address=("203.0.113.6", 50000), username="bob", password="hunter2").allocate()
    ports = make_server(
        TurnConfig(realm=REALM, relay_host="198.51.100.1", port_range=(50000, 50000))
    )
    Client(ports).allocate()
    Client(ports, address=("203.0.113.6", 50000), username="bob", password="hunter2").allocate()
    assert server.stats.quota_rejections[Quota.USER] == 1
    assert total.stats.quota_rejections[Quota.TOTAL] == 1
    assert ports.stats.quota_rejections[Quota.PORTS] == 1
    assert code_count(server, Method.ALLOCATE, 486) == 1
    assert code_count(total, Method.ALLOCATE, 508) == code_count(ports, Method.ALLOCATE, 508) == 1


def test_core_drops_by_reason() -> None:
    server = make_server(TurnConfig(realm=REALM, relay_host="198.51.100.1",
                                    unauthenticated_rate=1, unauthenticated_burst=1))  # fmt: skip
    alice = Client(server)
    alice.send_indication(PEER, b"no allocation yet")
    alice.allocate()
    alice.send_indication(PEER, b"no permission yet")
    alice.send_indication(DENIED, b"denied")
    alice.permit(PEER)
    assert alice.send_indication(PEER, b"relayed") != []
    alice.send_raw(b"\x00\x01\x00\x00not stun at all")  # no magic cookie: malformed
    flood = Client(server, address=("203.0.113.99", 1))
    request = Message(
        Method.ALLOCATE, MessageClass.REQUEST, b"\x01" * 12, (RequestedTransport(17),)
    )
    assert flood.send_raw(encode_message(request)) != []  # the burst of one
    assert (
        flood.send_raw(encode_message(dataclasses.replace(request, transaction_id=b"\x02" * 12)))
        == []
    )
    assert server.stats.dropped == {
        Drop.NO_ALLOCATION: 1, Drop.NO_PERMISSION: 1, Drop.DENIED_PEER: 1, Drop.MALFORMED: 1,
        Drop.RATE_LIMITED: 1, Drop.NO_CHANNEL: 0, Drop.SEND_FAILED: 0, Drop.QUEUE_FULL: 0,
        Drop.REFLECTION_LIMITED: 0, Drop.LOST_FRAMING: 0, Drop.BANDWIDTH_ALLOCATION: 0,
        Drop.BANDWIDTH_IDENTITY: 0, Drop.BANDWIDTH_NODE: 0,
    }  # fmt: skip


def test_responses_are_counted_by_the_method_and_code_the_core_decided() -> None:
    server = make_server()
    alice = Client(server)
    alice.allocate()
    assert code_count(server, Method.ALLOCATE, 200) == 1
    assert code_count(server, Method.ALLOCATE, 401) == 1
    challenge = Client(server, address=("203.0.113.50", 1))
    challenge.authenticate()
    assert code_count(server, Method.ALLOCATE, 401) == 2
    refresh = alice.request(Method.REFRESH)
    alice.send(refresh)
    alice.send(refresh)  # answered again from the response cache: counted again
    assert code_count(server, Method.REFRESH, 200) == 2
    counted = dict(server.stats.responses)
    response = encode_message(Message(Method.BINDING, MessageClass.SUCCESS, b"\x00" * 12))
    assert challenge.send_raw(response) == []  # a response, not a request: no answer
    assert challenge.send_raw(b"\x40\x01\x00\x00") == []  # ChannelData: no answer
    assert server.stats.responses == counted
    # Any other method: one bounded key, whatever the method number.
    unknown = Message(0x0FF, MessageClass.REQUEST, b"\x01" * 12)
    assert error_code(challenge.send(unknown, sign=False)) == 400
    assert code_count(server, OTHER_METHOD, 400) == 1
    reply = responses.success(unknown, (), Software("test"), None)
    assert (reply.method, reply.code) == (0x0FF, SUCCESS_CODE)
    stats = ServerStats()
    stats.answered(reply)
    assert stats.responses == {(OTHER_METHOD, 200): 1}


async def test_relay_ports_gauge_and_the_sum_of_worker_snapshots() -> None:
    config = TurnConfig(realm=REALM, relay_host="198.51.100.1", port_range=(50000, 50009))
    async with trio.open_nursery() as nursery:
        node = TurnNode(make_server(config), nursery)  # no task started: the core only
        Client(node.server).allocate()
        Client(node.server, address=("203.0.113.6", 50000), username="bob",
               password="hunter2").allocate()  # fmt: skip
        node.server.stats.observe_request(Method.ALLOCATE, 0.002)
        one = snapshot(node)
        assert one.relay_ports == {("free",): 8, ("in_use",): 2}
        assert one.allocations_active[(ClientTransport.UDP.value,)] == 2
        two = combine([one, one])
        assert two.relay_ports == {("free",): 16, ("in_use",): 4}
        assert two.requests[("allocate", "200")] == 4
        assert two.allocations_active[("udp",)] == 4
        counts, seconds = two.latency["allocate"]
        assert sum(counts) == 2 and seconds == 0.004
        # A collector over several workers publishes the sum.
        collector = NodeCollector(lambda: [one, one], ready=lambda: True)
        families = {f.name: f for f in collector.collect()}
        in_use = [s.value for s in families["trelay_relay_ports"].samples
                  if s.labels == {"state": "in_use"}]  # fmt: skip
        assert in_use == [4]
