"""The TURN server core (RFC 8656), sans I/O: bytes, addresses and `now` in; actions out.

Owns every request a TURN client sends: Binding, Allocate (in `trelay.turn.allocate`),
Refresh, CreatePermission and ChannelBind (in `trelay.turn.peer_requests`), Send indications;
and what happens when timers (`trelay.turn.timers`) come due. Who holds which allocation,
pending Allocates and quotas are kept in `trelay.turn.allocation_table`.

Time: `now` is monotonic seconds from the caller, for lifetimes and timers; the injected
`wall_clock` gives Unix seconds for nonces and TURN REST credential expiry.

The data path (ChannelData from clients, datagrams from peers) does not go through
`handle_message`: the runtime reads `client_table(...)`, `Allocation.channels`,
`Allocation.peers` and `Allocation.permissions` directly and calls `peer_datagram` only
for peers without a channel. Those tables never hold expired state once `handle_timer`
has run for the current time.

The boundary: the runtime changes the server only through its methods (`listening_on`,
`start_draining`, `relay_opened`...); its state is read-only from outside. The request
handlers get it as one `RequestContext`, built here once. Session admin
(`trelay.turn.allocation_view`): the operator lists allocations (`allocation_views`)
and ends one or all of an identity's (`end_allocation`, `end_identity`) through the same
path as expiry. Every response is counted
where it is sent, from the `Reply` that says its method and code.

The fleet (design §9) reaches the core through two plain calls, never awaited by it:
`redirect_new_allocations` (300 to a healthy node while this one is overloaded or
draining, `trelay.turn.redirection`) and `use_remote_counts` (the identities' allocations
on other nodes, added to the user quota); `identity_counts` is what it publishes.

Requests that do not authenticate (unsigned, Binding, 400s, failed MACs) are answered
within `limits` (`trelay.turn.rate_limit`): per client address and port, so that a
neighbour behind the same NAT cannot use them against the others, and per destination
IP in bytes over UDP, the bound on reflection. Authenticated requests are never limited.

TCP allocations (RFC 6062, `trelay.turn.tcp_relay`, the server's `tcp`): an Allocate with
REQUESTED-TRANSPORT TCP over TCP/TLS asks the runtime for a listening relay socket
(`OpenRelay.tcp`); Connect and ConnectionBind are dispatched there, and the runtime
reports its connections back (`peer_connected`, `peer_connect_failed`, `peer_arrived`,
`peer_connection_closed`). A TCP allocation has no channels (ChannelBind 400) and relays
no Send indication; its peer connections end with it.

One worker process of several (`worker`, the runtime's index for it; None in a single
process): its RESERVATION-TOKENs and CONNECTION-IDs name it (`trelay.turn.reservations`,
`trelay.turn.tcp_relay`), so that a request for them that reaches another worker can be
handed here (`trelay.node.mobility_steering`, `trelay.node.bind_proxy`).

Invariants (checked by the state-machine tests): nothing outlives its allocation; the
channel <-> peer maps stay a bijection; quotas hold, pending allocations included.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
from collections.abc import Callable, Iterable, Mapping

from trelay.stun.attributes import (
    Attribute,
    DontFragment,
    Fingerprint,
    Lifetime,
    MessageIntegrity,
    MessageIntegritySha256,
    RequestedAddressFamily,
    Software,
)
from trelay.stun.codes import (
    MAGIC_COOKIE,
    AddressFamily,
    ErrorCode,
    MessageClass,
    Method,
)
from trelay.stun.error_attributes import UnknownAttributes
from trelay.stun.errors import StunDecodeError
from trelay.stun.integrity import fingerprint_matches
from trelay.stun.message import HEADER, Message, decode_message, decode_message_type
from trelay.turn import allocate, peer_requests, responses
from trelay.turn.actions import (
    Action,
    AllocationEnded,
    AllocationMoved,
    CloseRelay,
    ConnectPeer,
    EndReason,
    OpenRelay,
    SendToClient,
)
from trelay.turn.addressing import Address, ClientTransport, FiveTuple, is_ipv6
from trelay.turn.allocation import Allocation
from trelay.turn.allocation_table import AllocationTable
from trelay.turn.allocation_view import AllocationView, view_of
from trelay.turn.auth import Authenticated, LongTermAuthenticator, Rejected
from trelay.turn.config import TurnConfig
from trelay.turn.credential_sources import StaticUsers
from trelay.turn.data_path import peer_datagram, send_indication
from trelay.turn.mobility import MobileAllocations, TicketCodec, mobile_transport, presented_ticket
from trelay.turn.nat_discovery import Routed, answer_binding_request
from trelay.turn.policy import PeerPolicy, Withdrawn, withdraw_denied
from trelay.turn.port_pool import RelayPortPool
from trelay.turn.rate_limit import UnauthenticatedLimits
from trelay.turn.redirection import Alternate, Redirection
from trelay.turn.request_context import RequestContext
from trelay.turn.response_cache import ResponseCache
from trelay.turn.responses import Reply
from trelay.turn.stats import Drop, ServerStats
from trelay.turn.tcp_relay import TcpRelay, tcp_allocate_problem, wants_tcp
from trelay.turn.timers import TimerKind, TimerQueue


class TurnServer:
    def __init__(
        self,
        config: TurnConfig,
        authenticator: LongTermAuthenticator,
        policy: PeerPolicy,
        *,
        wall_clock: Callable[[], float],
        rng: random.Random | None = None,
        tickets: TicketCodec | None = None,
        worker: int | None = None,
    ) -> None:
        self._auth = authenticator
        self.wall_clock = wall_clock
        self._policy = policy
        self._redirection = Redirection()
        ports = RelayPortPool(*config.port_range, rng=rng) if config.port_range else None
        self._table = table = AllocationTable(ports)
        self._timers = timers = TimerQueue()
        self._software = software = Software(config.software)
        self.responses = ResponseCache(config.response_cache_seconds, config.response_cache_size)
        # Requests that do not authenticate, per source and per destination (issue 15).
        self.limits = UnauthenticatedLimits(
            config.unauthenticated_rate, config.unauthenticated_burst,
            config.reflection_rate, config.reflection_burst,
        )  # fmt: skip
        # Shared with the request handlers for the server's whole life; plain counters
        # for the metrics layer (`stats`), bumped on the control path only.
        # RFC 8016 mobility, offered when the runtime gives a ticket codec.
        self._tickets = tickets
        self._mobility = None if tickets is None else MobileAllocations(tickets, rng)
        # Read here as attributes, not through the properties: a dozen times per
        # allocation (issue 13 part 4). `use_config` replaces `_config` with the context's.
        self._config = config
        self._stats = ServerStats()
        self._attribute_limit = config.attribute_limit()
        self._context = RequestContext(
            config, software, table, ports, timers, self._stats,
            self._reply, self._mobility, worker,
        )  # fmt: skip
        # The runtime reads these two directly (the data path, relay sockets).
        self.allocations = table.allocations
        self.by_relayed = table.by_relayed
        # RFC 6062: TCP allocations and their peer connections (ids from `rng` if given).
        randbits = secrets.randbits if rng is None else rng.getrandbits
        self.tcp = TcpRelay(randbits, worker)  # with workers, ids name theirs

    # --- state, read-only from outside -------------------------------------------------

    @property
    def config(self) -> TurnConfig:
        return self._config

    @property
    def stats(self) -> ServerStats:
        return self._stats

    @property
    def ports(self) -> RelayPortPool | None:
        """The relay port range's pool; None when the kernel picks ports."""
        return self._context.ports

    @property
    def policy(self) -> PeerPolicy:
        """The peer policy in force (`listening_on` adds the server's own endpoints)."""
        return self._policy

    @property
    def tickets(self) -> TicketCodec | None:
        """The MOBILITY-TICKET codec (RFC 8016); None when mobility is off."""
        return self._tickets

    @property
    def auth(self) -> LongTermAuthenticator:
        return self._auth

    @property
    def draining(self) -> bool:
        """True once `start_draining` (or `shutdown`) ran: new Allocates are refused."""
        return self._redirection.draining

    @property
    def alternate(self) -> Address | None:
        """Where a draining server sends new Allocates (300 Try Alternate), if anywhere."""
        return self._redirection.drain_alternate

    @property
    def redirection(self) -> Redirection:
        """Whether the server drains and where new Allocates may be sent."""
        return self._redirection

    def redirect_new_allocations(self, alternates: tuple[Alternate, ...]) -> None:
        """Send new Allocates to `alternates` from now on, draining or not (overflow);
        () stops it. The first alternate that fits a client's transport and address
        family is named in a 300; a client none fits is served here (while draining:
        the drain's alternate, else 508). Existing allocations are untouched."""
        self._redirection = dataclasses.replace(self._redirection, fleet=alternates)

    def start_draining(self, *, alternate: Address | None = None) -> None:
        """Refuse new allocations from now on; existing ones live on as before.

        The first step of a graceful shutdown (design §4): Refresh, permissions,
        channels and relaying still work, until the allocations end or `shutdown`.
        A new Allocate gets 300 Try Alternate with ALTERNATE-SERVER `alternate` (RFC 8489
        §10, RFC 8656 §7.2) when one is given and of the client's address family, else
        508 Insufficient Capacity.
        """
        self._redirection = dataclasses.replace(
            self._redirection, draining=True, drain_alternate=alternate
        )

    # --- tables for the runtime's data path -------------------------------------------

    def client_table(
        self, transport: ClientTransport, server: Address
    ) -> dict[Address, Allocation]:
        """The live client-address -> allocation map of one listening socket."""
        return self._table.client_table(transport, server)

    def peer_datagram(self, allocation: Allocation, peer: Address, data: bytes) -> bytes | None:
        """Frame a datagram from `peer` for the client, or None to drop it (§10.3, §12.6)."""
        return peer_datagram(allocation, peer, data)

    def listening_on(self, endpoints: Iterable[Address]) -> None:
        """Deny the server's own listening endpoints as peers (design §6).

        A wildcard listener (0.0.0.0, ::) is reachable at every local address: loopback,
        the relay and external addresses, and those `use_local_addresses` gives. The four
        addresses of RFC 5780 (`config.nat_discovery`) are the server's own too.
        """
        config, listeners = self._config, list(endpoints)
        if config.nat_discovery is not None:
            listeners += config.nat_discovery.addresses
        hosts = (config.relay_host, config.relay_host_v6, config.external_host,
                 config.external_host_v6)  # fmt: skip
        own = [(host, port) for host in hosts if host is not None for _, port in listeners]
        self._policy = self._policy.with_server_endpoints([*listeners, *own])

    def use_local_addresses(self, hosts: Iterable[str]) -> None:
        """The host's addresses (the runtime enumerates them), each denied with the port
        of every wildcard listener; replaces those given before."""
        self._policy = self._policy.with_local_hosts(hosts)

    @property
    def allocation_count(self) -> int:
        return self._table.count

    def state_sizes(self) -> dict[str, int]:
        """The length of every table the core holds, by name (issue 15: what grows).

        Each grows with live state (allocations and what they hold) or is a bounded
        cache (the retired nonces: one per client address whose allocation ended within
        a nonce lifetime, at most `MAX_RETIRED`); none grows with the number of requests
        answered. The stats' key spaces are bounded by enums (`trelay.turn.stats`).
        """
        table, timers = self._table, self._timers
        allocations = table.allocations.values()
        stats = self._stats
        return {
            **table.sizes(),
            "timer_entries": len(timers),
            "timers_live": timers.live,
            "timer_owners": timers.owners,
            "responses": len(self.responses),
            "limited_sources": len(self.limits.per_source),
            "limited_destinations": len(self.limits.per_destination),
            "retired_nonce_addresses": self._auth.nonces.retired_count,
            "mobile_allocations": 0 if self._mobility is None else len(self._mobility),
            "permissions": sum(len(a.permissions) for a in allocations),
            "channels": sum(len(a.channels) for a in allocations),
            "channel_peers": sum(len(a.peers) for a in allocations),
            "channel_expiries": sum(len(a.channel_expiry) for a in allocations),
            "stats_responses": len(stats.responses),
            "stats_latency": len(stats.latency),
            **self.tcp.sizes(),
        }

    def identity_counts(self) -> Mapping[str, int]:
        """Identity -> its allocations here, pending ones included (read-only, live)."""
        return self._table.identity_counts()

    def use_remote_counts(self, counts: Mapping[str, int]) -> None:
        """What the fleet says each identity holds on other nodes, from now on (replaces
        the previous counts; {} forgets them: the user quota is local again)."""
        self._table.use_remote_counts(counts)

    # --- control path -------------------------------------------------------------------

    def handle_message(self, data: bytes, five_tuple: FiveTuple, now: float) -> list[Action]:
        """One STUN message from a client (datagram or deframed stream frame)."""
        try:
            message = decode_message(data, self._attribute_limit)
        except StunDecodeError as exc:
            return self._answer_undecodable(data, exc, five_tuple, now)
        fingerprint = message.get(Fingerprint)
        if fingerprint is not None and not fingerprint_matches(data, fingerprint.value):
            self._stats.dropped[Drop.MALFORMED] += 1
            return []  # RFC 8489 §7.3: not STUN after all; discard silently
        if message.message_class is MessageClass.INDICATION:
            if message.method == Method.SEND:
                allocation = self.allocations.get(five_tuple)
                if allocation is not None and self.tcp.is_tcp(allocation):
                    # RFC 6062: a TCP allocation's data goes over its data connections.
                    self._stats.dropped[Drop.NO_PERMISSION] += 1
                    return []
                dont_fragment = self._config.dont_fragment
                sent = send_indication(allocation, message, self._policy, dont_fragment)
                if isinstance(sent, Drop):
                    self._stats.dropped[sent] += 1
                    return []
                return [sent]
            return []
        if message.message_class is not MessageClass.REQUEST:
            return []
        cached = self.responses.get(five_tuple, message.transaction_id)
        if cached is not None:
            return self._send(five_tuple, cached)  # RFC 8489 §6.3.1: same answer
        if message.method == Method.BINDING:
            # RFC 8489 §6.3, and RFC 5780 where configured: the answer may leave from
            # another of the node's addresses or go to another port (`nat_discovery`).
            software, nat = self._software, self._config.nat_discovery
            return self._unauthenticated(
                five_tuple, now, lambda: answer_binding_request(message, five_tuple, software, nat)
            )
        if message.method not in _AUTHENTICATED_METHODS:
            software = self._software
            return self._unauthenticated(
                five_tuple, now,
                lambda: responses.error(message, ErrorCode.BAD_REQUEST, software),
            )  # fmt: skip
        return self._authenticated_request(message, data, five_tuple, now)

    def _answer_undecodable(
        self, data: bytes, exc: StunDecodeError, five_tuple: FiveTuple, now: float
    ) -> list[Action]:
        """A request whose header parses but whose attributes do not gets 400."""
        header = _request_header(data)
        if header is None:
            self._stats.dropped[Drop.MALFORMED] += 1
            return []
        method, transaction_id = header
        request = Message(method, MessageClass.REQUEST, transaction_id)
        software, reason = self._software, exc.reason
        return self._unauthenticated(
            five_tuple, now,
            lambda: responses.error(request, ErrorCode.BAD_REQUEST, software, reason=reason),
        )  # fmt: skip

    def _unauthenticated(
        self, five_tuple: FiveTuple, now: float, answer: Callable[[], Reply | Routed]
    ) -> list[Action]:
        """Answer a request that cannot authenticate (Binding, 400) within `limits`:
        its source's token before `answer` does any work, the destination's bytes
        before the answer goes out (`trelay.turn.rate_limit`), on the 5-tuple the
        answer travels (a `Routed` one: RFC 5780, from another address or to another
        port of the source's IP, which is what the reflection bound counts)."""
        refused = self.limits.request(five_tuple, now)
        if refused is None:
            answered = answer()
            reply, route = (
                (answered, five_tuple) if isinstance(answered, Reply)
                else (answered.reply, answered.route)
            )  # fmt: skip
            refused = self.limits.answer(route, len(reply.data), now)
            if refused is None:
                return self._send(route, reply)
        self._stats.dropped[refused] += 1
        return []

    def _authenticated_request(
        self, request: Message, raw: bytes, five_tuple: FiveTuple, now: float
    ) -> list[Action]:
        client = five_tuple.client
        limits, dropped = self.limits, self._stats.dropped
        # A signed request from a source out of tokens is refused before its MAC costs
        # anything; one that passes spends a token only if it fails (`rate_limit`).
        refused = None if _unsigned(request) else limits.signed(five_tuple, now)
        if refused is not None:
            dropped[refused] += 1
            return []
        unix_now = self.wall_clock()
        strict = self._config.strict_expiry
        result = self._auth.check(request, raw, client, unix_now, strict_expiry=strict)
        if isinstance(result, Rejected):
            # An unsigned request is the one kind anybody can send for free: its source
            # pays before we mint a nonce; a failed MAC is paid for after the fact.
            if result.anonymous:
                refused = limits.request(five_tuple, now)
                if refused is not None:
                    dropped[refused] += 1
                    return []
            elif result.key is None:
                limits.failed(five_tuple, now)
            self._stats.auth_failures[result.failure] += 1
            extra = self._auth.challenge(client, unix_now) if result.challenge else ()
            if result.key is None:  # not authenticated: the smallest answer (issue 15)
                reply = responses.unauthenticated(request, result.code, result.reason, extra)
                refused = limits.answer(five_tuple, len(reply.data), now)
                if refused is not None:
                    dropped[refused] += 1
                    return []
            else:
                reply = responses.error(
                    request, result.code, self._software, result.key, reason=result.reason,
                    extra=extra,
                )  # fmt: skip
            return self._send(five_tuple, reply)
        key = result.credential.key
        unknown = request.unknown_comprehension_required()
        dont_fragment = request.get(DontFragment) is not None
        if request.method == Method.ALLOCATE and dont_fragment and not self._config.dont_fragment:
            # RFC 8656 §7.2 step 4: without DF support, treat it as unknown.
            unknown += (DontFragment.TYPE,)
        if unknown:
            return self._reply(
                request, five_tuple, now,
                responses.error(
                    request, ErrorCode.UNKNOWN_ATTRIBUTE, self._software, key,
                    extra=(UnknownAttributes(unknown),),
                ),
            )  # fmt: skip
        context = self._context
        if request.method == Method.ALLOCATE:
            return self._allocate(request, five_tuple, result, now)
        if request.method == Method.CONNECTION_BIND:  # RFC 6062 §5.4: on a new connection
            held = five_tuple in self.allocations
            return self.tcp.connection_bind(context, request, five_tuple, result, held, now)
        if (sealed := presented_ticket(request)) is not None:  # RFC 8016 §3.2: maybe moved
            return self._mobile_refresh(request, sealed, five_tuple, result, now)
        allocation = self.allocations.get(five_tuple)
        if allocation is None:
            reply = responses.error(request, ErrorCode.ALLOCATION_MISMATCH, self._software, key)
            return self._reply(request, five_tuple, now, reply)
        if result.username != allocation.username:
            # RFC 8656 §5: later requests must use the allocation's credentials.
            reply = responses.error(request, ErrorCode.WRONG_CREDENTIALS, self._software, key)
            return self._reply(request, five_tuple, now, reply)
        if request.method == Method.REFRESH:
            return self._refresh(request, allocation, result, now)
        if request.method == Method.CONNECT:  # RFC 6062 §5.2
            made = self.tcp.connect(context, self._policy, request, allocation, now)
            if made is None or isinstance(made, ConnectPeer):
                return [] if made is None else [made]  # answered once it connects or fails
            return self._reply(request, five_tuple, now, made)
        if request.method == Method.CREATE_PERMISSION:
            reply = peer_requests.create_permission(context, self._policy, request, allocation, now)
        elif self.tcp.is_tcp(allocation):
            reply = responses.error(
                request, ErrorCode.BAD_REQUEST, self._software, key,
                reason="No channels on a TCP allocation",
            )  # fmt: skip
        else:
            reply = peer_requests.channel_bind(context, self._policy, request, allocation, now)
        return self._reply(request, five_tuple, now, reply)

    def _allocate(
        self, request: Message, five_tuple: FiveTuple, auth: Authenticated, now: float
    ) -> list[Action]:
        """RFC 8656 §7.2 (`trelay.turn.allocate`); for a TCP allocation RFC 6062 §5.1's
        checks first, and a listening relay socket (`OpenRelay.tcp`)."""
        context, redirection = self._context, self._redirection
        if not wants_tcp(request):
            return allocate.allocate(context, request, five_tuple, auth, now, redirection)
        problem = tcp_allocate_problem(request, five_tuple.transport)
        code = ErrorCode.BAD_REQUEST
        if not self._config.tcp_allocations:  # the runtime cannot serve them
            code, problem = ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL, "No TCP relaying here"
        if problem is not None:
            reply = responses.error(
                request, code, self._software, auth.credential.key, reason=problem
            )  # fmt: skip
            return self._reply(request, five_tuple, now, reply)
        return _as_tcp(allocate.allocate(context, request, five_tuple, auth, now, redirection))

    def _send(self, five_tuple: FiveTuple, reply: Reply) -> list[Action]:
        """Send `reply` to the client, counted by the method and code it carries."""
        self._stats.answered(reply)
        return [SendToClient(five_tuple, reply.data)]

    def _reply(
        self, request: Message, five_tuple: FiveTuple, now: float, reply: Reply
    ) -> list[Action]:
        """Send `reply` and keep it for retransmissions of `request` (RFC 8489 §6.3.1)."""
        self.responses.put(five_tuple, request.transaction_id, reply, now)
        return self._send(five_tuple, reply)

    # --- Allocate (RFC 8656 §7.2, in `trelay.turn.allocate`) -----------------------------------

    def relay_opened(
        self,
        five_tuple: FiveTuple,
        relayed: Address,
        now: float,
        *,
        runtime: object = None,
        reserved: Address | None = None,
        second: Address | None = None,
    ) -> list[Action]:
        """The runtime bound the relay socket of a pending Allocate at `relayed`.

        `runtime`: the runtime's record of the allocation, kept as `Allocation.runtime`.
        `reserved`: the port+1 socket it holds for an EVEN-PORT R=1 Allocate (§7.2).
        `second`: a dual allocation's other socket (ADDITIONAL-ADDRESS-FAMILY), if bound.
        """
        pending = self._table.pending.get(five_tuple)
        tcp = pending is not None and wants_tcp(pending.request)
        actions = allocate.relay_opened(
            self._context, five_tuple, relayed, now, runtime, reserved, second
        )  # fmt: skip
        if tcp:
            allocation = self.allocations.get(five_tuple)
            if allocation is not None and allocation.relayed == relayed:
                self.tcp.add(allocation)  # RFC 6062 §5.1: peers may connect from now on
        return actions

    def relay_failed(self, five_tuple: FiveTuple, now: float) -> list[Action]:
        """The runtime could not bind the requested port: try another, then give up (508)."""
        pending = self._table.pending.get(five_tuple)
        actions = allocate.relay_failed(self._context, five_tuple, now)
        return _as_tcp(actions) if pending is not None and wants_tcp(pending.request) else actions

    # --- TCP allocations (RFC 6062, `trelay.turn.tcp_relay`) -----------------------------

    def peer_connected(self, connection_id: int, now: float) -> list[Action]:
        """The runtime connected a Connect's peer (§5.2): success with CONNECTION-ID."""
        return self.tcp.peer_connected(self._context, connection_id, now)

    def peer_connect_failed(self, connection_id: int, now: float) -> list[Action]:
        """The runtime could not connect a Connect's peer (§5.2): 447."""
        return self.tcp.peer_connect_failed(self._context, connection_id, now)

    def peer_arrived(self, relayed: Address, peer: Address, now: float) -> list[Action]:
        """A peer connected to the TCP allocation at `relayed` (§5.3): `AcceptPeer` and a
        ConnectionAttempt to the client, or nothing, and the runtime closes it."""
        allocation = self.by_relayed.get(relayed)
        if allocation is None:
            return []
        return self.tcp.peer_arrived(self._context, allocation, peer, now)

    def peer_connection_closed(self, connection_id: int) -> None:
        """The runtime closed a peer connection (or its data connection closed)."""
        self.tcp.peer_connection_closed(connection_id)

    def close_denied_peer_connections(self, now: float) -> list[Action]:
        """After `use_policy`: close the TCP connections to peers the policy now denies
        (a Connect still being made gets 447); their allocations live on."""
        return self.tcp.withdraw_denied(self._context, self._policy, now)

    # --- Refresh (RFC 8656 §7.3) --------------------------------------------------------

    def _refresh(
        self, request: Message, allocation: Allocation, auth: Authenticated, now: float
    ) -> list[Action]:
        key = allocation.key
        five_tuple = allocation.five_tuple
        family = request.get(RequestedAddressFamily)
        # A dual allocation's either family may be named: LIFETIME 0 deletes it alone
        # (the first one withdrawn, its socket kept until the end: `Allocation`).
        second = allocation.second
        of_first = of_second = False
        if family is not None:
            named = family.family
            of_second = second is not None and named == _family_of(second)
            of_first = named == _family_of(allocation.relayed) and not allocation.first_withdrawn
        if family is not None and not of_first and not of_second:
            reply = responses.error(
                request, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH, self._software, key
            )
            return self._reply(request, five_tuple, now, reply)
        # An expired credential was refused by the authenticator (strict_expiry); a live
        # one refreshes no further than its expiry.
        requested = request.get(Lifetime)
        lifetime = self._config.refresh_lifetime(None if requested is None else requested.value)
        lifetime = auth.capped(lifetime)
        actions: list[Action] = []
        if lifetime == 0 and of_second and not allocation.first_withdrawn:
            dropped = self._table.drop_second(allocation)
            actions = [] if dropped is None else [CloseRelay(dropped)]
        elif lifetime == 0 and of_first and second is not None:
            allocation.withdraw_first()
        elif lifetime == 0:
            actions = self._end(allocation, EndReason.DELETED)
        else:
            allocation.expires_at = now + lifetime
            self._timers.schedule(allocation.expires_at, TimerKind.ALLOCATION, allocation)
        attributes: tuple[Attribute, ...] = (Lifetime(lifetime),)
        mobility = self._mobility
        ticket = None if lifetime == 0 or mobility is None else mobility.renew(allocation)
        if ticket is not None:  # RFC 8016 §3.2.2: a new ticket, the old one superseded
            attributes += (ticket,)
        reply = responses.success(request, attributes, self._software, key)
        return [*self._reply(request, five_tuple, now, reply), *actions]

    def _mobile_refresh(
        self, request: Message, sealed: bytes, five_tuple: FiveTuple, auth: Authenticated,
        now: float,
    ) -> list[Action]:  # fmt: skip
        """A Refresh presenting a MOBILITY-TICKET (RFC 8016 §3.2.2): its allocation is the
        ticket's, moved to this 5-tuple when the client's address changed."""
        mobility = self._mobility
        allocation = None if mobility is None else mobility.find(sealed, now)
        refused: tuple[ErrorCode, str] | None = None
        if mobility is None or not mobile_transport(five_tuple.transport):
            refused = ErrorCode.MOBILITY_FORBIDDEN, "Mobility is not offered"
        elif allocation is None:
            refused = ErrorCode.ALLOCATION_MISMATCH, "No allocation holds this ticket"
        elif auth.username != allocation.username:
            refused = ErrorCode.WRONG_CREDENTIALS, "Not the allocation's user"
        elif allocation.five_tuple != five_tuple:
            refused = self._unmovable(allocation, five_tuple)
        if refused is not None or allocation is None or mobility is None:
            code, reason = refused or (ErrorCode.ALLOCATION_MISMATCH, "")
            reply = responses.error(
                request, code, self._software, auth.credential.key, reason=reason
            )
            return self._reply(request, five_tuple, now, reply)
        moved: list[Action] = []
        previous = allocation.five_tuple
        if previous != five_tuple:
            self._table.move(allocation, five_tuple)
            self._stats.allocations_moved[five_tuple.transport] += 1
            # A captured request replayed from the old address makes no new allocation.
            self._auth.nonces.retire(previous.client, self.wall_clock())
            moved = [AllocationMoved(previous, five_tuple, allocation.relayed)]
        return [*moved, *self._refresh(request, allocation, auth, now)]

    def _unmovable(
        self, allocation: Allocation, five_tuple: FiveTuple
    ) -> tuple[ErrorCode, str] | None:
        """Why `allocation` cannot move to `five_tuple` (RFC 8016 §3.2.2), or None."""
        table = self._table
        if five_tuple in table.allocations or five_tuple in table.pending:
            return ErrorCode.ALLOCATION_MISMATCH, "Allocation already exists"
        if five_tuple.transport is not allocation.five_tuple.transport:
            return ErrorCode.ALLOCATION_MISMATCH, "Mobility keeps the transport"
        per_source = self._config.allocations_per_source
        if per_source and table.source_count(five_tuple.client) >= per_source:
            return ErrorCode.ALLOCATION_QUOTA_REACHED, "Allocation Quota Reached for this address"
        return None

    # --- lifecycle, timers --------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `handle_timer` must run next (monotonic seconds), or None if never."""
        # Asked after every request (the runtime rearms its timer): plain comparisons, no
        # generator and `min` (issue 13 part 4).
        deadline = self.responses.next_expiry()
        for other in (self._timers.next_deadline(), self.tcp.next_deadline()):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def handle_timer(self, now: float) -> list[Action]:
        """Expire everything due at `now`."""
        actions: list[Action] = []
        self.responses.expire(now)
        timers = self._timers
        for kind, allocation, key in timers.pop_due(now):
            if not isinstance(allocation, Allocation):  # a port reservation's 30 s (§7.2)
                actions += allocate.reservation_expired(self._context, allocation)
                continue
            if self.allocations.get(allocation.five_tuple) is not allocation:
                continue  # already ended
            # One entry per thing (`TimerQueue`): what was extended since is scheduled
            # again at its real expiry; what was removed meanwhile is simply forgotten.
            if kind is TimerKind.ALLOCATION:
                if allocation.expires_at <= now:
                    actions += self._end(allocation, EndReason.EXPIRED)
                else:
                    timers.schedule(allocation.expires_at, kind, allocation)
            elif kind is TimerKind.PERMISSION:
                assert isinstance(key, str)
                expiry = allocation.permissions.get(key)
                if expiry is not None and expiry <= now:
                    del allocation.permissions[key]
                elif expiry is not None:
                    timers.schedule(expiry, kind, allocation, key)
            else:
                assert isinstance(key, int)
                expiry = allocation.channel_expiry.get(key)
                if expiry is not None and expiry <= now:
                    allocation.unbind_channel(key)
                elif expiry is not None:
                    timers.schedule(expiry, kind, allocation, key)
        actions += self.tcp.handle_timer(self._context, now)
        self.limits.prune(now)
        return actions

    def _end(self, allocation: Allocation, reason: EndReason) -> list[Action]:
        self._table.remove(allocation)
        if self._mobility is not None:
            self._mobility.forget(allocation)  # its tickets open nothing now
        self._timers.cancel(allocation)  # nothing keeps an ended allocation alive
        five_tuple = allocation.five_tuple
        # A captured request of this client replayed after the end is answered 438, not
        # with a new allocation (`NonceStamper.retire`); the client re-challenges.
        self._auth.nonces.retire(five_tuple.client, self.wall_clock())
        self._stats.allocation_ended(five_tuple.transport, reason)
        second = allocation.second  # a dual allocation's other socket
        return [
            CloseRelay(allocation.relayed),
            *(() if second is None else (CloseRelay(second),)),
            *self.tcp.allocation_ended(allocation),  # RFC 6062 §5.5
            AllocationEnded(five_tuple, allocation.relayed, allocation.username, reason),
        ]

    def connection_closed(self, five_tuple: FiveTuple) -> list[Action]:
        """A TCP/TLS control connection or a DTLS association ended: its allocation ends
        with it (RFC 8656 §3.1), except a mobile one over DTLS (RFC 8016): a client that
        moves leaves its old association behind (coturn's uclient -M closes it before it
        refreshes from the new one), and the allocation waits for its ticket at the next
        5-tuple; its lifetime governs it, as over UDP."""
        self._table.drop_pending(five_tuple)
        allocation = self.allocations.get(five_tuple)
        if allocation is None:
            return []
        mobility = self._mobility
        if five_tuple.transport is ClientTransport.DTLS and mobility and allocation in mobility:
            return []
        return self._end(allocation, EndReason.DELETED)

    # --- session admin (the operator's view and hand; design §4) -------------------------

    def allocation_views(self, now: float, identity: str | None = None) -> list[AllocationView]:
        """Every live allocation (only `identity`'s when given) as seen at `now`.

        Pending Allocates (their relay socket still binding) are not listed: they have
        no relayed address yet.
        """
        tcp = self.tcp.allocations  # a TCP allocation's peer connections (RFC 6062)
        return [
            view_of(allocation, now, None if (held := tcp.get(allocation)) is None else len(held))
            for allocation in self.allocations.values()
            if identity is None or allocation.identity == identity
        ]

    def end_allocation(self, which: FiveTuple | Address) -> list[Action]:
        """End one allocation now, found by its client 5-tuple or its relayed address
        (the bound one or the one reported to the client); [] when there is none.

        Ends it as Refresh 0 and expiry do (`CloseRelay`, then `AllocationEnded` with
        reason `admin`), with no message to the client: RFC 8656 has no way to tell it,
        so it learns at its next request (437 Allocation Mismatch, §7.3) and may
        allocate again unless its identity is revoked too.
        """
        if isinstance(which, FiveTuple):
            allocation = self.allocations.get(which)
        else:
            allocation = self.by_relayed.get(which) or next(
                (a for a in self.allocations.values() if a.reported_relayed == which), None
            )
        return [] if allocation is None else self._end(allocation, EndReason.ADMIN)

    def end_identity(self, identity: str) -> list[Action]:
        """End every live allocation of `identity` now (reason `admin`), as
        `end_allocation` does. Allocates still binding their port are left to finish:
        revoke the identity (`auth.revocations_file`) to keep it out."""
        actions: list[Action] = []
        for allocation in list(self.allocations.values()):
            if allocation.identity == identity:
                actions += self._end(allocation, EndReason.ADMIN)
        return actions

    def shutdown(self) -> list[Action]:
        """End every allocation now (after the runtime's drain deadline)."""
        self._redirection = dataclasses.replace(self._redirection, draining=True)
        actions: list[Action] = []
        for five_tuple, pending in list(self._table.pending.items()):
            # Allocates still binding their port are answered now; relay_opened closes it.
            self._table.drop_pending(five_tuple)
            reply = responses.error(
                pending.request, ErrorCode.INSUFFICIENT_CAPACITY, self._software,
                pending.auth.credential.key, reason="Server is shutting down",
            )  # fmt: skip
            actions += self._send(five_tuple, reply)  # a retransmission meets 508 too
        for allocation in list(self.allocations.values()):
            actions += self._end(allocation, EndReason.SHUTDOWN)
        return actions + allocate.end_reservations(self._context)

    # --- live changes (a reload, `trelay.node.live_settings`) ---------------------------
    # None of them ends an allocation: a reload loses no call.

    def use_policy(self, policy: PeerPolicy) -> Withdrawn:
        """Judge peers by `policy` from now on; the server's own endpoints stay denied.

        New CreatePermission, ChannelBind (403 for a denied peer) and Send indications
        follow it. Permissions and channels that existing allocations hold to peers it
        denies are removed (`trelay.turn.policy.withdraw_denied`): relaying to and from
        those peers stops at once; the allocations live on. Returns what was removed.
        """
        self._policy = policy.with_own_endpoints(self._policy)
        return withdraw_denied(self._policy, self.allocations.values())

    def use_config(self, config: TurnConfig) -> None:
        """Use `config` from now on; only the fields in `LIVE_CONFIG_FIELDS` may differ.

        Quotas (RFC 8656 §7.2 step 8) are checked at each new Allocate: a lower quota
        refuses new ones (486, 508) and ends none of those already over it; so do the
        bounds per allocation and per request (§9.2, §11.2): what is held stays. Lifetimes
        apply to the Allocates, Refreshes, permissions and channels made from now on;
        what runs keeps its expiry. `strict_expiry` applies from the next Refresh.
        The limits on requests that do not authenticate take their new rates and
        bursts at once, keeping their buckets (`UnauthenticatedLimits.retune`).
        Raises ValueError naming the fields that cannot change while the server runs
        (relay addresses and ports, realm, SOFTWARE, the caches, built once).
        """
        current = self._config
        fixed = [
            f.name
            for f in dataclasses.fields(config)
            if f.name not in LIVE_CONFIG_FIELDS
            and getattr(config, f.name) != getattr(current, f.name)
        ]
        if fixed:
            raise ValueError(f"cannot change while running: {', '.join(fixed)}")
        # The handlers read the configuration from the context at each request.
        self._context = dataclasses.replace(self._context, config=config)
        self._config, self._attribute_limit = config, config.attribute_limit()
        self.limits.retune(
            config.unauthenticated_rate, config.unauthenticated_burst,
            config.reflection_rate, config.reflection_burst,
        )  # fmt: skip

    def use_users(self, users: StaticUsers) -> int:
        """Authenticate static users against `users` from now on.

        A user removed or given a new password gets 401 on a new Allocate. The
        allocations (and Allocates pending) made with the old credential keep
        refreshing, adding permissions and channels and relaying until they end
        (`CredentialSources.with_static_users`); revoke the identity to refuse their
        refreshes. TURN REST secrets are left as they are. Returns how many users keep
        an old credential for their allocations.
        """
        in_use = {allocation.username for allocation in self.allocations.values()}
        in_use |= {pending.auth.username for pending in self._table.pending.values()}
        sources = self._auth.credentials.with_static_users(users, keep_for=in_use)
        self._auth.use_credentials(sources)
        return sources.retired_users


_AUTHENTICATED_METHODS = frozenset(
    (Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND,
     Method.CONNECT, Method.CONNECTION_BIND)
)  # fmt: skip
# What `TurnServer.use_config` may change while the server runs: read at each request.
LIVE_CONFIG_FIELDS = frozenset(
    ("default_lifetime", "max_lifetime", "permission_lifetime", "channel_lifetime",
     "user_quota", "total_quota", "strict_expiry", "permissions_per_allocation",
     "channels_per_allocation", "peers_per_request", "allocations_per_source",
     "pending_per_source", "unauthenticated_rate", "unauthenticated_burst",
     "reflection_rate", "reflection_burst", "peer_connections_per_allocation",
     "bandwidth")
)  # fmt: skip


def _as_tcp(actions: list[Action]) -> list[Action]:
    """The actions of an Allocate, its `OpenRelay` asking for a TCP relay socket."""
    return [
        dataclasses.replace(action, tcp=True) if isinstance(action, OpenRelay) else action
        for action in actions
    ]


def _unsigned(request: Message) -> bool:
    """No MESSAGE-INTEGRITY of either kind (RFC 8489 §9.2.4 step 1): a 401 challenge."""
    return request.get(MessageIntegrity) is None and request.get(MessageIntegritySha256) is None


def _family_of(address: Address) -> AddressFamily:
    return AddressFamily.IPV6 if is_ipv6(address[0]) else AddressFamily.IPV4


def _request_header(data: bytes) -> tuple[int, bytes] | None:
    """(method, transaction id) of a request whose 20-byte header is valid, else None."""
    if len(data) < 20 or data[0] & 0xC0:
        return None
    message_type, _, cookie, transaction_id = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE:
        return None
    method, message_class = decode_message_type(message_type)
    return (method, transaction_id) if message_class is MessageClass.REQUEST else None
