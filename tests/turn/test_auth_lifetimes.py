"""Credential lifetimes (issue 15): a bound on how far out a credential may expire, the
allocation's lifetime capped at the credential's expiry, and one answer for every method
once it has expired; and the replay of a deleted allocation's Allocate (438)."""

from __future__ import annotations

import pytest

from tests.helpers.turn_harness import (
    SECRET,
    Client,
    Clock,
    assert_error,
    assert_success,
    make_server,
)
from trelay.stun.attributes import Lifetime
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.message import Message
from trelay.turn.auth import DEFAULT_MAX_CREDENTIAL_LIFETIME, AuthFailure
from trelay.turn.credential_sources import rest_password
from trelay.turn.nonces import NonceStamper

PEER = ("8.8.8.8", 9)


def _reason(reply: Message | None) -> str:
    assert reply is not None
    attribute = reply.get(ErrorCodeAttribute)
    assert attribute is not None
    return str(attribute.reason)


@pytest.mark.parametrize(
    "expiry",
    ["2015959200", "4294967295", "9" * 400],  # 10 years out, the 32-bit end, infinity
)
def test_a_credential_expiring_too_far_out_is_401(expiry: str) -> None:
    clock = Clock()
    c = Client(make_server(clock=clock))
    c.username = f"{expiry}:carol"
    c.password = rest_password(SECRET, c.username)
    reply = c.allocate()
    assert_error(c, reply, 401, signed=True)
    assert _reason(reply) == "Credential lifetime too long"
    assert not c.server.allocations
    assert c.server.stats.auth_failures[AuthFailure.TOO_LONG] == 1


def test_the_bound_is_configurable_and_a_day_is_within_the_default() -> None:
    clock = Clock()
    c = Client(make_server(clock=clock))
    c.use_rest("carol", clock.unix + 86400)
    assert_success(c, c.allocate())
    assert DEFAULT_MAX_CREDENTIAL_LIFETIME >= 86400  # the token API mints up to a day
    server = make_server(clock=clock)
    server.auth._max_lifetime = 600.0  # as LongTermAuthenticator(max_credential_lifetime=600)
    d = Client(server)
    d.use_rest("carol", clock.unix + 601)
    assert_error(d, d.allocate(), 401, signed=True)


def test_the_allocation_lifetime_is_capped_at_the_credential_expiry() -> None:
    clock = Clock()
    c = Client(make_server(clock=clock))
    c.use_rest("carol", clock.unix + 5)
    reply = c.allocate(Lifetime(3600))
    assert_success(c, reply)
    assert reply.get(Lifetime) == Lifetime(5)
    assert c.server.allocations[c.five_tuple].expires_at == 5
    clock.unix += 2
    c.now = 2
    refreshed = c.refresh(3600)
    assert_success(c, refreshed)
    assert refreshed.get(Lifetime) == Lifetime(3)


def test_after_expiry_every_method_gets_the_same_401() -> None:
    clock = Clock()
    c = Client(make_server(clock=clock))
    c.use_rest("carol", clock.unix + 100)
    assert_success(c, c.allocate())
    assert_success(c, c.permit(PEER))
    clock.unix += 100
    c.now = 100  # the allocation's own timer has not run yet: only expiry decides
    for reply in (c.refresh(), c.permit(PEER), c.bind(0x4000, PEER), c.allocate()):
        assert_error(c, reply, 401, signed=True)
        assert _reason(reply) == "Credentials expired"


def test_a_retired_address_s_older_nonces_are_stale_and_its_next_ones_good() -> None:
    stamper = NonceStamper(b"n" * 32, 3600)
    client, other = ("203.0.113.5", 50000), ("203.0.113.6", 50000)
    now = 1_700_000_000.25
    old, kept = stamper.mint(client, now), stamper.mint(other, now)
    stamper.retire(client, now + 0.5)  # its allocation ended, in the same second
    assert not stamper.is_valid(old, client, now + 41)  # a replay 41 s later: 438
    assert stamper.is_valid(kept, other, now + 41)
    fresh = stamper.mint(client, now + 0.6)  # the NONCE of that 438
    assert stamper.is_valid(fresh, client, now + 41)
    assert stamper.retired_count == 1
    stamper.retire(other, now + 3602)  # the first entry's nonces have all expired
    assert stamper.retired_count == 1
