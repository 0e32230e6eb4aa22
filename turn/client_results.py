"""Reading what the TURN server answered: a success response or a Data indication as a
typed client event (`trelay.turn.client_events`).

Owns the client's reading of RFC 8656 §7.3 (Allocate success: XOR-RELAYED-ADDRESS, one
or two, XOR-MAPPED-ADDRESS, LIFETIME, RESERVATION-TOKEN), §8.3 (Refresh success:
LIFETIME), §9.3 and §11.3 (CreatePermission and ChannelBind successes, which carry
nothing: the event repeats what the request asked for), §10.4 (Data indication:
XOR-PEER-ADDRESS and DATA) and RFC 8489 §3 (Binding success: XOR-MAPPED-ADDRESS, or
MAPPED-ADDRESS from an RFC 3489 server).

Pure functions, no state: `trelay.turn.client.TurnClientSession` keeps the allocation's
state from the events these return.
"""

from __future__ import annotations

from typing import TypeVar

from trelay.stun.address_attributes import (
    MappedAddress,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from trelay.stun.attributes import Attribute, ChannelNumber, Data, Lifetime, ReservationToken
from trelay.stun.codes import Method
from trelay.stun.message import Message
from trelay.turn.client_events import (
    Allocated,
    BindingSucceeded,
    ChannelBound,
    ClientEvent,
    DataReceived,
    Discarded,
    DiscardReason,
    InvalidResponse,
    PermissionCreated,
    Refreshed,
    SuccessReceived,
    TransactionEnded,
)

A = TypeVar("A", bound=Attribute)


def read_success(request: tuple[Attribute, ...], response: Message) -> TransactionEnded:
    """The event for a success `response` to a request that carried `request` attributes."""
    tid, method = response.transaction_id, response.method
    if method == Method.ALLOCATE:
        return _allocated(response)
    if method == Method.REFRESH:
        lifetime = response.get(Lifetime)
        if lifetime is not None:
            return Refreshed(tid, lifetime.value, response)
        # A deletion may come back without LIFETIME; anything else must carry one.
        asked = first(request, Lifetime)
        if asked is not None and asked.value == 0:
            return Refreshed(tid, 0, response)
        return InvalidResponse(tid, method, "Refresh success without LIFETIME", response)
    if method == Method.CREATE_PERMISSION:
        peers = tuple(a.address for a in request if type(a) is XorPeerAddress)
        return PermissionCreated(tid, peers, response)
    channel, peer = first(request, ChannelNumber), first(request, XorPeerAddress)
    if method == Method.CHANNEL_BIND and channel is not None and peer is not None:
        return ChannelBound(tid, channel.value, peer.address, response)
    if method == Method.BINDING:
        mapped = response.get(XorMappedAddress) or response.get(MappedAddress)
        return BindingSucceeded(tid, None if mapped is None else mapped.address, response)
    return SuccessReceived(tid, method, response)


def _allocated(response: Message) -> TransactionEnded:
    tid = response.transaction_id
    relayed = tuple(a.address for a in response.get_all(XorRelayedAddress))
    lifetime = response.get(Lifetime)
    if not relayed or lifetime is None:
        reason = "Allocate success without XOR-RELAYED-ADDRESS or LIFETIME"
        return InvalidResponse(tid, Method.ALLOCATE, reason, response)
    mapped = response.get(XorMappedAddress)
    token = response.get(ReservationToken)
    return Allocated(
        tid,
        relayed[0],
        None if mapped is None else mapped.address,
        lifetime.value,
        relayed,
        None if token is None else token.value,
        response,
    )


def read_data_indication(message: Message) -> ClientEvent:
    """§10.4: a Data indication as `DataReceived`, or `Discarded` without its two parts."""
    peer, data = message.get(XorPeerAddress), message.get(Data)
    if peer is None or data is None:
        return Discarded(message.transaction_id, DiscardReason.MALFORMED)
    return DataReceived(peer.address, None, data.value)


def first(attributes: tuple[Attribute, ...], kind: type[A]) -> A | None:
    """The first attribute of class `kind` (what `Message.get` does for a message)."""
    for attribute in attributes:
        if type(attribute) is kind:
            return attribute
    return None
