"""Overflow: a core told to redirect new Allocates (`TurnServer.redirect_new_allocations`)
answers them 300 Try Alternate naming an alternate of the client's transport and address
family (RFC 8489 §10, §14.15; RFC 8656 §6.2), with ALTERNATE-DOMAIN over TLS and DTLS only
(§14.16); a client no alternate fits is served (overflow is soft). While draining, a
fleet alternate beats the static drain alternate, which stays the fallback; with
neither, 508. Existing allocations, Refresh, permissions and channels are untouched.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.turn_harness import Client, assert_error, assert_success, make_server
from trelay.stun.address_attributes import AlternateServer
from trelay.stun.attributes import AlternateDomain
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.turn.addressing import ClientTransport, FiveTuple
from trelay.turn.config import TurnConfig
from trelay.turn.redirection import ALL_TRANSPORTS, SECURE_TRANSPORTS, Alternate, Redirection

V4 = Alternate(("198.51.100.20", 3478), frozenset({ClientTransport.UDP, ClientTransport.TCP}))
V6 = Alternate(("2001:db8::20", 3478), frozenset({ClientTransport.UDP, ClientTransport.TCP}))
TLS = Alternate(("198.51.100.20", 5349), frozenset({ClientTransport.TLS}), "b.example.org")
STATIC = ("198.51.100.99", 3478)
PEER = ("127.0.0.1", 40000)


def test_an_ipv4_newcomer_gets_300_naming_the_ipv4_alternate_signed() -> None:
    server = make_server()
    server.redirect_new_allocations((V6, V4))
    newcomer = Client(server)
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 300, signed=True)
    assert reply.get(AlternateServer) == AlternateServer(*V4.address)
    assert reply.get(AlternateDomain) is None  # UDP: no domain to check
    error = reply.get(ErrorCodeAttribute)
    assert error is not None and error.reason == "Server is busy: try the alternate"
    assert server.allocation_count == 0
    assert not server.draining


def test_an_ipv6_newcomer_gets_the_ipv6_alternate() -> None:
    server = make_server(TurnConfig(realm="example.org", relay_host_v6="2001:db8::1"))
    server.redirect_new_allocations((V4, V6))
    newcomer = Client(server, address=("2001:db8::5", 5000))
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 300, signed=True)
    assert reply.get(AlternateServer) == AlternateServer(*V6.address)


def test_no_alternate_of_the_clients_family_means_served_here() -> None:
    server = make_server()
    server.redirect_new_allocations((V6,))
    newcomer = Client(server)
    assert_success(newcomer, newcomer.allocate())
    assert server.allocation_count == 1


def test_no_alternate_of_the_clients_transport_means_served_here() -> None:
    server = make_server()
    server.redirect_new_allocations((TLS,))
    assert_success(client := Client(server), client.allocate())  # UDP: TLS-only alternate


def test_over_tls_the_alternate_domain_is_sent() -> None:
    server = make_server()
    server.redirect_new_allocations((V4, TLS))
    newcomer = Client(server, transport=ClientTransport.TLS)
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 300, signed=True)
    assert reply.get(AlternateServer) == AlternateServer(*TLS.address)
    assert reply.get(AlternateDomain) == AlternateDomain("b.example.org")


def test_over_tls_an_alternate_without_a_domain_sends_none() -> None:
    server = make_server()
    server.redirect_new_allocations((Alternate(("198.51.100.20", 5349)),))
    newcomer = Client(server, transport=ClientTransport.TLS)
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 300, signed=True)
    assert reply.get(AlternateDomain) is None


def test_empty_stops_redirecting() -> None:
    server = make_server()
    server.redirect_new_allocations((V4,))
    assert_error(first := Client(server), first.allocate(), 300, signed=True)
    server.redirect_new_allocations(())
    assert_success(second := Client(server, address=("203.0.113.6", 1)), second.allocate())


def test_existing_allocations_refresh_permit_bind_while_redirecting() -> None:
    server = make_server()
    alice = Client(server)
    assert_success(alice, alice.allocate())
    server.redirect_new_allocations((V4,))
    assert_success(alice, alice.refresh(600))
    assert_success(alice, alice.permit(PEER))
    assert_success(alice, alice.bind(0x4000, PEER))
    assert server.allocation_count == 1
    # A second Allocate on the same 5-tuple is still 437 (step 2 comes first).
    assert_error(alice, alice.allocate(), 437, signed=True)


def test_draining_a_fleet_alternate_beats_the_static_one() -> None:
    server = make_server()
    server.start_draining(alternate=STATIC)
    server.redirect_new_allocations((V4,))
    newcomer = Client(server)
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 300, signed=True)
    assert reply.get(AlternateServer) == AlternateServer(*V4.address)
    error = reply.get(ErrorCodeAttribute)
    assert error is not None and error.reason == "Server is draining: try the alternate"


def test_draining_the_static_alternate_is_the_fallback() -> None:
    server = make_server()
    server.start_draining(alternate=STATIC)
    server.redirect_new_allocations((V6,))  # no IPv4 fleet alternate
    newcomer = Client(server)
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 300, signed=True)
    assert reply.get(AlternateServer) == AlternateServer(*STATIC)


def test_draining_with_no_fitting_alternate_is_508() -> None:
    server = make_server()
    server.start_draining()
    server.redirect_new_allocations((V6,))
    newcomer = Client(server)
    reply = newcomer.allocate()
    assert_error(newcomer, reply, 508, signed=True)
    assert reply.get(AlternateServer) is None


def test_redirect_comes_before_the_quotas() -> None:
    server = make_server(TurnConfig(realm="example.org", relay_host="198.51.100.1", user_quota=1))
    assert_success(alice := Client(server), alice.allocate())
    server.redirect_new_allocations((V4,))
    again = Client(server, address=("203.0.113.6", 1))
    assert_error(again, again.allocate(), 300, signed=True)


def test_alternate_checks_its_values() -> None:
    with pytest.raises(ValueError, match="transport"):
        Alternate(("198.51.100.1", 1), frozenset())
    with pytest.raises(ValueError, match="255"):
        Alternate(("198.51.100.1", 1), domain="x" * 256)
    with pytest.raises(ValueError, match="255"):
        Alternate(("198.51.100.1", 1), domain="")


_hosts_v4 = st.sampled_from(["198.51.100.1", "203.0.113.9", "::ffff:192.0.2.4"])
_hosts_v6 = st.sampled_from(["2001:db8::1", "2001:db8::2"])
_alternates = st.builds(
    Alternate,
    address=st.tuples(st.one_of(_hosts_v4.filter(lambda h: "::" not in h), _hosts_v6),
                      st.integers(1, 65535)),
    transports=st.frozensets(st.sampled_from(list(ClientTransport)), min_size=1),
    domain=st.none() | st.just("b.example.org"),
)  # fmt: skip


@given(
    fleet=st.lists(_alternates, max_size=4).map(tuple),
    draining=st.booleans(),
    static=st.none() | st.tuples(st.one_of(_hosts_v4.filter(lambda h: "::" not in h), _hosts_v6),
                                 st.integers(1, 65535)),
    transport=st.sampled_from(list(ClientTransport)),
    client=st.one_of(_hosts_v4, _hosts_v6),
)  # fmt: skip
def test_the_choice_fits_the_client_and_prefers_the_fleet(
    fleet: tuple[Alternate, ...],
    draining: bool,
    static: tuple[str, int] | None,
    transport: ClientTransport,
    client: str,
) -> None:
    five_tuple = FiveTuple(transport, (client, 4000), ("192.0.2.1", 3478))
    chosen = Redirection(draining, static, fleet).alternate_for(five_tuple)
    fitting = [a for a in fleet if a.fits(five_tuple)]
    if fitting:
        assert chosen == fitting[0]
    elif draining and static is not None and Alternate(static).fits(five_tuple):
        assert chosen == Alternate(static)
    else:
        assert chosen is None
    if chosen is not None:
        client_v6 = ":" in client and not client.startswith("::ffff:")
        assert (":" in chosen.address[0]) == client_v6
        assert transport in chosen.transports
        attributes = chosen.attributes(transport)
        assert attributes[0] == AlternateServer(*chosen.address)
        has_domain = any(isinstance(a, AlternateDomain) for a in attributes)
        assert has_domain == (transport in SECURE_TRANSPORTS and chosen.domain is not None)
    assert frozenset(ClientTransport) == ALL_TRANSPORTS
