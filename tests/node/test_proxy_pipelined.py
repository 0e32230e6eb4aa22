"""Requests pipelined right behind an Allocate that a worker proxies to the worker its
RESERVATION-TOKEN names (`trelay.node.bind_proxy` over TCP, `trelay serve --workers 2`):
sent in the same write, before the Allocate's answer, they reach the owner after it and
are answered there, in order. Before, the proxying worker's listener had read them with
the Allocate and dropped them: the client waited for answers that never came.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers.turn_harness import error_code
from tests.helpers.turn_relay import REALM, USERNAME
from tests.node.test_mobility_workers import active
from tests.node.test_reservation_workers import relayed_of, reserved_over_tcp
from tests.node.test_tcp_relay import RawClient
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    Attribute,
    Nonce,
    Realm,
    RequestedTransport,
    ReservationToken,
    Username,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message


def signed(client: RawClient, method: Method, *attributes: Attribute) -> tuple[bytes, bytes]:
    """A request signed with `client`'s nonce: (its transaction id, its bytes)."""
    assert client.nonce is not None
    credentials = (Username(USERNAME), Realm(REALM), Nonce(client.nonce))
    request = Message(method, MessageClass.REQUEST, os.urandom(12), (*attributes, *credentials))
    return request.transaction_id, encode_signed(request, client.key)


async def test_requests_behind_a_proxied_allocate_are_answered_by_the_owner(
    tmp_path: Path,
) -> None:
    async with reserved_over_tcp(tmp_path) as (node, far, rtcp, (host, even), token):
        allocate_id, allocate = signed(
            rtcp, Method.ALLOCATE, RequestedTransport(17), ReservationToken(token)
        )
        permit_id, permit = signed(rtcp, Method.CREATE_PERMISSION, XorPeerAddress(*far.address))
        await rtcp.stream.send_all(allocate + permit)  # one write, no waiting
        redeemed = await rtcp._reply(allocate_id)
        assert relayed_of(redeemed) == (host, even + 1), error_code(redeemed)
        permitted = await rtcp._reply(permit_id)
        assert permitted.message_class is MessageClass.SUCCESS, error_code(permitted)
        assert active(await node.metrics()) == {"0": 2.0, "1": 0.0}
        await far.send((host, even + 1), b"permitted by the pipelined request")
        indication = await rtcp.indication()
        assert indication.method == Method.DATA
