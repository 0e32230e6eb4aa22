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

A dual allocation (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY) has a `second` relayed
address of the other family (IPv6 beside the IPv4 `relayed`). Its permissions and
channels are per family the way they are keyed: a peer of one family is reached from
(and only from) the relayed address of that family (`relayed_for`), and its
permission, an IP of that family, can only match peers of it. One lifetime covers
both; a single-family allocation has `second` None and pays nothing for it. Either
family may be deleted alone (§7.3, a Refresh with REQUESTED-ADDRESS-FAMILY and LIFETIME
0): the second one's socket closes (`drop_second`); the first one is withdrawn
(`withdraw_first`, `first_withdrawn`): its permissions and channels go and no peer of
its family is served any more, but its socket stays bound (unused) until the allocation
ends, because the allocation is known by that address everywhere (the runtime's relay
record and traffic counters, usage records, mobility tickets, session admin).

`runtime` is the runtime's own record of the allocation (its relay socket's senders),
handed over when the relay socket is bound (`TurnServer.relay_opened`) so that the data
path reaches it from the allocation with no second lookup. The core never reads it.
"""

from __future__ import annotations

from trelay.turn.addressing import Address, FiveTuple, is_ipv6


class Allocation:
    __slots__ = (
        "channel_expiry",
        "channels",
        "created_at",
        "expires_at",
        "first_withdrawn",
        "five_tuple",
        "identity",
        "key",
        "peers",
        "permissions",
        "relayed",
        "reported_relayed",
        "runtime",
        "second",
        "second_reported",
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
        second: Address | None = None,
        second_reported: Address | None = None,
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
        # A dual allocation's other relayed address (bound, and as reported).
        self.second = second
        self.second_reported = second_reported or second
        # A dual allocation whose first family the client deleted (`withdraw_first`).
        self.first_withdrawn = False

    def serves(self, host: str) -> bool:
        """Whether a peer at `host` is of a family this allocation relays to (§9.1)."""
        second = self.second
        if second is None:
            return is_ipv6(host) == is_ipv6(self.relayed[0])
        return not self.first_withdrawn or is_ipv6(host) == is_ipv6(second[0])

    def relayed_for(self, host: str) -> Address:
        """The relayed address that reaches a peer at `host`: the `second` one of a dual
        allocation for a peer of its family, else `relayed`."""
        second = self.second
        if second is not None and is_ipv6(host) == is_ipv6(second[0]):
            return second
        return self.relayed

    def drop_second(self) -> Address | None:
        """A dual allocation gives up its second family (a Refresh deleting it, §7.3):
        the permissions and channels of that family go with it. Returns its address."""
        second = self.second
        if second is None:
            return None
        self._forget_family(is_ipv6(second[0]))
        self.second = self.second_reported = None
        return second

    def withdraw_first(self) -> None:
        """A dual allocation gives up its first family (§7.3): the permissions and
        channels of that family go, and no peer of it is served from now on; `relayed`
        stays what the allocation is known by (its socket closes when it ends)."""
        if self.second is None:
            raise ValueError("only a dual allocation has a family to withdraw")
        self._forget_family(is_ipv6(self.relayed[0]))
        self.first_withdrawn = True

    def _forget_family(self, family: bool) -> None:
        """Drop the channels and permissions of peers of `family` (True: IPv6)."""
        for number, peer in list(self.channels.items()):
            if is_ipv6(peer[0]) == family:
                self.unbind_channel(number)
        for host in [h for h in self.permissions if is_ipv6(h) == family]:
            del self.permissions[host]

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
