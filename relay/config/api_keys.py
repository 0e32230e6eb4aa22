"""API keys: the keys file (TOML) that access tokens and the token API are checked against.

Owns the `[api] keys_file` format, its loading and `trelay keys create`. A key is what
Twilio calls an API key: a SID ("SK" + 32 hex digits), a secret (the HMAC key of HS256
access tokens and the password of HTTP Basic auth) and the account it belongs to ("AC"
+ 32 hex digits), with an optional `not_after` after which it is refused. Several keys
at once let an operator rotate: add a key, move back-ends to it, remove the old one.

    [[keys]]
    sid = "SK0123456789abcdef0123456789abcdef"
    secret = "..."                      # at least 32 bytes (RFC 7518 §3.2 for HS256)
    account = "AC0123456789abcdef0123456789abcdef"
    not_after = 2027-01-31              # optional: a TOML date (the whole day) or datetime

Invariants: a file loads whole or not at all (`ApiKeyError` names the entry and the
problem); SIDs are unique; secrets never appear in `repr` or in error messages; files
written here are 0600 and replaced atomically (temporary file + rename), so a node
watching or reading the file never sees half a key.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trelay.config.files import FileProblem, read_text_bounded, write_file_atomically

SID_PATTERN = re.compile(r"SK[0-9a-fA-F]{32}")
ACCOUNT_PATTERN = re.compile(r"AC[0-9a-fA-F]{32}")
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash output
SECRET_LENGTH = 32
MAX_FILE_BYTES = 1024 * 1024
_FIELDS = frozenset({"sid", "secret", "account", "not_after"})
_SECRET_ALPHABET = string.ascii_letters + string.digits


class ApiKeyError(ValueError):
    """A keys file that cannot be used: `key` names the entry or file, `problem` says why."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key. `not_after` is an aware UTC datetime, None for no end."""

    sid: str
    secret: str = field(repr=False)
    account: str
    not_after: dt.datetime | None = None

    def usable_at(self, unix_now: float) -> bool:
        """False once `unix_now` is past `not_after`."""
        return self.not_after is None or unix_now <= self.not_after.timestamp()


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The keys of one file, in file order (SIDs unique)."""

    keys: tuple[ApiKey, ...] = ()

    def __iter__(self) -> Iterator[ApiKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def by_sid(self, sid: str) -> ApiKey | None:
        for key in self.keys:
            if key.sid == sid:
                return key
        return None

    def newest_usable(self, unix_now: float) -> ApiKey | None:
        """The last key in the file that is still usable (keys are appended when created)."""
        for key in reversed(self.keys):
            if key.usable_at(unix_now):
                return key
        return None


def new_sid(prefix: str = "SK") -> str:
    return prefix + secrets.token_hex(16)


def new_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def parse_keys(text: str, source: str = "keys file") -> ApiKeys:
    """The keys in TOML `text`; ApiKeyError names the entry (`keys[2]`) and the problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ApiKeyError(source, f"not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"keys"})
    if unknown:
        raise ApiKeyError(unknown[0], "unknown key (expected [[keys]] tables)")
    entries = document.get("keys", [])
    if not isinstance(entries, list):
        raise ApiKeyError("keys", "must be an array of tables ([[keys]])")
    keys: list[ApiKey] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = f"keys[{index}]"
        if not isinstance(entry, dict):
            raise ApiKeyError(name, "must be a table")
        key = _parse_entry(name, entry)
        if key.sid in seen:
            raise ApiKeyError(f"{name}.sid", f"duplicate SID {key.sid}")
        seen.add(key.sid)
        keys.append(key)
    return ApiKeys(tuple(keys))


def _parse_entry(name: str, entry: Mapping[str, object]) -> ApiKey:
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ApiKeyError(f"{name}.{unknown[0]}", "unknown field")
    sid = _text(name, entry, "sid")
    if not SID_PATTERN.fullmatch(sid):
        raise ApiKeyError(f"{name}.sid", f"{sid!r} is not 'SK' followed by 32 hex digits")
    name = f"{name} ({sid})"
    secret = _text(name, entry, "secret")
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        # The value itself is never echoed.
        raise ApiKeyError(f"{name}.secret", f"shorter than {MIN_SECRET_BYTES} bytes")
    account = _text(name, entry, "account")
    if not ACCOUNT_PATTERN.fullmatch(account):
        raise ApiKeyError(f"{name}.account", f"{account!r} is not 'AC' followed by 32 hex digits")
    return ApiKey(sid, secret, account, _not_after(name, entry.get("not_after")))


def _text(name: str, entry: Mapping[str, object], field_name: str) -> str:
    value = entry.get(field_name)
    if value is None:
        raise ApiKeyError(f"{name}.{field_name}", "missing")
    if not isinstance(value, str) or not value:
        raise ApiKeyError(f"{name}.{field_name}", "must be a non-empty string")
    return value


def _not_after(name: str, value: object) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        # A local (offset-less) TOML datetime is read as UTC: nodes must agree on it.
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        # A date means the key is usable through that whole day (UTC).
        start = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return start + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    raise ApiKeyError(f"{name}.not_after", "must be a TOML date or datetime")


def load_keys(path: Path) -> ApiKeys:
    """The keys in `path`; ApiKeyError if it is unreadable, invalid or holds no key."""
    keys = parse_keys(_read(path), str(path))
    if not keys.keys:
        raise ApiKeyError(str(path), "holds no key ([[keys]] with sid, secret, account)")
    return keys


def _read(path: Path) -> str:
    try:
        return read_text_bounded(path, MAX_FILE_BYTES)
    except FileProblem as exc:
        raise ApiKeyError(str(path), exc.problem) from None


def create_key(path: Path, account: str | None = None) -> ApiKey:
    """Append a new key to `path` (created 0600 if absent) and return it.

    The account defaults to the file's first key's, or a new one for a new file. An
    existing file that does not load is left alone (ApiKeyError).
    """
    existing = _read(path) if path.exists() else ""
    keys = parse_keys(existing, str(path))
    if account is None:
        account = keys.keys[0].account if keys.keys else new_sid("AC")
    if not ACCOUNT_PATTERN.fullmatch(account):
        raise ApiKeyError("--account", f"{account!r} is not 'AC' followed by 32 hex digits")
    key = ApiKey(new_sid("SK"), new_secret(), account)
    block = f'[[keys]]\nsid = "{key.sid}"\nsecret = "{key.secret}"\naccount = "{key.account}"\n'
    if existing and not existing.endswith("\n"):
        existing += "\n"
    write_file_atomically(path, existing + ("\n" if existing else "") + block)
    return key
