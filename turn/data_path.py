"""Relaying application data: Send and Data indications, ChannelData towards the client.

Owns RFC 8656 §10.2 (Send indication from the client: drop unless the allocation has a
permission for the peer), §10.3 (a datagram from a peer without a channel becomes a
Data indication, with no FINGERPRINT or integrity, which the RFC does not ask for) and
§12.6 (a datagram from a peer with a channel becomes ChannelData, padded to 4 bytes
over TCP and TLS, §12.5).

The runtime's hot loop reads `Allocation.channels`/`peers`/`permissions` itself; these
functions serve the slower paths and the tests, and return plain values: a refused Send
indication says why (`Drop`), so the counters need not work it out again.
"""

from __future__ import annotations

from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import Data, DontFragment
from trelay.stun.channel_data import encode_channel_data
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, encode_message, new_transaction_id
from trelay.turn.actions import SendToPeer
from trelay.turn.addressing import Address
from trelay.turn.allocation import Allocation
from trelay.turn.policy import PeerPolicy
from trelay.turn.stats import Drop


def send_indication(
    allocation: Allocation | None,
    message: Message,
    policy: PeerPolicy,
    dont_fragment_supported: bool = False,
) -> SendToPeer | Drop:
    """§10.2: relay DATA to XOR-PEER-ADDRESS, or drop silently, saying why.

    DONT-FRAGMENT asks for the DF bit; a server that cannot set it discards the
    indication, as for any unknown comprehension-required attribute (RFC 8489 §6.3.2).
    """
    if allocation is None:
        return Drop.NO_ALLOCATION
    peer = message.get(XorPeerAddress)
    data = message.get(Data)
    if peer is None or data is None:
        return Drop.MALFORMED
    if not policy.permits_endpoint(*peer.address):
        return Drop.DENIED_PEER  # design §6, before the permission: a denied peer has none
    if not allocation.serves(peer.host):
        return Drop.NO_PERMISSION  # a permission of the other family cannot exist (§9.1)
    if peer.host not in allocation.permissions:
        return Drop.NO_PERMISSION
    dont_fragment = message.get(DontFragment) is not None
    if dont_fragment and not dont_fragment_supported:
        return Drop.NO_PERMISSION  # not relayable here, counted with the unpermitted
    # From the relayed address of the peer's family (a dual allocation has two).
    relayed = allocation.relayed_for(peer.host)
    return SendToPeer(relayed, peer.address, data.value, dont_fragment)


def peer_datagram(allocation: Allocation, peer: Address, data: bytes) -> bytes | None:
    """What to send the client for `data` from `peer`: ChannelData, Data indication, None."""
    pad = allocation.five_tuple.transport.is_stream
    channel = allocation.peers.get(peer)
    if channel is not None:
        return encode_channel_data(channel, data, pad=pad)
    if peer[0] not in allocation.permissions:
        return None  # §10.3: no permission, silently discarded
    indication = Message(
        Method.DATA,
        MessageClass.INDICATION,
        new_transaction_id(),
        (XorPeerAddress(peer[0], peer[1]), Data(data)),
    )
    return encode_message(indication)
