"""Watching a file that operators replace: the loop behind every "re-read on change" setting.

Owns the polling of one file's identity (inode, size, modification time) and the rule
that makes reloads safe: a change calls `reload()`; a file that vanished, or that
`reload()` rejects with ValueError, is logged and ignored, so the node keeps what it has
rather than locking clients out. Replacing a file by rename (Kubernetes volume updates,
configuration tools) changes the inode, so it is seen even within one mtime tick.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import trio

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of `path`, or None when it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


async def watch_file(
    path: Path,
    reload: Callable[[], str],
    setting: str,
    poll_seconds: float = POLL_SECONDS,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call `reload()` whenever `path` changes; it returns what to log, or raises ValueError.

    `setting` names the settings key in the log lines.
    """
    seen = file_identity(path)
    task_status.started()
    while True:
        await trio.sleep(poll_seconds)
        current = file_identity(path)
        if current == seen:
            continue
        seen = current
        if current is None:
            log.warning("%s: %s vanished; keeping what was loaded", setting, path)
            continue
        try:
            done = reload()
        except ValueError as exc:
            log.warning("%s: keeping what was loaded: %s", setting, exc)
            continue
        log.info("%s: %s", setting, done)
