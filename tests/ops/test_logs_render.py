"""The human formatter's fast paths (`trelay.ops.logs`, issue 13: the allocation's log
lines) write what the slower rules wrote: a value is quoted exactly when it is empty or
holds whitespace, a quote or `=`; an int is written as JSON writes it; a cached user_ref
equals the keyed hash, also past the cache's bound."""

from __future__ import annotations

import hashlib
import hmac
import json

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


@given(st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False))
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
