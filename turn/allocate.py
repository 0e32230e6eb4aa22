"""Allocate (RFC 8656 §7.2): from the request to the allocation, across the relay socket bind.

Owns the Allocate request's checks in the RFC's order and the two steps around the
runtime's bind: `allocate` answers the failures, or holds a pending Allocate (its quota
slot and relay port) and asks the runtime to `OpenRelay`; `relay_opened` turns it into
the allocation and answers success; `relay_failed` tries another port, then answers 508.

The checks that depend only on the request and the configuration (`unsatisfiable`):
step 3 (REQUESTED-TRANSPORT present, and UDP or TCP: TCP allocations, RFC 6062 §5.1, are
checked first by the server, `trelay.turn.tcp_relay.tcp_allocate_problem`), step 5
(RESERVATION-TOKEN not with EVEN-PORT or a family: 400), step 7 (a relay address of the
requested family). Those that depend on the server's state (`_state_failure`): step 2
(an allocation exists), step 5 (the token names a live reservation, else 508),
draining, step 8 (quotas); an expired credential never gets here (`trelay.turn.auth`
refuses it with 401 before any method is handled).

EVEN-PORT (§7.2, §14.6): the relayed port is even, from the pool (`acquire(even=True)`)
or, without a configured range, picked by the runtime (`OpenRelay.even`). With the R
bit the next port is reserved too (`acquire_pair`, `OpenRelay.reserve_next`): the
success carries a RESERVATION-TOKEN, and the reservation (`trelay.turn.reservations`)
lives 30 s (a `TimerKind.RESERVATION` timer; `reservation_expired` closes its held
socket and frees its port). An Allocate with the token takes over the runtime's held
socket (`OpenRelay.reserved`): that port and no other, so a failed bind is 508 at once.
Reservations are quota slots like allocations: an R=1 Allocate needs two free (486 or
508 as step 8 says), a redeeming one none beyond the reservation's own.

Dual allocation (§7.2 steps 5, 6, 8, 9; ADDITIONAL-ADDRESS-FAMILY, §14.11): an IPv4
relayed address and an IPv6 one in one Allocate, one quota slot, one lifetime. 400 with
a token, REQUESTED-ADDRESS-FAMILY or EVEN-PORT's R bit, or when the additional family is
not IPv6. The runtime binds both (`OpenRelay.dual_host`); the success carries two
XOR-RELAYED-ADDRESSes, or one and an ADDRESS-ERROR-CODE for IPv6 (§14.12): 440 when the
node relays no IPv6, 508 when its socket could not be bound. UDP allocations only: a TCP
allocation (RFC 6062 §5.1, which predates dual allocation and gives a TCP allocation one
relayed transport address, one listening socket) asking for the additional family gets
its IPv4 address and ADDRESS-ERROR-CODE 440 (Address Family not Supported) for IPv6:
step 9's answer when the IPv6 address is not offered (by local policy here), rather
than a 400 that would refuse the IPv4 allocation the client can use. The
turnbis drafts' code point 0x8032, which coturn's clients send, is taken as well.

Mobility (RFC 8016 §3.1, `trelay.turn.mobility`): an empty MOBILITY-TICKET asks for it,
checked after step 7 (400 for a ticket with a value, 405 where mobility is forbidden);
the success response of a mobile allocation carries its first ticket.

Redirection (`trelay.turn.redirection`): a draining server, or one the fleet marks
overloaded, answers 300 Try Alternate with ALTERNATE-SERVER (RFC 8489 §10, §14.15;
RFC 8656 §6.2, §7.2) when an alternate fits the client (its transport and address
family), with ALTERNATE-DOMAIN over TLS when the alternate has one (RFC 8489 §14.16);
with none, a draining server answers 508 and an overloaded one serves the Allocate.
Like every error to an authenticated request the 300 is signed, which RFC 8489 §10
requires (a forged one would redirect clients). It comes after authentication, before
the quotas: a redirected client is not counted here.

Quotas (step 8): an identity's allocations here (pending ones included) plus those the
fleet says it holds on other nodes (`AllocationTable.remote_count`, a cache the runtime
fills from Redis, `trelay.fleet.quotas`; read synchronously, never awaited). Then the
per-source bounds (issue 15): a source's allocations, pending ones included,
(`allocations_per_source`, 486 as step 8 allows for any locally defined quota) and its
Allocates still binding (`pending_per_source`, 508), a source being an IPv4 address or
an IPv6 /64 (`trelay.turn.allocation_table.source_of`).

The server's state comes in a `RequestContext`, its redirection per call: this module
never sees the server itself.
"""

from __future__ import annotations

from trelay.stun.address_attributes import XorMappedAddress, XorRelayedAddress
from trelay.stun.attributes import (
    AdditionalAddressFamily,
    AdditionalAddressFamilyDraft,
    Attribute,
    EvenPort,
    Lifetime,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
)
from trelay.stun.codes import AddressFamily, ErrorCode, TransportProtocol
from trelay.stun.error_attributes import AddressErrorCode
from trelay.stun.message import Message
from trelay.turn import mobility, responses
from trelay.turn.actions import Action, AllocationCreated, CloseRelay, OpenRelay
from trelay.turn.addressing import Address, FiveTuple, is_ipv6, unmap_ipv4
from trelay.turn.allocation import Allocation
from trelay.turn.allocation_table import PendingAllocate, source_of
from trelay.turn.auth import Authenticated
from trelay.turn.config import TurnConfig
from trelay.turn.redirection import Alternate, Redirection
from trelay.turn.request_context import RequestContext
from trelay.turn.reservations import RESERVATION_SECONDS, Reservation
from trelay.turn.stats import Quota
from trelay.turn.timers import TimerKind

# How many relay ports an Allocate tries before it gives up with 508.
_MAX_BIND_ATTEMPTS = 4


def requested_family(request: Message) -> AddressFamily:
    """REQUESTED-ADDRESS-FAMILY, IPv4 when absent (RFC 8656 §7.2 step 7)."""
    family = request.get(RequestedAddressFamily)
    return AddressFamily.IPV4 if family is None else family.family


def additional_family(request: Message) -> AdditionalAddressFamily | None:
    """ADDITIONAL-ADDRESS-FAMILY (§14.11), at RFC 8656's code point or coturn's draft one."""
    additional = request.get(AdditionalAddressFamily)
    if additional is None:
        draft = request.get(AdditionalAddressFamilyDraft)
        additional = None if draft is None else AdditionalAddressFamily(draft.family)
    return additional


def relay_host(config: TurnConfig, family: AddressFamily) -> str | None:
    """Where relay sockets of `family` bind; None when that family is not offered."""
    return config.relay_host_v6 if family is AddressFamily.IPV6 else config.relay_host


def unsatisfiable(request: Message, config: TurnConfig) -> tuple[ErrorCode, str] | None:
    """The first of steps 3 and 5-7 the request fails, as (code, reason); None if none."""
    transport = request.get(RequestedTransport)
    if transport is None:
        return ErrorCode.BAD_REQUEST, "REQUESTED-TRANSPORT missing"  # step 3
    if transport.value not in (TransportProtocol.UDP, TransportProtocol.TCP):
        return ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL, "Only UDP and TCP relaying"
    even_port = request.get(EvenPort)
    family = request.get(RequestedAddressFamily)
    additional = additional_family(request)
    if request.get(ReservationToken) is not None:  # step 5 (its validity: _state_failure)
        if even_port is not None or family is not None or additional is not None:
            return ErrorCode.BAD_REQUEST, "RESERVATION-TOKEN with EVEN-PORT or family"
        return None  # the reservation's address is of a family offered
    if additional is not None:
        if family is not None:  # step 6
            return ErrorCode.BAD_REQUEST, "REQUESTED- with ADDITIONAL-ADDRESS-FAMILY"
        if even_port is not None and even_port.reserve_next:  # step 8
            return ErrorCode.BAD_REQUEST, "EVEN-PORT R with ADDITIONAL-ADDRESS-FAMILY"
        if additional.family is not AddressFamily.IPV6:  # step 9
            return ErrorCode.BAD_REQUEST, "ADDITIONAL-ADDRESS-FAMILY must be IPv6"
    if relay_host(config, requested_family(request)) is None:  # step 7
        return ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED, "Address Family not Supported"
    return None


def _reservation(context: RequestContext, request: Message, now: float) -> Reservation | None:
    """The live reservation the request's RESERVATION-TOKEN names, if any (step 5)."""
    token = request.get(ReservationToken)
    if token is None:
        return None
    reservation = context.table.reservations.get(token.value)
    # Its timer may not have run yet at `now`: an expired one is no longer valid.
    return None if reservation is None or reservation.expires_at <= now else reservation


def allocate(
    context: RequestContext,
    request: Message,
    five_tuple: FiveTuple,
    auth: Authenticated,
    now: float,
    redirection: Redirection,
) -> list[Action]:
    """Answer a failed Allocate, or hold it pending and ask the runtime to bind its port.

    `redirection`: whether the server drains, and where newcomers may be sent (300).
    """
    key = auth.credential.key
    table = context.table
    pending = table.pending.get(five_tuple)
    if pending is not None and pending.request.transaction_id == request.transaction_id:
        return []  # a retransmission while the relay port is being bound
    redirect = redirection.alternate_for(five_tuple)
    reservation = _reservation(context, request, now)
    failure = _state_failure(
        context, request, five_tuple, auth, redirection.draining, redirect, reservation
    )  # fmt: skip
    if failure is not None:
        code, reason = failure
        extra: tuple[Attribute, ...] = ()
        if code is ErrorCode.TRY_ALTERNATE and redirect is not None:
            extra = redirect.attributes(five_tuple.transport)
        reply = responses.error(request, code, context.software, key, reason=reason, extra=extra)
        return context.reply(request, five_tuple, now, reply)
    even_port = request.get(EvenPort)
    even = even_port is not None
    reserve = even_port is not None and even_port.reserve_next
    lifetime_attr = request.get(Lifetime)
    lifetime = context.config.allocate_lifetime(
        None if lifetime_attr is None else lifetime_attr.value
    )
    lifetime = auth.capped(lifetime)  # no longer than the credential lives (issue 15)
    if reservation is not None:  # step 5: exactly the reserved address
        table.take_reservation(reservation.token)
        context.timers.cancel(reservation)
        host, port = reservation.relayed
        family = AddressFamily.IPV6 if is_ipv6(host) else AddressFamily.IPV4
        pending = PendingAllocate(request, auth, lifetime, family, port, redeems=reservation)
        table.hold(five_tuple, pending)
        return [OpenRelay(five_tuple, host, port, reserved=True)]
    family = requested_family(request)
    port = 0
    if context.ports is not None:
        acquired = context.ports.acquire_pair() if reserve else context.ports.acquire(even=even)
        if acquired is None:
            context.stats.quota_rejections[Quota.PORTS] += 1
            reply = responses.error(
                request, ErrorCode.INSUFFICIENT_CAPACITY, context.software, key,
                reason="No relay port free",
            )  # fmt: skip
            return context.reply(request, five_tuple, now, reply)
        port = acquired
    pending = PendingAllocate(request, auth, lifetime, family, port, even=even, reserve=reserve)
    transport = request.get(RequestedTransport)
    pending.dual = additional_family(request) is not None and (
        transport is not None and transport.value == TransportProtocol.UDP
    )
    table.hold(five_tuple, pending)
    return [_open(context, five_tuple, pending)]


def _open(context: RequestContext, five_tuple: FiveTuple, pending: PendingAllocate) -> OpenRelay:
    host = pending_host(context.config, pending.family)
    dual_host = context.config.relay_host_v6 if pending.dual else None
    return OpenRelay(
        five_tuple, host, pending.port, even=pending.even, reserve_next=pending.reserve,
        dual_host=dual_host,
    )  # fmt: skip


def _state_failure(
    context: RequestContext,
    request: Message,
    five_tuple: FiveTuple,
    auth: Authenticated,
    draining: bool,
    redirect: Alternate | None,
    reservation: Reservation | None,
) -> tuple[ErrorCode, str] | None:
    """The first check of RFC 8656 §7.2 that fails, as (code, reason).

    Quotas count slots (`AllocationTable`): an R=1 Allocate needs two; one redeeming
    `reservation` needs none beyond the reservation's, which it takes over.
    """
    table, config, stats = context.table, context.config, context.stats
    if five_tuple in table.allocations or five_tuple in table.pending:
        return ErrorCode.ALLOCATION_MISMATCH, "Allocation already exists"  # step 2
    failure = unsatisfiable(request, config)  # steps 3, 5, 7
    if failure is not None:
        return failure
    if request.get(ReservationToken) is not None and reservation is None:
        return ErrorCode.INSUFFICIENT_CAPACITY, "No such reservation"  # step 5
    failure = mobility.refusal(request, five_tuple.transport, context.mobility is not None)
    if failure is not None:
        return failure  # RFC 8016 §3.1.2: 400 or 405
    if draining:
        if redirect is not None:
            return ErrorCode.TRY_ALTERNATE, "Server is draining: try the alternate"
        return ErrorCode.INSUFFICIENT_CAPACITY, "Server is draining"
    if redirect is not None:
        return ErrorCode.TRY_ALTERNATE, "Server is busy: try the alternate"  # overflow
    even_port = request.get(EvenPort)
    slots = 2 if even_port is not None and even_port.reserve_next else 1
    client = five_tuple.client
    identity = auth.credential.identity
    # The reservation's own slot, counted for its reserving identity and source.
    mine = reservation is not None and reservation.identity == identity
    ours = reservation is not None and reservation.source == source_of(client)
    quota = config.user_quota
    held = table.identity_count(identity) + table.remote_count(identity) - mine
    if quota and held + slots > quota:
        stats.quota_rejections[Quota.USER] += 1
        return ErrorCode.ALLOCATION_QUOTA_REACHED, "Allocation Quota Reached"  # step 8
    total = table.slots - (reservation is not None)
    if config.total_quota and total + slots > config.total_quota:
        stats.quota_rejections[Quota.TOTAL] += 1
        return ErrorCode.INSUFFICIENT_CAPACITY, "Server at capacity"
    per_source = config.allocations_per_source
    if per_source and table.source_count(client) - ours + slots > per_source:
        stats.quota_rejections[Quota.SOURCE] += 1
        return ErrorCode.ALLOCATION_QUOTA_REACHED, "Allocation Quota Reached for this address"
    pending = config.pending_per_source
    if pending and table.pending_source_count(client) >= pending:
        stats.quota_rejections[Quota.PENDING] += 1
        return ErrorCode.INSUFFICIENT_CAPACITY, "Too many Allocates in progress"
    return None


def pending_host(config: TurnConfig, family: AddressFamily) -> str:
    host = relay_host(config, family)
    assert host is not None, "checked by unsatisfiable (step 7)"
    return host


def relay_opened(
    context: RequestContext,
    five_tuple: FiveTuple,
    relayed: Address,
    now: float,
    runtime: object,
    reserved: Address | None = None,
    second: Address | None = None,
) -> list[Action]:
    """The pending Allocate's port is bound: create the allocation, answer success.

    `reserved`: the held socket's address when the Allocate reserves the next port;
    `second`: the other family's relayed address of a dual allocation, if it bound.
    """
    # Taken, not dropped: the allocation inherits the quota slots and the port.
    pending = context.table.take_pending(five_tuple)
    if pending is None:
        # The connection closed (or shutdown began) while the port was being bound.
        extra = [address for address in (reserved, second) if address is not None]
        return [CloseRelay(relayed), *(CloseRelay(address) for address in extra)]
    closing: list[Action] = []
    if second is not None and not pending.dual:  # not asked for: not kept
        closing, second = [CloseRelay(second)], None
    auth = pending.auth
    config = context.config
    external = config.external_host_v6 if is_ipv6(relayed[0]) else config.external_host
    reported = (external or relayed[0], relayed[1])
    second_reported = None if second is None else _reported(config, second)
    allocation = Allocation(
        five_tuple, relayed, reported, auth.username, auth.credential.identity,
        auth.credential.key, now + pending.lifetime, created_at=now, runtime=runtime,
        second=second, second_reported=second_reported,
    )  # fmt: skip
    context.table.add(allocation)
    context.stats.allocations_created[five_tuple.transport] += 1
    context.timers.schedule(allocation.expires_at, TimerKind.ALLOCATION, allocation)
    host, port = five_tuple.client
    attributes: tuple[Attribute, ...] = (
        XorRelayedAddress(*reported),
        *(() if second_reported is None else (XorRelayedAddress(*second_reported),)),
        Lifetime(pending.lifetime),
        XorMappedAddress(unmap_ipv4(host), port),
    )
    if second is None and additional_family(pending.request) is not None:  # §7.2 step 9
        attributes += (_address_error(config, tried=pending.dual),)
    if pending.reserve:
        attributes += _reserve(context, five_tuple, auth.credential.identity, reserved, now)
    if context.mobility is not None and mobility.wants_mobility(pending.request):
        ticket = context.mobility.enrol(allocation)  # RFC 8016 §3.1.2
        attributes += () if ticket is None else (ticket,)
    reply = responses.success(pending.request, attributes, context.software, allocation.key)
    return [
        *closing,
        *context.reply(pending.request, five_tuple, now, reply),
        AllocationCreated(five_tuple, relayed, auth.username, pending.lifetime),
    ]


def _reported(config: TurnConfig, relayed: Address) -> Address:
    """What XOR-RELAYED-ADDRESS says for `relayed`: its family's external host, if any."""
    external = config.external_host_v6 if is_ipv6(relayed[0]) else config.external_host
    return (external or relayed[0], relayed[1])


def _address_error(config: TurnConfig, tried: bool) -> AddressErrorCode:
    """ADDRESS-ERROR-CODE for a dual allocation's IPv6 address that was not made: 440
    when the node relays no IPv6 or does not offer it (a TCP allocation, not `tried`),
    508 when its socket could not be bound."""
    if config.relay_host_v6 is None or not tried:
        reason = "Address Family not Supported" + ("" if tried else " for TCP allocations")
        return AddressErrorCode(AddressFamily.IPV6, ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED, reason)
    return AddressErrorCode(
        AddressFamily.IPV6, ErrorCode.INSUFFICIENT_CAPACITY, "Insufficient Capacity"
    )


def _reserve(
    context: RequestContext,
    five_tuple: FiveTuple,
    identity: str,
    reserved: Address | None,
    now: float,
) -> tuple[Attribute, ...]:
    """The reservation of an R=1 Allocate (§7.2): its token for the success response."""
    table = context.table
    if reserved is None:  # the runtime made none (it must bind both or neither)
        table.drop_slot(identity, five_tuple.client)
        return ()
    token = table.new_token(context.worker)
    reservation = Reservation(
        token, reserved, identity, source_of(five_tuple.client), now + RESERVATION_SECONDS
    )  # fmt: skip
    table.add_reservation(reservation)
    context.timers.schedule(reservation.expires_at, TimerKind.RESERVATION, reservation)
    return (ReservationToken(token),)


def reservation_expired(context: RequestContext, reservation: Reservation) -> list[Action]:
    """A reservation's 30 s ran out unredeemed: close its held socket, free its port."""
    if context.table.end_reservation(reservation):
        return [CloseRelay(reservation.relayed)]
    return []  # redeemed meanwhile (its timer was cancelled then)


def end_reservations(context: RequestContext) -> list[Action]:
    """End every reservation now (the server shuts down)."""
    actions: list[Action] = []
    for reservation in list(context.table.reservations.values()):
        context.timers.cancel(reservation)
        actions += reservation_expired(context, reservation)
    return actions


def relay_failed(context: RequestContext, five_tuple: FiveTuple, now: float) -> list[Action]:
    """The pending Allocate's port could not be bound: try another, or answer 508.

    A redeemed reservation's port is the only one it may have: 508 at once.
    """
    pending = context.table.pending.get(five_tuple)
    if pending is None:
        return []  # the connection closed (or shutdown began) meanwhile
    ports = context.ports
    retry = pending.redeems is None and pending.attempts < _MAX_BIND_ATTEMPTS
    if ports is not None and retry:
        context.table.release_ports(pending)
        port = ports.acquire_pair() if pending.reserve else ports.acquire(even=pending.even)
        if port is not None:
            pending.port = port
            pending.attempts += 1
            return [_open(context, five_tuple, pending)]
    context.table.drop_pending(five_tuple)  # (releasing a port twice is a no-op)
    reply = responses.error(
        pending.request, ErrorCode.INSUFFICIENT_CAPACITY, context.software,
        pending.auth.credential.key, reason="Could not bind a relay port",
    )  # fmt: skip
    return context.reply(pending.request, five_tuple, now, reply)
