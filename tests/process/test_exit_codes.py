"""trelay.process.exit_codes: the status a start-up failure ends with, found in nested groups."""

from __future__ import annotations

import errno

from trelay.config.values import ListenAddress, SettingsError
from trelay.node.listeners import ListenError
from trelay.process.exit_codes import ExitStatus, known_error, status_for

KINDS = (SettingsError, ListenError)
BAD = SettingsError("relay.ports", "not a range")
TAKEN = ListenError(
    "listen.udp[0]", ListenAddress("127.0.0.1", 3478), OSError(errno.EADDRINUSE, "in use")
)


def test_a_nested_group_of_ours_gives_its_first_leaf() -> None:
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [BAD]), TAKEN])
    assert known_error(nested, KINDS) is BAD
    assert known_error(TAKEN, KINDS) is TAKEN


def test_anything_else_in_the_group_is_not_ours_to_report() -> None:
    mixed = ExceptionGroup("outer", [BAD, RuntimeError("a bug")])
    assert known_error(mixed, KINDS) is None
    assert known_error(RuntimeError("a bug"), KINDS) is None


def test_statuses() -> None:
    assert status_for(BAD) is ExitStatus.BAD_SETTINGS
    assert status_for(TAKEN) is ExitStatus.FAILED
    assert [int(s) for s in (ExitStatus.OK, ExitStatus.FAILED, ExitStatus.BAD_SETTINGS)] == [
        0,
        1,
        2,
    ]
