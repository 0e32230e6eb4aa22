"""How a `trelay` client command ends: its one-line error, its exit status, its tables.

Owns what every command that talks to a running relay (`trelay.process.commands.admin_client`)
or to the fleet's Redis (`trelay.process.commands.redis_command`) shares about its end:

- `fail(name, error, stderr)`: a bad flag, file or setting (`SettingsError`,
  `ApiKeyError`) is "trelay: <key>: <problem>" and status 2, as for `trelay serve`;
  anything else that went wrong (`CommandFailed`: refused, unreachable, nothing to do)
  is "trelay: <name>: <why>" and status 1;
- `aligned(rows)`: the commands' tables, a header row then one row per item, in
  columns two spaces apart; `table` makes them from JSON objects and (title, field)
  pairs;
- `write_json(stdout, document)`: what `--json` prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from trelay.config.api_keys import ApiKeyError
from trelay.config.values import SettingsError
from trelay.process.exit_codes import PROG, ExitStatus


class CommandFailed(Exception):
    """Refused, unreachable, or nothing to do: exit status 1, the message its one line."""


def fail(name: str, error: Exception, stderr: TextIO) -> int:
    """Write `error`'s one line to `stderr`; its exit status."""
    if isinstance(error, SettingsError | ApiKeyError):
        stderr.write(f"{PROG}: {error}\n")
        return ExitStatus.BAD_SETTINGS
    stderr.write(f"{PROG}: {name}: {error}\n")
    return ExitStatus.FAILED


def aligned(rows: list[list[str]]) -> str:
    """`rows` (the first the titles) as left-aligned columns, no trailing spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


def table(
    columns: Sequence[tuple[str, str]], items: Iterable[Mapping[str, Any]], unit: str = ""
) -> str:
    """`items` as aligned columns, one (title, field) each: a number with a fraction
    rounded (and `unit` after it), a missing field "-"."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.0f}{unit}"
        return "-" if value is None else str(value)

    rows = [[title for title, _ in columns]]
    rows += [[cell(item.get(field)) for _, field in columns] for item in items]
    return aligned(rows)


def write_json(stdout: TextIO, document: object) -> None:
    stdout.write(json.dumps(document, indent=2) + "\n")
