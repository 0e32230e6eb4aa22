"""RFC 6062 §5.4: bytes a client sends right behind its ConnectionBind (in the same
write, before the answer) reach the peer first and in order, whatever they look like
(`trelay.node.stream_listener`: frames cut one at a time on a connection holding no
allocation, the rest replayed to the splice). Before, they were cut as STUN/ChannelData
with the ConnectionBind and lost: the connection closed as malformed or as lost framing,
or a STUN-looking message among them was answered instead of relayed.
"""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from tests.helpers.turn_harness import error_code
from tests.helpers.turn_relay import REALM, USERNAME
from tests.node.test_tcp_relay import (
    TIMEOUT,
    RawClient,
    allocate_tcp,
    connected,
    connection,
    echo_peer,
    node,
)
from trelay.stun.attributes import ConnectionId, Nonce, Realm, Username
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, encode_message
from trelay.turn.addressing import Address

BINDING = encode_message(Message(Method.BINDING, MessageClass.REQUEST, bytes(12), ()))


def connection_bind(data: RawClient, connection_id: int) -> tuple[bytes, bytes]:
    """A signed ConnectionBind with `data`'s nonce: (its transaction id, the bytes)."""
    assert data.nonce is not None
    credentials = (Username(USERNAME), Realm(REALM), Nonce(data.nonce))
    request = Message(
        Method.CONNECTION_BIND, MessageClass.REQUEST, os.urandom(12),
        (ConnectionId(connection_id), *credentials),
    )  # fmt: skip
    return request.transaction_id, encode_signed(request, data.key)


async def challenged(address: Address) -> RawClient:
    """A new connection holding its nonce (a ConnectionBind without credentials: 401)."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*address)
    data = RawClient(stream)
    reply = await data.call(Method.CONNECTION_BIND, ConnectionId(1))
    assert error_code(reply) == 400, reply  # the nonce was taken on the way; no such id
    return data


async def bind_and_send(address: Address, connection_id: int, *writes: bytes) -> RawClient:
    """A data connection whose signed ConnectionBind leaves in one write with the first
    of `writes` behind it, then the others, before its answer is read."""
    data = await challenged(address)
    transaction_id, request = connection_bind(data, connection_id)
    await data.stream.send_all(request + writes[0])
    for each in writes[1:]:
        await data.stream.send_all(each)
    reply = await data._reply(transaction_id)
    assert reply.message_class is MessageClass.SUCCESS, (error_code(reply), reply)
    return data


@pytest.mark.parametrize(
    "early",
    [
        [b"\xff not STUN framing at all"],  # malformed as STUN: the connection closed
        [b"GET / HTTP/1.1\r\n\r\n"],  # 'G' reads as ChannelData: lost framing
        [BINDING, b"tail"],  # a STUN request: relayed as bytes, not answered
        [os.urandom(200_000)],  # more than a read and a splice chunk
    ],
    ids=["garbage", "channel-like", "stun-like", "large"],
)
async def test_bytes_behind_the_connection_bind_reach_the_peer_in_order(
    early: list[bytes],
) -> None:
    async with node() as local, echo_peer() as (peer, _), connection(local.tcp) as control:
        await allocate_tcp(control)
        connection_id = await connected(control, peer)
        data = await bind_and_send(local.tcp, connection_id, *early)
        try:
            expected = b"".join(early)
            assert await data.receive_bytes(len(expected)) == expected
            await data.stream.send_all(b"and after")
            assert await data.receive_bytes(9) == b"and after"
        finally:
            await trio.aclose_forcefully(data.stream)


async def test_a_connection_bind_split_across_writes_keeps_the_bytes_behind_it() -> None:
    async with node() as local, echo_peer() as (peer, _), connection(local.tcp) as control:
        await allocate_tcp(control)
        connection_id = await connected(control, peer)
        data = await challenged(local.tcp)
        transaction_id, request = connection_bind(data, connection_id)
        await data.stream.send_all(request[:7])  # an unfinished header first
        await trio.testing.wait_all_tasks_blocked()
        await data.stream.send_all(request[7:] + b"\x00\x01early")
        reply = await data._reply(transaction_id)
        assert reply.message_class is MessageClass.SUCCESS, (error_code(reply), reply)
        try:
            assert await data.receive_bytes(7) == b"\x00\x01early"
        finally:
            await trio.aclose_forcefully(data.stream)
