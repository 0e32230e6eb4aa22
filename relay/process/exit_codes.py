"""How a trelay process ends: its exit statuses and the one error it reports.

Owns the statuses `trelay serve` and its worker processes share (the supervisor passes
a worker's status on): 0 after a clean stop or drain; 1 when the node cannot run (a
listener cannot bind, workers keep dying); 2 for a bad setting (`SettingsError`, before
anything binds). An error raised inside a nursery arrives wrapped in exception groups;
`known_error` unwraps it when every leaf is one of ours, so the operator reads one line
("trelay: <key>: <problem>") instead of a traceback, and anything else still propagates
as the bug it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from typing import TypeVar

from trelay.config.values import SettingsError

E = TypeVar("E", bound=BaseException)

PROG = "trelay"  # the name every one-line error starts with


class ExitStatus(IntEnum):
    OK = 0
    FAILED = 1  # a listener could not bind, or the workers could not run
    BAD_SETTINGS = 2


def known_error(exc: BaseException, kinds: tuple[type[E], ...]) -> E | None:
    """The first leaf of `exc` (maybe a nest of groups) when every leaf is one of `kinds`."""
    leaves = list(_leaves(exc))
    if leaves and all(isinstance(leaf, kinds) for leaf in leaves):
        first = leaves[0]
        assert isinstance(first, kinds)
        return first
    return None


def status_for(error: Exception) -> ExitStatus:
    """The exit status of a start-up failure: a bad setting, or a listener (`ListenError`)."""
    if isinstance(error, SettingsError):
        return ExitStatus.BAD_SETTINGS
    return ExitStatus.FAILED


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
