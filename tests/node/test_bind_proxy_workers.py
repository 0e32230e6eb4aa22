"""RFC 6062 across the workers of `trelay serve --workers 2`: a ConnectionBind's data
connection accepted by the other worker than its allocation's is proxied there
(`trelay.node.bind_proxy`).

Which worker accepts a TCP connection is the kernel's SO_REUSEPORT hash, so the test
finds out: an Allocate on a fresh connection shows in its worker's active allocations
(`trelay_worker_allocations_active`); the test deletes that allocation (Refresh 0: the
connection then holds none and may carry a ConnectionBind) and retries, a bounded
number of times, until it has a connection on the other worker than the TCP
allocation's, which the CONNECTION-ID names (its top byte). Bytes then go both ways,
more than one chunk each; closing the data connection closes the peer's. Without the
proxy the other worker answers 400 (no such connection); before, TCP allocations were
refused (442) with workers.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.helpers.supervised import Supervised, running_workers
from tests.helpers.turn_harness import error_code
from tests.helpers.turn_relay import PASSWORD, REALM, USERNAME
from tests.node.test_mobility_workers import active, handovers
from tests.node.test_tcp_relay import (
    RawClient,
    allocate_tcp,
    connected,
    connection,
    echo_peer,
)
from tests.node.test_tcp_relay_early_bytes import connection_bind
from trelay.stun.attributes import ConnectionId, Lifetime, RequestedTransport
from trelay.stun.codes import MessageClass, Method
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.turn.tcp_relay import connection_worker

TIMEOUT = 10.0
TRIES = 40  # a fresh connection lands on either worker: 1 in 2^40 to miss


async def connection_on(worker: int, node: Supervised) -> RawClient:
    """A fresh connection accepted by `worker`, holding no allocation (the caller
    closes it): an Allocate on it shows in that worker's active allocations."""
    [address] = node.addresses("tcp")
    for _ in range(TRIES):
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream(*address)
        client = RawClient(stream)
        before = active(await node.metrics())
        reply = await client.call(Method.ALLOCATE, RequestedTransport(17))
        assert reply.message_class is MessageClass.SUCCESS, reply.get(ErrorCodeAttribute)
        after = active(await node.metrics())
        deleted = await client.call(Method.REFRESH, Lifetime(0))
        assert deleted.message_class is MessageClass.SUCCESS, deleted
        grew = [int(index) for index, count in after.items() if count > before.get(index, 0)]
        assert len(grew) == 1, (before, after)
        if grew == [worker]:
            return client
        await trio.aclose_forcefully(stream)
    raise AssertionError(f"no connection on worker {worker} in {TRIES} tries")


async def test_a_connection_bind_on_the_other_worker_is_proxied(tmp_path: Path) -> None:
    args = ("--workers", "2", "--listen-tcp", "127.0.0.1:0",
            "--user", f"{USERNAME}:{PASSWORD}", "--realm", REALM,
            "--allow-loopback-peers")  # fmt: skip
    async with (
        running_workers(tmp_path, *args) as node,
        echo_peer() as (peer, ended),
    ):
        [server] = node.addresses("tcp")
        async with connection(server) as control:
            await allocate_tcp(control)
            connection_id = await connected(control, peer)
            home = connection_worker(connection_id)
            assert active(await node.metrics())[str(home)] == 1
            data = await connection_on(1 - home, node)
            try:
                reply = await data.call(Method.CONNECTION_BIND, ConnectionId(connection_id))
                assert reply.message_class is MessageClass.SUCCESS, (error_code(reply), reply)
                await data.stream.send_all(b"through the other worker")
                assert await data.receive_bytes(24) == b"through the other worker"
                payload = os.urandom(1 << 20)  # many chunks each way, both at once
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(data.stream.send_all, payload)
                    assert await data.receive_bytes(len(payload)) == payload
            finally:
                await trio.aclose_forcefully(data.stream)
            with trio.fail_after(TIMEOUT):  # the client's end closes the peer's (§5.5)
                done = await ended.receive()
                await done.wait()

            # An id no worker has: proxied to its worker all the same, answered 400.
            other = await connection_on(1 - home, node)
            try:
                unknown = (connection_id ^ 0x00FFFFFF) or 1
                reply = await other.call(Method.CONNECTION_BIND, ConnectionId(unknown))
                assert error_code(reply) == 400, reply
            finally:
                await trio.aclose_forcefully(other.stream)

            # Bytes right behind a proxied ConnectionBind, in the same write, reach the
            # peer first and in order (the proxy replays what its listener read past it).
            again = await connected(control, peer)
            early = await connection_on(1 - connection_worker(again), node)
            try:
                transaction_id, request = connection_bind(early, again)
                behind = b"\xff right behind the bind"
                await early.stream.send_all(request + behind)
                reply = await early._reply(transaction_id)
                assert reply.message_class is MessageClass.SUCCESS, (error_code(reply), reply)
                assert await early.receive_bytes(len(behind)) == behind
            finally:
                await trio.aclose_forcefully(early.stream)
            # All data connections crossed: proxied by one worker, adopted by the other
            # (the 400 came through the owner); no UDP request was handed on.
            crossed = handovers(await node.metrics())
            assert crossed == {"connection_proxied": 3, "connection_adopted": 3,
                               "request_handed_over": 0, "client_captured": 0}  # fmt: skip
        log = await node.log_when(lambda text: "connection proxied" in text)
    assert "connection proxied" in log, log[-3000:]
