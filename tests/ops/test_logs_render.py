"""The human formatter's fast paths (`trelay.ops.logs`, issue 13: the allocation's log
lines) write what the slower rules wrote: a value is quoted exactly when it is empty or
holds whitespace, a quote or `=`; a number, a flag and None are written as JSON writes
them; a cached user_ref equals the keyed hash, also past the cache's bound; a field
name is hidden, redacted or kept as the uncached rule says, also past its cache's bound."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from enum import Enum
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trelay.ops import logs
from trelay.ops.logs import RecordScrubber


def quoted_before(value: str) -> str:
    """The rule as it was: a call per character."""
    needs_quotes = not value or any(c.isspace() or c in "\"'=" for c in value)
    return json.dumps(value, ensure_ascii=False) if needs_quotes else value


@given(st.text())
def test_a_string_is_quoted_exactly_as_before(value: str) -> None:
    assert logs._render(value) == quoted_before(value)


@given(st.integers() | st.booleans() | st.none() | st.floats())
def test_numbers_and_flags_are_written_as_json_writes_them(value: object) -> None:
    assert logs._render(value) == json.dumps(value)


def test_unicode_whitespace_and_quotes_are_quoted() -> None:
    for value in ("a\u00a0b", "a\u2003b", "a\x1cb", "x=y", "it's", 'say "hi"', ""):
        assert logs._render(value) == json.dumps(value, ensure_ascii=False)


def test_user_refs_are_the_keyed_hash_before_and_after_the_cache_fills() -> None:
    key = b"k" * 16
    scrubber = RecordScrubber(username_key=key)
    names = [f"user{index}" for index in range(logs._MAX_REFS + 10)]
    for _ in range(2):  # the second round: cached, then cleared and computed again
        for name in names:
            expected = hmac.digest(key, name.encode(), hashlib.sha256)[:5].hex()
            assert scrubber.user_ref(name) == expected
    assert len(scrubber._refs) <= logs._MAX_REFS


def items_before(scrubber: RecordScrubber, items: dict[str, Any]) -> dict[str, Any]:
    """The field rule as it was: no cache of what a name is."""
    out: dict[str, Any] = {}
    for name, value in items.items():
        if name.lower() in logs.USERNAME_FIELDS:
            if isinstance(value, str) and value:
                out[logs.USER_REF_FIELD] = scrubber.user_ref(value)
        elif logs.is_secret_name(name):
            out[name] = logs.REDACTED
        else:
            out[name] = scrubber.plain(value)
    return out


_NAMES = st.sampled_from(["username", "User", "identity", "api-key", "mac_key", "token", "x"])


@given(st.dictionaries(_NAMES | st.text(max_size=12), st.text() | st.integers() | st.none()))
def test_field_names_are_treated_as_the_uncached_rule_says(items: dict[str, Any]) -> None:
    scrubber = RecordScrubber(username_key=b"k" * 16)
    assert scrubber._items(items.items(), depth=0) == items_before(scrubber, items)


def test_the_name_cache_is_bounded_and_still_right_past_its_bound() -> None:
    scrubber = RecordScrubber(username_key=b"k" * 16)
    for index in range(logs._MAX_NAME_KINDS + 10):
        items = {f"field{index}": 1, f"secret{index}": "s", "password": "p", "user": "u"}
        assert scrubber._items(items.items(), depth=0) == items_before(scrubber, items)
    assert len(logs._name_kinds) <= logs._MAX_NAME_KINDS


class _Color(Enum):
    RED = "red"


def test_enums_and_subclasses_of_plain_types_are_still_converted() -> None:
    """The exact-type fast path leaves an Enum (an IntEnum is an int) to the full rule."""
    scrubber = RecordScrubber()
    assert scrubber.plain(_Color.RED) == "red"
    assert scrubber.plain(("192.0.2.1", 5)) == "192.0.2.1:5"


@given(
    st.dictionaries(
        _NAMES | st.text(min_size=1, max_size=12).filter(lambda n: not n.startswith("_")),
        st.text()
        | st.integers()
        | st.none()
        | st.floats()
        | st.tuples(st.just("h"), st.integers()),
    )
)
def test_a_records_fields_are_its_extras_by_the_uncached_rule(extras: dict[str, Any]) -> None:
    """`fields` (one pass over the record, plain values inline) gives what `_items` gave
    for the record's extra attributes."""
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
    extras = {k: v for k, v in extras.items() if k not in logs._RECORD_ATTRIBUTES}
    for name, value in extras.items():
        setattr(record, name, value)
    scrubber = RecordScrubber(username_key=b"k" * 16)
    assert scrubber.fields(record) == items_before(scrubber, extras)
