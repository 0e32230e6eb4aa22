"""`trelay sessions`' table: a dual allocation's RELAYED column shows both addresses."""

from __future__ import annotations

from trelay.process.commands.admin import table


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
