"""The pieces of RFC 6062 across workers (`trelay.node.bind_proxy`): which worker a
ConnectionBind names, and the handoff channel carrying a connection and its client."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from trelay.node.bind_proxy import BindProxy, Handoffs, handoff_pairs
from trelay.stun.attributes import ConnectionId, RequestedTransport, ReservationToken
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, encode_message, new_transaction_id
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.reservations import new_token
from trelay.turn.tcp_relay import TcpRelay, connection_worker

CLIENT = FiveTuple(ClientTransport.TLS, ("127.0.0.1", 40000), ("127.0.0.1", 5349))


@contextmanager
def channel(workers: int, index: int) -> Iterator[Handoffs]:
    """Worker `index`'s ends, as a worker gets them (duplicates of the supervisor's)."""
    pairs = handoff_pairs(workers)
    fds = (pairs[index][0].fileno(), *(sending.fileno() for _, sending in pairs))
    handoffs = Handoffs.from_fds(tuple(os.dup(fd) for fd in fds))
    try:
        yield handoffs
    finally:
        for sock in (handoffs.receiving, *handoffs.sending):
            sock.close()
        for pair in pairs:
            for sock in pair:
                sock.close()


def bind_request(connection_id: int) -> bytes:
    attributes = (ConnectionId(connection_id),)
    return encode_message(
        Message(Method.CONNECTION_BIND, MessageClass.REQUEST, new_transaction_id(), attributes)
    )


def test_connection_ids_name_their_worker() -> None:
    relay = TcpRelay(worker=5)
    ids = {relay._new_id() for _ in range(64)}
    assert {connection_worker(each) for each in ids} == {5}
    assert len(ids) > 1  # 24 random bits
    with pytest.raises(ValueError, match="worker index 256"):
        TcpRelay(worker=256)


def test_the_owner_of_a_connection_bind() -> None:
    with channel(3, 0) as handoffs:
        proxy = BindProxy(0, handoffs)
        assert proxy.owner(bind_request(2 << 24 | 0x1234)) == 2
        assert proxy.owner(bind_request(0x1234)) is None  # ours: answered here
        assert proxy.owner(bind_request(7 << 24 | 1)) is None  # no such worker: 400 here
        allocate = Message(
            Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), (RequestedTransport(6),)
        )
        assert proxy.owner(encode_message(allocate)) is None
        no_id = Message(Method.CONNECTION_BIND, MessageClass.REQUEST, new_transaction_id())
        assert proxy.owner(encode_message(no_id)) is None
        assert proxy.owner(b"\x00\x0b garbage") is None


def test_a_handoff_carries_the_connection_and_its_client() -> None:
    with channel(2, 1) as receiver:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            assert receiver.send(1, CLIENT, theirs)
            handoff = receiver.receive()
            assert handoff is not None
            five_tuple, sock = handoff
            with sock:
                assert five_tuple == CLIENT
                sock.sendall(b"through the handed descriptor")
                assert ours.recv(100) == b"through the handed descriptor"
        assert receiver.receive() is None  # nothing more queued


def test_a_malformed_handoff_is_dropped_with_its_descriptor() -> None:
    with channel(2, 0) as handoffs:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            socket.send_fds(handoffs.sending[0], [b"not|a|handoff"], [theirs.fileno()])
            theirs.close()
            assert handoffs.receive() is None
            assert ours.recv(1) == b""  # every copy of the other end is closed: EOF


def test_an_allocate_with_another_workers_token_belongs_there() -> None:
    with channel(3, 0) as handoffs:
        proxy = BindProxy(0, handoffs)
        token = new_token(2, ())
        allocate = Message(
            Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(),
            (RequestedTransport(17), ReservationToken(token)),
        )  # fmt: skip
        assert proxy.owner(encode_message(allocate)) == 2
        assert BindProxy(2, handoffs).owner(encode_message(allocate)) is None  # its own
