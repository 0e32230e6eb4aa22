"""One allocation's state: its relayed address, permissions and channel bindings.

Owns the per-allocation tables the data path reads (RFC 8656 §2.2, §9, §12):

- `permissions`: peer IP -> expiry (monotonic seconds). Permissions are per IP; the port
  is ignored (§9).
- `channels`: channel number -> peer address, and `peers`: peer address -> channel
  number. The two are kept inverse to each other (a bijection), so relaying a
  ChannelData packet or a peer datagram is one dictionary lookup each way.
- `channel_expiry`: channel number -> expiry.

A channel binding keeps its peer's permission alive for as long as the channel lives
(design §5: aioice and werift refresh channels only every ~500 s and never send
CreatePermission).

`created_at` and `expires_at` are monotonic seconds (the age and lifetime left the
operator's view shows, `trelay.turn.allocation_view`).

Expiry is enforced by the server's timers, which delete what has expired before the
runtime relays another packet at or after that time.

`runtime` is the runtime's own record of the allocation (its relay socket's senders),
handed over when the relay socket is bound (`TurnServer.relay_opened`) so that the data
path reaches it from the allocation with no second lookup. The core never reads it.
"""

from __future__ import annotations

from trelay.turn.addressing import Address, FiveTuple


class Allocation:
    __slots__ = (
        "channel_expiry",
        "channels",
        "created_at",
        "expires_at",
        "five_tuple",
        "identity",
        "key",
        "peers",
        "permissions",
        "relayed",
        "reported_relayed",
        "runtime",
        "username",
    )

    def __init__(
        self,
        five_tuple: FiveTuple,
        relayed: Address,
        reported_relayed: Address,
        username: str,
        identity: str,
        key: bytes,
        expires_at: float,
        *,
        created_at: float | None = None,
        runtime: object = None,
    ) -> None:
        self.five_tuple = five_tuple
        self.relayed = relayed  # the bound socket address
        self.reported_relayed = reported_relayed  # what XOR-RELAYED-ADDRESS says (NAT)
        self.username = username
        self.identity = identity
        self.key = key
        self.expires_at = expires_at
        # When the allocation was made (monotonic seconds; the admin view's age).
        self.created_at = expires_at if created_at is None else created_at
        self.permissions: dict[str, float] = {}
        self.channels: dict[int, Address] = {}
        self.peers: dict[Address, int] = {}
        self.channel_expiry: dict[int, float] = {}
        # Opaque to the core: set once here, never read or changed by it.
        self.runtime = runtime

    def permit(self, peer_ip: str, until: float) -> None:
        """Install or refresh a permission; never shortens an existing one."""
        if self.permissions.get(peer_ip, 0.0) < until:
            self.permissions[peer_ip] = until

    def bind_channel(self, number: int, peer: Address, until: float) -> None:
        """Install or refresh a channel; the caller checked the bijection (§11.2)."""
        self.channels[number] = peer
        self.peers[peer] = number
        self.channel_expiry[number] = until
        self.permit(peer[0], until)

    def unbind_channel(self, number: int) -> None:
        peer = self.channels.pop(number)
        del self.peers[peer]
        del self.channel_expiry[number]
