"""Logging configuration: one handler, a human or a JSON-lines format, and no secrets.

Owns how every `logging` record of the process is written once `configure_logging` has
run: the format ("human" lines for a terminal or journald, JSON lines for a log shipper),
the root level, and the scrubbing that keeps secrets and usernames out of the output.
Lines go out through `trelay.ops.log_buffer.LogOutput`, which holds a running node's
INFO lines for at most 50 ms (`start_flushing`; its rules are that module's).

Formats (one record = one line; a traceback follows a human line, or sits in "exc"):

    trelay: INFO: trelay.turn: allocation created client=192.0.2.1:5000 transport=udp
    {"ts": "2024-05-01T12:00:00.123Z", "level": "info", "logger": "trelay.turn",
     "message": "allocation created", "client": "192.0.2.1:5000", "transport": "udp"}

Invariants:
- A field whose name says it holds a secret (password, credential, secret, key, token,
  mac_key, authorization, in any case, alone or as a `_`/`-` separated part such as
  `shared_secret` or `api-key`) is written as "<redacted>", wherever it appears: as an
  `extra` field, as a field of a dataclass or a key of a mapping inside an extra value or
  inside the message's `%` arguments. `name=value` and `'name': value` spellings in the
  final text (a repr in a message, an exception's text) are redacted too; that is a
  safety net, not a parser.
- `username` (and `user`, `identity`) fields, at any depth and as named `%` arguments,
  are dropped unless usernames are allowed. They are replaced by `user_ref`, a short
  keyed hash: equal within one process (so the "allocation created" and "allocation
  ended" lines of one user can be matched), but not reversible by hashing a list of
  likely names, which a plain hash would be, because the key is random per process
  unless the caller passes one (to correlate across workers or restarts).
- Addresses (`(host, port)` tuples) are written as `host:port` (`[v6]:port`), enums as
  their value, bytes only as their length.
- Records are never mutated: other handlers (pytest's caplog, say) see them unchanged.

Cost (issue 13 part 4: an allocation writes three INFO lines): what a field name is
(kept, hidden, redacted) is looked up once per name, plain values of exact built-in
types skip the conversion chain, and numbers, flags and None are written as JSON writes
them without its encoder; the output is the same (tests/ops/test_logs_render.py).

No RFC governs logs; RFC 8489 §9.2 and RFC 8656 §7 say which values are secrets (the
long-term password and the key derived from it), which is why `key` is on the list.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import hmac
import itertools
import json
import logging
import math
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from enum import Enum, StrEnum
from typing import Any, TextIO

import trio

from trelay.ops.log_buffer import LogOutput, flush_logs

REDACTED = "<redacted>"
SECRET_WORDS = frozenset(
    {"password", "credential", "secret", "key", "token", "authorization", "passwd"}
)
USERNAME_FIELDS = frozenset({"username", "user", "identity"})
USER_REF_FIELD = "user_ref"
HUMAN_PREFIX = "trelay"
_MAX_DEPTH = 4  # nested values deeper than this are not expanded (and not printed)
_MAX_REFS = 4096  # usernames whose user_ref is kept (`RecordScrubber.user_ref`)

# Every attribute a plain LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# How many attributes `LogRecord.__init__` sets (all of them standard ones).
_STANDARD_COUNT = len(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)))
_CORE_KEYS = ("ts", "level", "logger", "message", "exc")

# Safety net over final text: `password='x'`, `mac_key=b'..'`, `'token': 'x'` (a dict's
# repr), `Authorization: Bearer x`. A bare "key: x" is left alone: "tls.key: not found"
# is an error message about a setting, not a secret.
_QUOTED = r"b?'(?:[^'\\]|\\.)*'" + "|" + r'b?"(?:[^"\\]|\\.)*"'
_WORDS = r"(?:passwords?|passwd|credentials?|secrets?|keys?|tokens?|authorization)"
_NAME = rf"(?:[A-Za-z0-9_-]*[_-])?{_WORDS}(?![A-Za-z0-9])"  # "mac_key", not "monkey"
_ASSIGNMENT = re.compile(
    rf"""(?i)(?P<name>\b{_NAME}\s*=\s*|['"]{_NAME}['"]\s*:\s*|\bauthorization\s*:\s*)"""
    rf"""(?P<value>{_QUOTED}|(?:bearer|basic)\s+[^\s,;)}}\]]+|[^\s,;)}}\]'"]+)"""
)


class LogFormat(StrEnum):
    """How lines are written: `human` for people and journald, `json` for shippers."""

    HUMAN = "human"
    JSON = "json"


@functools.lru_cache(maxsize=1024)  # field names repeat on every line
def is_secret_name(name: str) -> bool:
    """True if a field called `name` must never be printed (see the module invariants)."""
    lowered = name.lower()
    if lowered in SECRET_WORDS or lowered == "mac_key":
        return True
    parts = re.split(r"[_\-\s.]+", lowered)
    return any(part in SECRET_WORDS or part.rstrip("s") in SECRET_WORDS for part in parts)


def redact_text(text: str) -> str:
    """`text` with the value of every `secret_name=value` spelling replaced."""
    return _ASSIGNMENT.sub(_redacted_match, text)


def _redacted_match(match: re.Match[str]) -> str:
    return match.group("name") + REDACTED


# Message texts seen before and what `redact_text` made of them: the per-allocation lines
# repeat a few texts ("allocation created", "allocation ended deleted"), and the regex
# scan was a tenth of such a line's cost. Short texts only, bounded, emptied when full.
_MAX_REDACTED = 1024
_MAX_REDACTED_LENGTH = 200
_redacted: dict[str, str] = {}


def _redacted_message(text: str) -> str:
    done = _redacted.get(text)
    if done is None:
        done = redact_text(text)
        if len(text) <= _MAX_REDACTED_LENGTH:
            if len(_redacted) >= _MAX_REDACTED:
                _redacted.clear()
            _redacted[text] = done
    return done


class _Scrubbed:
    """A message argument replaced by its safe rendering, for both %s and %r."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text

    __repr__ = __str__


class RecordScrubber:
    """Turns a record's extra fields, message and exception into printable, safe values."""

    __slots__ = ("_refs", "_show_usernames", "_username_key")

    def __init__(self, show_usernames: bool = False, username_key: bytes | None = None) -> None:
        self._show_usernames = show_usernames
        self._username_key = username_key if username_key is not None else secrets.token_bytes(16)
        # username -> user_ref: the same users appear line after line (bounded, emptied
        # when full; held in memory only, as the usernames themselves are).
        self._refs: dict[str, str] = {}

    def user_ref(self, username: str) -> str:
        """A short keyed hash of `username`: stable for one key, not a dictionary lookup."""
        ref = self._refs.get(username)
        if ref is None:
            digest = hmac.digest(self._username_key, username.encode("utf-8"), hashlib.sha256)
            ref = digest[:5].hex()
            if len(self._refs) >= _MAX_REFS:
                self._refs.clear()
            self._refs[username] = ref
        return ref

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's `extra` fields, secrets redacted and usernames hidden or hashed."""
        # `_items` at depth 0 in one pass over the record, with the common case (a plain
        # name holding a value of an exact built-in type) inline: three lines per
        # allocation go through here (issue 13 part 4).
        out: dict[str, Any] = {}
        items: Iterable[tuple[str, Any]] = vars(record).items()
        if type(record) is logging.LogRecord:
            # Its __init__ sets the standard attributes first, in a fixed order: skip
            # them in C; what a formatter or filter adds later is still checked below.
            items = itertools.islice(items, _STANDARD_COUNT, None)
        codes = _field_codes
        for name, value in items:
            code = codes.get(name)
            if code is None:
                code = _field_code(name)
            if code == _SKIP_FIELD:
                continue
            if code == _PLAIN_FIELD:
                kind = type(value)
                if kind in _PLAIN_TYPES:
                    out[name] = value
                elif kind is tuple and (address := _address_text(value)) is not None:
                    out[name] = address  # what `plain` makes of it, sooner
                else:
                    out[name] = self.plain(value)
            else:
                out.update(self._items(((name, value),), depth=0))
        return out

    def plain(self, value: object, depth: int = 0) -> Any:
        """`value` as JSON-ready data: addresses as host:port, secrets in it redacted."""
        if type(value) in _PLAIN_TYPES:  # the common case, before the isinstance chain
            return value
        if isinstance(value, bool | int | float | str) or value is None:
            return value
        if isinstance(value, Enum):
            return self.plain(value.value, depth)
        if isinstance(value, bytes | bytearray | memoryview):
            return f"<{len(value)} bytes>"
        if depth >= _MAX_DEPTH:
            return f"<{type(value).__name__}>"
        address = _address_text(value)
        if address is not None:
            return address
        if _is_dataclass_instance(value):
            fields = dataclasses.fields(value)  # type: ignore[arg-type]
            items = ((f.name, getattr(value, f.name)) for f in fields)
            return {"type": type(value).__name__, **self._items(items, depth + 1)}
        if isinstance(value, Mapping):
            return self._items(((str(k), v) for k, v in value.items()), depth + 1)
        if isinstance(value, list | tuple | set | frozenset):
            return [self.plain(item, depth + 1) for item in value]
        return redact_text(str(value))

    def _items(self, items: Iterable[tuple[str, object]], depth: int) -> dict[str, Any]:
        """Named values at any depth: secrets redacted, usernames hashed unless shown."""
        out: dict[str, Any] = {}
        plain = self.plain
        for name, value in items:
            kind = _name_kind(name)
            if kind is _PLAIN_NAME:
                out[name] = plain(value, depth)
            elif kind is _USERNAME_NAME and not self._show_usernames:
                if isinstance(value, str) and value:
                    out[USER_REF_FIELD] = self.user_ref(value)
            elif kind is _SECRET_NAME or is_secret_name(name):
                out[name] = REDACTED
            else:
                out[name] = plain(value, depth)
        return out

    def _safe_arg(self, name: str, value: object) -> object:
        """A `%` argument as the formatter may use it: untouched if it cannot hold a secret."""
        if name and is_secret_name(name):
            return _Scrubbed(REDACTED)
        if name.lower() in USERNAME_FIELDS and not self._show_usernames:
            return _Scrubbed(f"{USER_REF_FIELD}:{self.user_ref(str(value))}")
        if isinstance(value, str | int | float | bool) or value is None:
            return value
        if _is_dataclass_instance(value) or isinstance(value, Mapping | bytes | bytearray):
            return _Scrubbed(_render(self.plain(value)))
        return value

    def message(self, record: logging.LogRecord) -> str:
        """`record.getMessage()` computed from scrubbed arguments, then text-redacted."""
        args = record.args
        if isinstance(args, Mapping):
            safe_args: object = {k: self._safe_arg(str(k), v) for k, v in args.items()}
        elif isinstance(args, tuple):
            safe_args = tuple(self._safe_arg("", arg) for arg in args)
        else:
            safe_args = args
        text = str(record.msg)
        if safe_args:
            try:
                text = text % safe_args
            except (TypeError, ValueError, KeyError):
                # A broken format string: say so rather than lose the line.
                text = f"{text} (unformattable arguments)"
        return _redacted_message(text)

    def exception(self, record: logging.LogRecord, formatter: logging.Formatter) -> str | None:
        """The traceback text (and stack_info), redacted; None when there is none."""
        parts: list[str] = []
        if record.exc_info and record.exc_info[0] is not None:
            parts.append(formatter.formatException(record.exc_info))
        elif record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(formatter.formatStack(record.stack_info))
        return redact_text("\n".join(parts)) if parts else None


# Values `plain` passes through unchanged when their type is exactly one of these.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})

# What a field name is, for `_items`: looked up once per name (the same names repeat on
# every line), in a dict emptied when full, since `extra` names are up to the caller.
_PLAIN_NAME, _USERNAME_NAME, _SECRET_NAME = "plain", "username", "secret"
_MAX_NAME_KINDS = 1024
_name_kinds: dict[str, str] = {}


def _name_kind(name: str) -> str:
    kind = _name_kinds.get(name)
    if kind is None:
        if name.lower() in USERNAME_FIELDS:
            kind = _USERNAME_NAME
        elif is_secret_name(name):
            kind = _SECRET_NAME
        else:
            kind = _PLAIN_NAME
        if len(_name_kinds) >= _MAX_NAME_KINDS:
            _name_kinds.clear()
        _name_kinds[name] = kind
    return kind


# What `fields` does with an attribute of a record, by its name, looked up once per name
# (one dict lookup a field, issue 13 part 4): skip it (a standard attribute, a private
# one), write it as a plain field, or hand it to `_items` (a username, a secret).
_SKIP_FIELD, _PLAIN_FIELD, _SCRUBBED_FIELD = 0, 1, 2
_field_codes: dict[str, int] = {}


def _field_code(name: str) -> int:
    if name in _RECORD_ATTRIBUTES or name[:1] == "_":
        code = _SKIP_FIELD
    elif _name_kind(name) is _PLAIN_NAME:
        code = _PLAIN_FIELD
    else:
        code = _SCRUBBED_FIELD
    if len(_field_codes) >= _MAX_NAME_KINDS:
        _field_codes.clear()
    _field_codes[name] = code
    return code


def _is_dataclass_instance(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _address_text(value: object) -> str | None:
    """`host:port` for a socket address tuple (IPv6 ones may carry flowinfo, scope id)."""
    if not isinstance(value, tuple) or len(value) not in (2, 4):
        return None
    host, port = value[0], value[1]
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# A human line's value is quoted when it is empty or holds whitespace (`\s` is
# `str.isspace` in a str pattern), a quote or `=`: one regex scan, not a call per character.
_NEEDS_QUOTES = re.compile(r"[\s\"'=]")


def _render(value: Any) -> str:
    """A plain value as one token of a human line."""
    if isinstance(value, str):
        if value and _NEEDS_QUOTES.search(value) is None:
            return value
        return json.dumps(value, ensure_ascii=False)
    kind = type(value)
    if kind is int:  # the common case (counts, lifetimes): what json.dumps writes
        return str(value)
    # What json.dumps writes for these, without its encoder's set-up (a usage record's
    # timestamps, its unknown node and region, its `final`).
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, dict) and value.get("type"):
        inner = ", ".join(f"{k}={_render(v)}" for k, v in value.items() if k != "type")
        return f"{value['type']}({inner})"
    return json.dumps(value, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    """`trelay: LEVEL: logger: message key=value ...`, then any traceback, redacted."""

    def __init__(self, scrubber: RecordScrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        fields = self.scrubber.fields(record)
        line = f"{HUMAN_PREFIX}: {record.levelname}: {record.name}: {self.scrubber.message(record)}"
        if fields:
            parts = [line]
            needs_quotes = _NEEDS_QUOTES.search
            for k, v in fields.items():
                kind = type(v)
                # `_render`'s two commonest cases inline: a count, a plain word.
                if kind is int or (kind is str and v and needs_quotes(v) is None):
                    parts.append(f"{k}={v}")
                else:
                    parts.append(f"{k}={_render(v)}")
            line = " ".join(parts)
        exception = self.scrubber.exception(record, self)
        return line if exception is None else f"{line}\n{exception}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the extra fields, exc."""

    def __init__(self, scrubber: RecordScrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.scrubber.message(record),
        }
        for name, value in self.scrubber.fields(record).items():
            # An extra field never overwrites a core key; it keeps its value under a prefix.
            entry[f"extra_{name}" if name in _CORE_KEYS else name] = value
        exception = self.scrubber.exception(record, self)
        if exception is not None:
            entry["exc"] = exception
        return json.dumps(entry, ensure_ascii=False, default=str)


_HANDLER_MARK = "_trelay_logs_handler"


def parse_level(level: int | str) -> int:
    """A `logging` level from a number or a name in any case ("info", "WARNING")."""
    if isinstance(level, int):
        return level
    try:
        return logging.getLevelNamesMapping()[str(level).upper()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}") from None


def make_formatter(
    fmt: LogFormat | str, show_usernames: bool = False, username_key: bytes | None = None
) -> logging.Formatter:
    """The formatter for `fmt` ("human" or "json"); ValueError for anything else."""
    scrubber = RecordScrubber(show_usernames, username_key)
    if LogFormat(fmt) is LogFormat.JSON:
        return JsonFormatter(scrubber)
    return HumanFormatter(scrubber)


def configure_logging(
    level: int | str,
    fmt: LogFormat | str = LogFormat.HUMAN,
    show_usernames: bool = False,
    *,
    stream: TextIO | None = None,
    username_key: bytes | None = None,
) -> LogOutput:
    """Send every record at `level` or above to `stream` (stderr) in `fmt`; return the handler.

    Call it instead of `logging.basicConfig`, as often as settings change (a reload): the
    handler a previous call installed is replaced, other handlers are left alone.
    `username_key` keys the `user_ref` hash; pass the same bytes to every worker to get
    the same references across workers, or leave it None for a random per-process key.
    """
    lean_records()
    handler = LogOutput(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt, show_usernames, username_key))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            if isinstance(old, LogOutput):
                handler.take_over(old)
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    return handler


def start_flushing(nursery: trio.Nursery) -> None:
    """Hold the log lines of this process while `nursery` runs, each at most
    `trelay.ops.log_buffer.FLUSH_DELAY` (its rules); nothing before `configure_logging`."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, _HANDLER_MARK, False) and isinstance(handler, LogOutput):
            nursery.start_soon(flush_logs, handler)
            return


def lean_records() -> None:
    """Stop filling the record fields that no trelay format writes: where the call was
    made (a walk up the stack per line), the thread and the process (names looked up per
    line). The switches the `logging` docs name for this ("Optimization"); records keep
    these attributes, set to None (`lineno` 0). Process-wide, as logging's state is."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def set_level(level: int | str) -> None:
    """Change the level in force (a reload's `log_level`): the root logger's, nothing else.

    The handler, its format and its `user_ref` key stay as `configure_logging` made them,
    so references to one user still match across the change.
    """
    logging.getLogger().setLevel(parse_level(level))
