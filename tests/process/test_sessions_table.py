"""`trelay sessions`' table and the route's `relayed_addresses`: a dual allocation's
relayed addresses, both or the one still relaying."""

from __future__ import annotations

from tests.helpers.turn_harness import assert_success
from tests.turn.test_dual_allocation import dual_client, dual_stack
from tests.turn.test_dual_withdraw_first import IPV4
from trelay.config.values import format_host_port
from trelay.node.sessions import Session, Traffic
from trelay.ops.admin_routes import ListedSession, session_json
from trelay.process.commands.admin import table
from trelay.stun.attributes import Lifetime
from trelay.stun.codes import Method


def session(**fields: object) -> dict[str, object]:
    return {"transport": "udp", "client": "127.0.0.1:5000", "identity": "alice", **fields}


def test_relayed_shows_every_relayed_address() -> None:
    dual = session(relayed="127.0.0.1:50000", relayed_addresses=["127.0.0.1:50000", "[::1]:50000"])
    header, row = table([dual]).splitlines()
    assert "RELAYED" in header
    assert "127.0.0.1:50000,[::1]:50000" in row.split()


def test_an_older_relay_without_the_field_shows_relayed() -> None:
    _, row = table([session(relayed="127.0.0.1:50000")]).splitlines()
    assert "127.0.0.1:50000" in row.split()


def test_the_route_lists_only_relaying_addresses() -> None:
    """`session_json`: a dual allocation's two addresses, then without a withdrawn first."""
    server = dual_stack()
    c, v4, v6 = dual_client(server)
    addresses = [format_host_port(*a) for a in (v4, v6)]

    def listed() -> object:
        [view] = server.allocation_views(0.0)
        entry = ListedSession(Session(view, Traffic()), None)
        return session_json(entry)["relayed_addresses"]

    assert listed() == addresses
    assert_success(c, c.call(Method.REFRESH, Lifetime(0), IPV4))
    assert listed() == addresses[1:]
