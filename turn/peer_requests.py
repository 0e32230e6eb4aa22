"""CreatePermission (RFC 8656 §9.2) and ChannelBind (RFC 8656 §11.2) on an allocation.

Owns the checks and table updates of the two requests that name peers. Both are
all-or-nothing: a request that fails any check changes nothing. Both answer 403 for a
peer the policy denies (design §6) and 443 for a peer of the other address family.
ChannelBind also installs (and keeps alive) the peer's permission (design §5).

Each function returns the encoded response; the server caches and sends it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import ChannelNumber
from trelay.stun.channel_data import is_valid_channel
from trelay.stun.codes import ErrorCode
from trelay.stun.message import Message
from trelay.turn import responses
from trelay.turn.addressing import is_ipv6
from trelay.turn.allocation import Allocation

if TYPE_CHECKING:
    from trelay.turn.server import TurnServer


def _peer_error(
    server: TurnServer, allocation: Allocation, peer: XorPeerAddress, *, with_port: bool
) -> ErrorCode | None:
    if is_ipv6(peer.host) != is_ipv6(allocation.relayed[0]):
        return ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH
    policy = server.policy
    # A permission is per IP (§9); a channel names the peer's port as well.
    allowed = policy.permits_endpoint(*peer.address) if with_port else policy.permits(peer.host)
    if not allowed:
        return ErrorCode.FORBIDDEN
    return None


def create_permission(
    server: TurnServer, request: Message, allocation: Allocation, now: float
) -> bytes:
    key = allocation.key
    peers = request.get_all(XorPeerAddress)
    if not peers:  # §9.2 step 1
        return responses.error(
            request, ErrorCode.BAD_REQUEST, server.software, key, reason="XOR-PEER-ADDRESS missing"
        )
    for peer in peers:  # §9.2 steps 2-3: every address must pass before any is installed
        code = _peer_error(server, allocation, peer, with_port=False)
        if code is not None:
            return responses.error(request, code, server.software, key)
    until = now + server.config.permission_lifetime
    for peer in peers:
        allocation.permit(peer.host, until)
        server.schedule_permission(allocation, peer.host)
    return responses.success(request, (), server.software, key)


def channel_bind(server: TurnServer, request: Message, allocation: Allocation, now: float) -> bytes:
    key = allocation.key
    number = request.get(ChannelNumber)
    peer = request.get(XorPeerAddress)
    reason = None
    if number is None or peer is None:
        reason = "CHANNEL-NUMBER and XOR-PEER-ADDRESS required"
    elif not is_valid_channel(number.value, rfc5766=server.config.rfc5766_channels):
        reason = "Channel number out of range"  # §11.2
    elif allocation.channels.get(number.value, peer.address) != peer.address:
        reason = "Channel bound to another peer"
    elif allocation.peers.get(peer.address, number.value) != number.value:
        reason = "Peer bound to another channel"
    if reason is not None:
        return responses.error(request, ErrorCode.BAD_REQUEST, server.software, key, reason=reason)
    assert number is not None and peer is not None
    code = _peer_error(server, allocation, peer, with_port=True)
    if code is not None:
        return responses.error(request, code, server.software, key)
    allocation.bind_channel(number.value, peer.address, now + server.config.channel_lifetime)
    server.schedule_channel(allocation, number.value)
    server.schedule_permission(allocation, peer.host)
    return responses.success(request, (), server.software, key)
