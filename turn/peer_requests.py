"""CreatePermission (RFC 8656 §9.2) and ChannelBind (RFC 8656 §11.2) on an allocation.

Owns the checks and table updates of the two requests that name peers, and the timers
of what they install. Both are all-or-nothing: a request that fails any check changes
nothing. Both answer 403 for a peer the policy denies (design §6) and 443 for a peer of
the other address family (either family suits a dual allocation). ChannelBind also
installs (and keeps alive) the peer's permission (design §5).

Bounds (issue 15, `TurnConfig`): more XOR-PEER-ADDRESS attributes in one CreatePermission
than `peers_per_request`, a new permission past `permissions_per_allocation` or a new
channel past `channels_per_allocation` get 508 Insufficient Capacity, which §9.2 and
§11.2 name for "some capacity limit", counted by `Quota`. The peer count is checked
first, so a request with thousands of peers costs no work per peer here; refreshing what
an allocation already holds is never refused.

Each function gets the server's state as a `RequestContext` and the peer policy in
force, and returns the response (`Reply`); the server caches and sends it.
"""

from __future__ import annotations

from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import ChannelNumber
from trelay.stun.channel_data import is_valid_channel
from trelay.stun.codes import ErrorCode
from trelay.stun.message import Message
from trelay.turn import responses
from trelay.turn.allocation import Allocation
from trelay.turn.policy import PeerPolicy
from trelay.turn.request_context import RequestContext
from trelay.turn.responses import Reply
from trelay.turn.stats import Quota
from trelay.turn.timers import TimerKind


def _peer_error(
    policy: PeerPolicy, allocation: Allocation, peer: XorPeerAddress, *, with_port: bool
) -> ErrorCode | None:
    if not allocation.serves(peer.host):  # either family of a dual allocation
        return ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH
    # A permission is per IP (§9); a channel names the peer's port as well.
    allowed = policy.permits_endpoint(*peer.address) if with_port else policy.permits(peer.host)
    if not allowed:
        return ErrorCode.FORBIDDEN
    return None


def create_permission(
    context: RequestContext,
    policy: PeerPolicy,
    request: Message,
    allocation: Allocation,
    now: float,
) -> Reply:
    key = allocation.key
    software = context.software
    config = context.config
    peers = request.get_all(XorPeerAddress)
    if not peers:  # §9.2 step 1
        return responses.error(
            request, ErrorCode.BAD_REQUEST, software, key, reason="XOR-PEER-ADDRESS missing"
        )
    if config.peers_per_request and len(peers) > config.peers_per_request:
        return _over_bound(context, request, key, Quota.PEERS_PER_REQUEST, "Too many peers")
    for peer in peers:  # §9.2 steps 2-3: every address must pass before any is installed
        code = _peer_error(policy, allocation, peer, with_port=False)
        if code is not None:
            return responses.error(request, code, software, key)
    limit = config.permissions_per_allocation
    if limit:
        new = {peer.host for peer in peers} - allocation.permissions.keys()
        if new and len(allocation.permissions) + len(new) > limit:
            return _over_bound(context, request, key, Quota.PERMISSIONS, "Too many permissions")
    until = now + config.permission_lifetime
    for peer in peers:
        allocation.permit(peer.host, until)
        _schedule_permission(context, allocation, peer.host)
    return responses.success(request, (), software, key)


def channel_bind(
    context: RequestContext,
    policy: PeerPolicy,
    request: Message,
    allocation: Allocation,
    now: float,
) -> Reply:
    key = allocation.key
    software = context.software
    number = request.get(ChannelNumber)
    peer = request.get(XorPeerAddress)
    reason = None
    if number is None or peer is None:
        reason = "CHANNEL-NUMBER and XOR-PEER-ADDRESS required"
    elif not is_valid_channel(number.value, rfc5766=context.config.rfc5766_channels):
        reason = "Channel number out of range"  # §11.2
    elif allocation.channels.get(number.value, peer.address) != peer.address:
        reason = "Channel bound to another peer"
    elif allocation.peers.get(peer.address, number.value) != number.value:
        reason = "Peer bound to another channel"
    if reason is not None:
        return responses.error(request, ErrorCode.BAD_REQUEST, software, key, reason=reason)
    assert number is not None and peer is not None
    code = _peer_error(policy, allocation, peer, with_port=True)
    if code is not None:
        return responses.error(request, code, software, key)
    config = context.config
    channels, permissions = config.channels_per_allocation, config.permissions_per_allocation
    held = allocation.channels
    if channels and number.value not in held and len(held) >= channels:
        return _over_bound(context, request, key, Quota.CHANNELS, "Too many channels")
    permitted = allocation.permissions
    if permissions and peer.host not in permitted and len(permitted) >= permissions:
        return _over_bound(context, request, key, Quota.PERMISSIONS, "Too many permissions")
    allocation.bind_channel(number.value, peer.address, now + context.config.channel_lifetime)
    deadline = allocation.channel_expiry[number.value]
    context.timers.schedule(deadline, TimerKind.CHANNEL, allocation, number.value)
    _schedule_permission(context, allocation, peer.host)
    return responses.success(request, (), software, key)


def _over_bound(
    context: RequestContext, request: Message, key: bytes, quota: Quota, reason: str
) -> Reply:
    """508 Insufficient Capacity (§9.2, §11.2), counted by the bound that refused."""
    context.stats.quota_rejections[quota] += 1
    return responses.error(
        request, ErrorCode.INSUFFICIENT_CAPACITY, context.software, key, reason=reason
    )


def _schedule_permission(context: RequestContext, allocation: Allocation, peer_ip: str) -> None:
    # The permission's deadline after `permit` (which never shortens one).
    deadline = allocation.permissions[peer_ip]
    context.timers.schedule(deadline, TimerKind.PERMISSION, allocation, peer_ip)
