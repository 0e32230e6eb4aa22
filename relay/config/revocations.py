"""Revoked identities, kept in a file that every relay node watches and reloads.

Owns the `[auth] revocations_file` format, the in-memory list the TURN core consults
(`Revocations.is_revoked(identity, unix_now)`, the `is_revoked` hook of
`trelay.turn.auth.LongTermAuthenticator`: a revoked identity's Allocate and Refresh get 401),
`revoke()` that the token API calls, and `watch_revocations_file`.

The file is TOML, one table per revocation; `until` is Unix seconds or an RFC 3339
date-time (a TOML datetime or a string). Past entries are harmless and dropped the next
time `revoke()` rewrites the file:

    [[revoked]]
    identity = "alice"
    until = 2026-12-01T00:00:00Z

    [[revoked]]
    identity = "SK0123456789abcdef0123456789abcdef"
    until = 1795000000

How nodes learn revocations, with no shared database: each node reads its own copy of
the file and re-reads it when its identity (inode, size, mtime) changes, every
`POLL_SECONDS`. Operators distribute it with whatever already moves files: a shared
volume (NFS, a host path) that the API node writes into; a Kubernetes ConfigMap or
Secret mounted as a volume (the kubelet swaps it atomically through a symlink; update
it with `kubectl apply`); rsync or scp from the API node; configuration management
(Ansible, Puppet, Salt). A revocation takes effect on a node one poll after its copy
changes. Credentials are stateless (HMAC), so nothing else needs to be shared.

A node in a fleet also learns revocations from Redis (`trelay.fleet.revocations`): they
are a second source of the same `Revocations`, so a file reload and a Redis reload never
wipe each other's entries.

Invariants: a file that turns unreadable or invalid is logged and ignored (the node
keeps its current list, as `trelay.config.secrets_file` does); writes replace the file
atomically (temporary file + rename) under an exclusive lock, so readers never see half
a file and two writers on one host never lose each other's entry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from trelay.config.file_watch import POLL_SECONDS, watch_file
from trelay.config.files import FileProblem, read_text_bounded, write_file_atomically
from trelay.config.values import SettingsError

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_IDENTITY_BYTES = 256
# The sources of a node's `Revocations`.
FILE = "file"
FLEET = "fleet"


@dataclass(frozen=True, slots=True)
class Revocation:
    """`identity` is refused until `until` (Unix seconds)."""

    identity: str
    until: float


class Revocations:
    """The revoked identities a node knows of, by source; a source is swapped whole on reload.

    Sources (`FILE`: `auth.revocations_file` and the token API's own writes; `FLEET`:
    Redis, `trelay.fleet.revocations`) are kept apart, so that reloading one never wipes
    the other; an identity is revoked while any source says so.
    """

    __slots__ = ("_by_source",)

    def __init__(self, entries: Iterable[Revocation] = (), source: str = FILE) -> None:
        self._by_source: dict[str, dict[str, float]] = {source: _merged(entries)}

    def is_revoked(self, identity: str, unix_now: float) -> bool:
        for until in self._by_source.values():
            when = until.get(identity)
            if when is not None and unix_now < when:
                return True
        return False

    def replace(self, entries: Iterable[Revocation], source: str = FILE) -> None:
        self._by_source[source] = _merged(entries)

    def add(self, entry: Revocation, source: str = FILE, *, limit: int | None = None) -> bool:
        """Take one revocation into account now (the writer does not wait for its poll).

        False (nothing changed) when `source` holds `limit` identities and not this one.
        In place: one revocation costs a dictionary store, whatever the size of the list.
        """
        until = self._by_source.setdefault(source, {})
        held = until.get(entry.identity)
        if held is None and limit is not None and len(until) >= limit:
            return False
        until[entry.identity] = entry.until if held is None else max(entry.until, held)
        return True

    def count(self, source: str) -> int:
        """How many identities `source` holds (past entries included until its next reload)."""
        return len(self._by_source.get(source, ()))

    def __len__(self) -> int:
        return len(self._merged_until())

    def __iter__(self) -> Iterator[Revocation]:
        return iter([Revocation(i, u) for i, u in self._merged_until().items()])

    def _merged_until(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for until in self._by_source.values():
            for identity, when in until.items():
                merged[identity] = max(when, merged.get(identity, when))
        return merged


def _merged(entries: Iterable[Revocation]) -> dict[str, float]:
    until: dict[str, float] = {}
    for entry in entries:
        until[entry.identity] = max(entry.until, until.get(entry.identity, entry.until))
    return until


def parse_until(value: object, key: str = "until") -> float:
    """Unix seconds from a number, an aware datetime or an RFC 3339 string; ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{key}: must be Unix seconds or an RFC 3339 date-time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not an RFC 3339 date-time") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{key}: needs a UTC offset (Z or +hh:mm)")
        return value.timestamp()
    raise ValueError(f"{key}: must be Unix seconds or an RFC 3339 date-time")


def parse_revocations(text: str) -> list[Revocation]:
    """The entries of TOML `text`; ValueError names the entry and the problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"revoked"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key (expected [[revoked]] tables)")
    tables = document.get("revoked", [])
    if not isinstance(tables, list):
        raise ValueError("revoked: must be an array of tables ([[revoked]])")
    return [_entry(f"revoked[{i}]", table) for i, table in enumerate(tables)]


def _entry(name: str, table: object) -> Revocation:
    if not isinstance(table, Mapping):
        raise ValueError(f"{name}: must be a table")
    unknown = sorted(set(table) - {"identity", "until"})
    if unknown:
        raise ValueError(f"{name}.{unknown[0]}: unknown field")
    identity = table.get("identity")
    if not isinstance(identity, str) or not identity:
        raise ValueError(f"{name}.identity: must be a non-empty string")
    if "until" not in table:
        raise ValueError(f"{name}.until: missing")
    return Revocation(identity, parse_until(table["until"], f"{name}.until"))


def read_revocations_file(path: Path) -> list[Revocation]:
    """The entries in `path` (none if it does not exist); ValueError if it is unusable."""
    try:
        text = read_text_bounded(path, MAX_FILE_BYTES)
    except FileProblem as exc:
        if exc.missing:
            return []
        raise
    try:
        return parse_revocations(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def format_revocations(entries: Iterable[Revocation]) -> str:
    blocks = []
    for entry in entries:
        until = dt.datetime.fromtimestamp(entry.until, dt.UTC).isoformat().replace("+00:00", "Z")
        blocks.append(f"[[revoked]]\nidentity = {_toml_string(entry.identity)}\nuntil = {until}\n")
    return "\n".join(blocks)


def _toml_string(text: str) -> str:
    # A TOML basic string: backslash, quote and control characters escaped.
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in text.replace("\\", "\\\\").replace('"', '\\"')
    )
    return f'"{escaped}"'


def revoke(path: Path, identity: str, until: float, unix_now: float) -> Revocation:
    """Add a revocation to `path` (atomically); entries already over are dropped."""
    if not identity or len(identity.encode("utf-8")) > MAX_IDENTITY_BYTES:
        raise ValueError(f"identity must be 1 to {MAX_IDENTITY_BYTES} bytes")
    entry = Revocation(identity, float(int(until)))
    with _locked(path):
        current = read_revocations_file(path)
        kept = [e for e in current if e.until > unix_now]
        write_file_atomically(path, format_revocations([*kept, entry]), 0o644)
    return entry


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(f".{path.name}.lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def load_revocations(path: Path) -> Revocations:
    """The revocations in `path` now (ValueError if the file is unusable)."""
    return Revocations(read_revocations_file(path))


async def watch_revocations_file(
    path: Path,
    revocations: Revocations,
    poll_seconds: float = POLL_SECONDS,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Re-read `path` whenever it changes; a bad or vanished file keeps the current list."""

    def reload() -> str:
        loaded = read_revocations_file(path)
        revocations.replace(loaded)
        return f"reloaded {len(loaded)} revocation(s) from {path}"

    await watch_file(path, reload, "auth.revocations_file", poll_seconds, task_status=task_status)


async def watched_revocations(nursery: trio.Nursery, path: Path | None) -> Revocations | None:
    """The revocations of the setting `auth.revocations_file`, watched in `nursery`.

    None when the setting is unset; a `SettingsError` naming it when the file is unusable
    at start-up (later, an unusable file keeps the last good list: `watch_revocations_file`).
    """
    if path is None:
        return None
    try:
        revocations = load_revocations(path)
    except ValueError as exc:
        raise SettingsError("auth.revocations_file", str(exc)) from exc
    await nursery.start(watch_revocations_file, path, revocations)
    return revocations
