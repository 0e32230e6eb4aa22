"""The revocations file: its format, `revoke`, and the watcher every node runs."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest
import trio
import trio.testing

from trelay.config.file_watch import POLL_SECONDS
from trelay.config.revocations import (
    Revocation,
    Revocations,
    format_revocations,
    load_revocations,
    parse_revocations,
    parse_until,
    read_revocations_file,
    revoke,
    watch_revocations_file,
)

NOW = 1_800_000_000.0


def test_entries_in_every_until_form() -> None:
    entries = parse_revocations(
        '[[revoked]]\nidentity = "alice"\nuntil = 1800000600\n'
        '[[revoked]]\nidentity = "bob"\nuntil = 2027-01-15T08:00:00Z\n'
        '[[revoked]]\nidentity = "carol"\nuntil = "2027-01-15T10:00:00+02:00"\n'
        '[[revoked]]\nidentity = "dave"\nuntil = 1800000600.5\n'
    )
    eight_utc = dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp()
    assert entries == [
        Revocation("alice", 1_800_000_600.0),
        Revocation("bob", eight_utc),
        Revocation("carol", eight_utc),
        Revocation("dave", 1_800_000_600.5),
    ]
    assert parse_until(1800000600) == 1_800_000_600.0
    assert parse_until("2027-01-15T08:00:00Z") == eight_utc


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[revoked]\n", "not valid TOML"),
        ("other = 1\n", "other: unknown key"),
        ("revoked = 1\n", "array of tables"),
        ("[[revoked]]\nuntil = 1\n", "revoked[0].identity"),
        ('[[revoked]]\nidentity = "a"\n', "revoked[0].until: missing"),
        ('[[revoked]]\nidentity = "a"\nuntil = true\n', "revoked[0].until"),
        ('[[revoked]]\nidentity = "a"\nuntil = "soon"\n', "not an RFC 3339"),
        ('[[revoked]]\nidentity = "a"\nuntil = 2027-01-15T08:00:00\n', "UTC offset"),
        ('[[revoked]]\nidentity = "a"\nuntil = 1\nwhy = "x"\n', "revoked[0].why"),
    ],
)
def test_a_bad_file_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_revocations(text)


def test_is_revoked_until_the_time_and_the_latest_entry_wins() -> None:
    revocations = Revocations([Revocation("alice", NOW + 10), Revocation("alice", NOW + 5)])
    assert revocations.is_revoked("alice", NOW)
    assert revocations.is_revoked("alice", NOW + 9.9)
    assert not revocations.is_revoked("alice", NOW + 10)
    assert not revocations.is_revoked("bob", NOW)
    revocations.add(Revocation("bob", NOW + 1))
    assert revocations.is_revoked("bob", NOW) and len(revocations) == 2


def test_revoke_appends_atomically_and_drops_old_entries(tmp_path: Path) -> None:
    path = tmp_path / "revoked.toml"
    assert read_revocations_file(path) == []  # no file yet: nothing revoked
    revoke(path, "alice", NOW + 100, NOW)
    revoke(path, 'we"ird\\name', NOW + 200, NOW)
    revoke(path, "bob", NOW + 300, NOW + 150)  # alice's entry is over by then
    entries = read_revocations_file(path)
    assert entries == [Revocation('we"ird\\name', NOW + 200), Revocation("bob", NOW + 300)]
    assert load_revocations(path).is_revoked("bob", NOW + 299)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".revoked.toml.lock", "revoked.toml"]
    with pytest.raises(ValueError, match="identity"):
        revoke(path, "", NOW + 1, NOW)


def test_format_round_trips() -> None:
    entries = [Revocation("alice", NOW), Revocation("ctrl\x01char", NOW + 1)]
    assert parse_revocations(format_revocations(entries)) == entries


async def test_the_watcher_reloads_and_keeps_the_list_on_a_bad_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "revoked.toml"
    revocations = load_revocations(path)
    assert len(revocations) == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_revocations_file, path, revocations)
        revoke(path, "alice", NOW + 60, NOW)
        await trio.sleep(POLL_SECONDS * 1.5)
        assert revocations.is_revoked("alice", NOW)
        # Another node's copy, replaced as Kubernetes or rsync do.
        replace_file(path, format_revocations([Revocation("bob", NOW + 60)]))
        await trio.sleep(POLL_SECONDS * 1.5)
        assert revocations.is_revoked("bob", NOW) and not revocations.is_revoked("alice", NOW)
        # A broken or vanished file keeps the list: nobody is let back in by accident.
        replace_file(path, "[[revoked]]\nidentity = 3\n")
        await trio.sleep(POLL_SECONDS * 1.5)
        assert revocations.is_revoked("bob", NOW)
        path.unlink()
        await trio.sleep(POLL_SECONDS * 1.5)
        assert revocations.is_revoked("bob", NOW)
        # An empty file is a valid, empty list.
        replace_file(path, "")
        await trio.sleep(POLL_SECONDS * 1.5)
        assert not revocations.is_revoked("bob", NOW)
        nursery.cancel_scope.cancel()


def replace_file(path: Path, text: str) -> None:
    temporary = path.with_suffix(".new")
    temporary.write_text(text)
    os.replace(temporary, path)
