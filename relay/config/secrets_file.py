"""TURN REST API shared secrets kept in a file, re-read when the file changes.

Owns the `auth.secrets_file` format and its reload. The file holds one secret per line,
newest first (the first one is the one `make run`-style dev credentials are signed
with); blank lines and lines starting with `#` are ignored, surrounding whitespace is
not part of a secret. Several secrets at once let an operator rotate: add the new
secret at the top, hand out credentials under it, drop the old one once its
credentials have expired.

Why a watched file: the secret is what every relay node shares, and operators already
distribute files (Kubernetes Secrets mounted as volumes are swapped atomically through a
symlink, configuration management writes files). `watch_secrets_file` re-reads it on
change (`trelay.config.file_watch`) and swaps the secrets in place; a file that turns
unreadable, empty or invalid is logged and ignored, so the node keeps the secrets it has
rather than locking every client out.
"""

from __future__ import annotations

from pathlib import Path

import trio

from trelay.config.file_watch import POLL_SECONDS, watch_file
from trelay.config.files import read_text_bounded
from trelay.turn.credential_sources import SharedSecrets

MAX_FILE_BYTES = 64 * 1024


def read_secrets_file(path: Path) -> tuple[str, ...]:
    """The secrets in `path`, newest first; ValueError says what is wrong with the file."""
    text = read_text_bounded(path, MAX_FILE_BYTES)
    secrets = tuple(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not secrets:
        raise ValueError(f"{path} holds no secret (one per line, # for comments)")
    return secrets


async def watch_secrets_file(
    path: Path,
    secrets: SharedSecrets,
    inline: tuple[str, ...] = (),
    poll_seconds: float = POLL_SECONDS,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Re-read `path` whenever it changes; `secrets` becomes `inline` + the file's."""

    def reload() -> str:
        loaded = read_secrets_file(path)
        secrets.replace(inline + loaded)
        return f"reloaded {len(loaded)} secret(s) from {path}"

    await watch_file(path, reload, "auth.secrets_file", poll_seconds, task_status=task_status)
