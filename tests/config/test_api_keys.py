"""The keys file: its format, the errors that name the entry, `create_key`."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest

from trelay.config.api_keys import ApiKey, ApiKeyError, create_key, load_keys, parse_keys

SID = "SK" + "0123456789abcdef" * 2
SID2 = "SK" + "fedcba9876543210" * 2
ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"
SECRET = "s" * 32


def entry(sid: str = SID, secret: str = SECRET, account: str = ACCOUNT, extra: str = "") -> str:
    return f'[[keys]]\nsid = "{sid}"\nsecret = "{secret}"\naccount = "{account}"\n{extra}\n'


def test_several_keys_load_in_order_with_not_after() -> None:
    text = entry() + entry(SID2, extra="not_after = 2027-01-31")
    keys = parse_keys(text)
    assert [k.sid for k in keys] == [SID, SID2]
    assert keys.by_sid(SID2) is keys.keys[1]
    assert keys.by_sid("SK" + "0" * 32) is None
    end = keys.keys[1].not_after
    assert end is not None and end.tzinfo is not None
    # A date is the whole day, UTC.
    last_second = dt.datetime(2027, 1, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    assert keys.keys[1].usable_at(last_second)
    assert not keys.keys[1].usable_at(last_second + 1)
    assert keys.newest_usable(last_second) == keys.keys[1]
    assert keys.newest_usable(last_second + 1) == keys.keys[0]


def test_a_datetime_not_after_with_or_without_offset() -> None:
    keys = parse_keys(
        entry(extra="not_after = 2027-01-31T12:00:00+02:00")
        + entry(SID2, extra="not_after = 2027-01-31T12:00:00")
    )
    first, second = (k.not_after for k in keys)
    assert first == dt.datetime(2027, 1, 31, 10, tzinfo=dt.UTC)
    assert second == dt.datetime(2027, 1, 31, 12, tzinfo=dt.UTC)


def test_the_secret_is_not_in_repr() -> None:
    key = parse_keys(entry()).keys[0]
    assert SECRET not in repr(key) and SID in repr(key)
    assert SECRET not in repr(parse_keys(entry()))


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[[keys]\n", "keys file", "not valid TOML"),
        ("other = 1\n", "other", "unknown key"),
        ("keys = 3\n", "keys", "array of tables"),
        (entry(sid="SK123"), "keys[0].sid", "32 hex digits"),
        (entry(account="AX" + "0" * 32), f"keys[0] ({SID}).account", "32 hex digits"),
        (entry(secret="short"), f"keys[0] ({SID}).secret", "shorter than 32 bytes"),
        (entry(extra="colour = 1"), "keys[0].colour", "unknown field"),
        (entry(extra='not_after = "soon"'), f"keys[0] ({SID}).not_after", "date or datetime"),
        ('[[keys]]\nsid = "' + SID + '"\n', f"keys[0] ({SID}).secret", "missing"),
        (entry() + entry(), "keys[1].sid", "duplicate SID"),
        (entry() + entry(SID2, secret=""), f"keys[1] ({SID2}).secret", "non-empty string"),
    ],
)
def test_a_bad_entry_is_named(text: str, key: str, problem: str) -> None:
    with pytest.raises(ApiKeyError) as caught:
        parse_keys(text)
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_a_short_secret_is_not_echoed() -> None:
    with pytest.raises(ApiKeyError) as caught:
        parse_keys(entry(secret="hunter2-is-my-password"))
    assert "hunter2" not in str(caught.value)


def test_load_keys_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    with pytest.raises(ApiKeyError, match="file not found"):
        load_keys(path)
    path.write_text("# nothing yet\n")
    with pytest.raises(ApiKeyError, match="holds no key"):
        load_keys(path)
    path.write_bytes(b"\xff")
    with pytest.raises(ApiKeyError, match="not UTF-8"):
        load_keys(path)


def test_create_key_makes_a_private_file_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    first = create_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.sid.startswith("SK") and first.account.startswith("AC")
    assert len(first.secret) == 32
    second = create_key(path)
    assert second.account == first.account  # the file's account by default
    third = create_key(path, ACCOUNT)
    keys = load_keys(path)
    assert list(keys) == [first, second, third]
    assert third.account == ACCOUNT
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.toml"]  # no temporaries left


def test_create_key_keeps_existing_text_and_refuses_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text("# operator's comment\n" + entry().rstrip("\n"))
    added = create_key(path)
    assert path.read_text().startswith("# operator's comment\n")
    assert [k.sid for k in load_keys(path)] == [SID, added.sid]
    path.write_text("[[keys]]\nsid = 1\n")
    before = path.read_text()
    with pytest.raises(ApiKeyError, match="keys"):
        create_key(path)
    assert path.read_text() == before
    with pytest.raises(ApiKeyError) as caught:
        create_key(tmp_path / "new.toml", "ACnope")
    assert caught.value.key == "--account"
    assert not (tmp_path / "new.toml").exists()


def test_api_key_value() -> None:
    key = ApiKey(SID, SECRET, ACCOUNT)
    assert key.usable_at(1e12)
