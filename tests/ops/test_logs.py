"""trelay.ops.logs: JSON and human lines, secrets redacted everywhere, usernames hidden, levels."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trelay.ops.logs import (
    REDACTED,
    LogFormat,
    RecordScrubber,
    configure_logging,
    is_secret_name,
    make_formatter,
    parse_level,
    redact_text,
)
from trelay.turn.actions import EndReason
from trelay.turn.addressing import ClientTransport
from trelay.turn.credential_sources import Credential

SECRET = "hunter2-S3CR3T"
KEY = b"\x8f\x01'K3Y-BYTES\""


def _capture(fmt: str, level: str = "debug", show_usernames: bool = False) -> io.StringIO:
    out = io.StringIO()
    configure_logging(level, fmt, show_usernames, stream=out, username_key=b"k" * 16)
    return out


def _json_lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_line_has_core_keys_and_extra_fields(root_logging: None) -> None:
    out = _capture("json")
    logging.getLogger("trelay.turn").info(
        "allocation ended %s",
        EndReason.EXPIRED.value,
        extra={
            "client": ("192.0.2.1", 5000),
            "relayed": ("2001:db8::1", 49152, 0, 0),
            "transport": ClientTransport.TLS,
            "lifetime": 600,
            "reason": EndReason.EXPIRED,
        },
    )
    [entry] = _json_lines(out)
    assert entry["level"] == "info"
    assert entry["logger"] == "trelay.turn"
    assert entry["message"] == "allocation ended expired"
    assert entry["client"] == "192.0.2.1:5000"
    assert entry["relayed"] == "[2001:db8::1]:49152"
    assert entry["transport"] == "tls"
    assert entry["lifetime"] == 600
    assert entry["reason"] == "expired"
    assert entry["ts"].endswith("Z") and entry["ts"][4] == "-" and "T" in entry["ts"]


def test_json_every_record_is_one_parseable_line(root_logging: None) -> None:
    out = _capture("json")
    log = logging.getLogger("trelay.test")
    log.warning("multi\nline message", extra={"note": 'quote " and\nnewline'})
    log.error("second", extra={"ts": "not the timestamp"})
    first, second = _json_lines(out)
    assert first["message"] == "multi\nline message"
    assert first["note"] == 'quote " and\nnewline'
    # An extra field never overwrites a core key.
    assert second["ts"] != "not the timestamp"
    assert second["extra_ts"] == "not the timestamp"


def test_human_line_format(root_logging: None) -> None:
    out = _capture("human")
    logging.getLogger("trelay.turn").info(
        "allocation created",
        extra={"client": ("192.0.2.1", 5000), "transport": ClientTransport.UDP, "note": "a b"},
    )
    assert out.getvalue() == (
        "trelay: INFO: trelay.turn: allocation created"
        ' client=192.0.2.1:5000 transport=udp note="a b"\n'
    )


@pytest.mark.parametrize("fmt", ["human", "json"])
@pytest.mark.parametrize(
    "name",
    ["password", "Credential", "SECRET", "key", "token", "mac_key", "Authorization", "api_key"],
)
def test_secret_extra_fields_are_redacted(root_logging: None, fmt: str, name: str) -> None:
    out = _capture(fmt)
    logging.getLogger("trelay.auth").warning("auth failed", extra={name: SECRET})
    text = out.getvalue()
    assert SECRET not in text
    assert REDACTED in text
    if fmt == "json":
        [entry] = _json_lines(out)
        assert entry[name] == REDACTED


@dataclass(frozen=True, slots=True)
class _Settings:
    realm: str
    password: str


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_secrets_nested_in_extra_values_are_redacted(root_logging: None, fmt: str) -> None:
    out = _capture(fmt)
    logging.getLogger("trelay").info(
        "loaded",
        extra={
            "settings": _Settings("example.org", SECRET),
            "auth": {"users": [{"name": "alice", "Password": SECRET}], "realm": "example.org"},
            "candidate": Credential(KEY, "alice"),
        },
    )
    text = out.getvalue()
    assert SECRET not in text
    assert "K3Y-BYTES" not in text
    assert "example.org" in text
    if fmt == "json":
        [entry] = _json_lines(out)
        assert entry["settings"] == {
            "type": "_Settings",
            "realm": "example.org",
            "password": REDACTED,
        }
        assert entry["auth"]["users"][0]["Password"] == REDACTED
        assert entry["candidate"]["key"] == REDACTED


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_credential_in_message_args_is_redacted(root_logging: None, fmt: str) -> None:
    out = _capture(fmt)
    log = logging.getLogger("trelay.auth")
    credential = Credential(KEY, "alice", 1700000000.0)
    log.debug("candidate %s", credential)
    log.debug("candidate %r", credential)
    log.debug("users %s", {"realm": "x", "token": SECRET})
    log.debug("%(who)s uses %(password)s", {"who": "carol-ok", "password": SECRET})
    log.debug("%(username)s logged in", {"username": "dave"})
    log.debug("raw key %r", KEY)
    text = out.getvalue()
    assert "K3Y-BYTES" not in text
    assert SECRET not in text
    assert "carol-ok uses <redacted>" in text
    assert "dave" not in text
    assert "user_ref:" in text
    # The credential's identity is a username: hidden like one.
    assert "alice" not in text
    assert text.count("Credential(key=<redacted>, user_ref=") == 2


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_secrets_in_exception_text_are_redacted(root_logging: None, fmt: str) -> None:
    out = _capture(fmt)
    log = logging.getLogger("trelay")
    try:
        raise ValueError(f"bad {Credential(KEY, 'alice')!r} password={SECRET!r}")
    except ValueError:
        log.exception("request failed: Authorization: Bearer %s", SECRET)
    text = out.getvalue()
    assert SECRET not in text
    assert "K3Y-BYTES" not in text
    assert "ValueError" in text
    if fmt == "json":
        [entry] = _json_lines(out)
        assert "Traceback" in entry["exc"]
        assert entry["message"] == "request failed: Authorization: <redacted>"


def test_records_are_not_mutated() -> None:
    record = logging.makeLogRecord(
        {"msg": "pw %s", "args": ("x",), "password": SECRET, "username": "alice"}
    )
    make_formatter("json").format(record)
    make_formatter("human").format(record)
    assert vars(record)["password"] == SECRET
    assert vars(record)["username"] == "alice"
    assert record.getMessage() == "pw x"


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_usernames_hidden_by_default(root_logging: None, fmt: str) -> None:
    out = _capture(fmt)
    log = logging.getLogger("trelay.turn")
    log.info("allocation created", extra={"username": "alice@example.org"})
    log.info("allocation ended deleted", extra={"username": "alice@example.org"})
    log.info("allocation created", extra={"username": "bob@example.org"})
    text = out.getvalue()
    assert "alice" not in text
    assert "bob" not in text
    if fmt == "json":
        alice1, alice2, bob = (entry["user_ref"] for entry in _json_lines(out))
        assert alice1 == alice2 != bob
        assert all("username" not in entry for entry in _json_lines(out))
    else:
        assert text.count("user_ref=") == 3


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_usernames_shown_when_allowed(root_logging: None, fmt: str) -> None:
    out = _capture(fmt, show_usernames=True)
    logging.getLogger("trelay.turn").info("allocation created", extra={"username": "alice"})
    assert "alice" in out.getvalue()
    assert "user_ref" not in out.getvalue()


def test_user_ref_is_keyed() -> None:
    a, b = RecordScrubber(username_key=b"a" * 16), RecordScrubber(username_key=b"b" * 16)
    assert a.user_ref("alice") == RecordScrubber(username_key=b"a" * 16).user_ref("alice")
    assert a.user_ref("alice") != b.user_ref("alice")
    assert len(a.user_ref("alice")) == 10


def test_levels_respected(root_logging: None) -> None:
    out = _capture("json", level="warning")
    log = logging.getLogger("trelay.level")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [entry["message"] for entry in _json_lines(out)] == ["w", "e"]
    assert [entry["level"] for entry in _json_lines(out)] == ["warning", "error"]


def test_reconfiguring_replaces_the_handler(root_logging: None) -> None:
    first = _capture("human", level="info")
    second = _capture("json", level="debug")
    logging.getLogger("trelay.reload").debug("after reload")
    assert first.getvalue() == ""
    assert [entry["message"] for entry in _json_lines(second)] == ["after reload"]


def test_parse_level_and_format() -> None:
    assert parse_level("info") == logging.INFO
    assert parse_level("CRITICAL") == logging.CRITICAL
    assert parse_level(logging.DEBUG) == logging.DEBUG
    with pytest.raises(ValueError, match="verbose"):
        parse_level("verbose")
    with pytest.raises(ValueError):
        make_formatter("xml")
    assert LogFormat("json") is LogFormat.JSON


def test_secret_names() -> None:
    for name in ["password", "PASSWORD", "shared_secret", "secrets", "api-key", "mac_key",
                 "access_token", "credentials", "Authorization"]:  # fmt: skip
        assert is_secret_name(name), name
    for name in ["client", "relayed", "username", "transport", "lifetime", "reason", "realm"]:
        assert not is_secret_name(name), name


def test_redact_text_leaves_ordinary_text_alone() -> None:
    assert redact_text("tls.key: file not found") == "tls.key: file not found"
    assert redact_text("monkey=3 lifetime=600") == "monkey=3 lifetime=600"
    assert redact_text("x mac_key=abcd y") == "x mac_key=<redacted> y"


_NAMES = st.sampled_from(["password", "secret", "key", "token", "mac_key", "credential"])


@given(
    name=_NAMES,
    case=st.sampled_from([str.lower, str.upper, str.title]),
    value=st.text(alphabet="abcdefXYZ019 =:'\"", min_size=1, max_size=20),
)
def test_secret_value_never_printed(name: str, case: Any, value: str) -> None:
    secret = "Zq7" + value + "7qZ"
    nested = {case(name): secret, "list": [_Settings("r", secret)]}
    fields = {"msg": "m %(x)s %(" + name + ")s", "args": {"x": nested, name: secret}}
    record = logging.makeLogRecord({**fields, case(name): secret})
    for fmt in LogFormat:
        text = make_formatter(fmt).format(record)
        assert "Zq7" not in text
        assert "unformattable" not in text
