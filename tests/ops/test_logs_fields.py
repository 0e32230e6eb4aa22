"""A record's extra fields, as the human formatter's fast paths read and write them
(`trelay.ops.logs`, issue 13 part 4: three lines per allocation), are what the plain
rules give: the standard attributes and private ones skipped, every other name kept,
hidden or redacted as `_items` says, an address as host:port, and each value written as
`_render` writes it; also past the bound of the per-name cache."""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trelay.ops import logs
from trelay.ops.logs import HumanFormatter, RecordScrubber

KEY = b"k" * 16
_NAMES = st.sampled_from(
    ["username", "identity", "api-key", "mac_key", "token", "client", "count", "_private"]
)
_VALUES = (
    st.text(max_size=8)
    | st.integers()
    | st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.tuples(st.sampled_from(["192.0.2.1", "2001:db8::1"]), st.integers(0, 65535))
    | st.tuples(st.integers(), st.text(max_size=3))
)


def record_with(extra: dict[str, Any]) -> logging.LogRecord:
    return logging.getLogger("trelay.test").makeRecord(
        "trelay.test", logging.INFO, "", 0, "line %s", ("x",), None, extra=extra
    )


def expected_fields(scrubber: RecordScrubber, extra: dict[str, Any]) -> dict[str, Any]:
    """The plain rule: every extra that is not private, through `_items`."""
    kept = {name: value for name, value in extra.items() if not name.startswith("_")}
    return scrubber._items(kept.items(), depth=0)


@given(st.dictionaries(_NAMES | st.text(min_size=1, max_size=10), _VALUES, max_size=8))
def test_fields_and_the_human_line_follow_the_plain_rules(extra: dict[str, Any]) -> None:
    extra = {
        name: value
        for name, value in extra.items()
        if name not in logs._RECORD_ATTRIBUTES  # makeRecord refuses to overwrite these
    }
    scrubber = RecordScrubber(username_key=KEY)
    record = record_with(extra)
    fields = scrubber.fields(record)
    assert fields == expected_fields(scrubber, extra)
    line = HumanFormatter(scrubber).format(record)
    rendered = " ".join(f"{name}={logs._render(value)}" for name, value in fields.items())
    assert line == "trelay: INFO: trelay.test: line x" + (f" {rendered}" if rendered else "")


def test_attributes_set_after_the_record_was_made_are_still_sorted() -> None:
    """What a formatter or filter adds to a record (message, asctime) is no field."""
    scrubber = RecordScrubber(username_key=KEY)
    record = record_with({"client": ("192.0.2.1", 5000), "password": "hunter2"})
    record.message, record.asctime = "m", "t"
    record.extra_later = 7
    assert scrubber.fields(record) == {
        "client": "192.0.2.1:5000",
        "password": logs.REDACTED,
        "extra_later": 7,
    }


def test_the_field_code_cache_is_bounded_and_right_past_its_bound() -> None:
    scrubber = RecordScrubber(username_key=KEY)
    for index in range(logs._MAX_NAME_KINDS + 10):
        extra = {f"field{index}": index, f"secret_{index}": "s", "username": "alice"}
        assert scrubber.fields(record_with(extra)) == expected_fields(scrubber, extra)
        assert len(logs._field_codes) <= logs._MAX_NAME_KINDS
