"""TURN REST API shared secrets kept in a file, re-read when the file changes.

Owns the `auth.secrets_file` format and its reload. The file holds one secret per line,
newest first (the first one is the one `make run`-style dev credentials are signed
with); blank lines and lines starting with `#` are ignored, surrounding whitespace is
not part of a secret. Several secrets at once let an operator rotate: add the new
secret at the top, hand out credentials under it, drop the old one once its
credentials have expired.

Why a watched file: the secret is what every relay node shares, and operators already
distribute files (Kubernetes Secrets mounted as volumes are swapped atomically through a
symlink, configuration management writes files). `watch_secrets_file` polls the file's
identity (inode, size, mtime) every few seconds and swaps the secrets in place; a file
that turns unreadable, empty or invalid is logged and ignored, so the node keeps the
secrets it has rather than locking every client out.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import trio

from turn.credential_sources import SharedSecrets

log = logging.getLogger("trelay.auth")

POLL_SECONDS = 2.0
MAX_FILE_BYTES = 64 * 1024


def read_secrets_file(path: Path) -> tuple[str, ...]:
    """The secrets in `path`, newest first; ValueError says what is wrong with the file."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start})") from exc
    secrets = tuple(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not secrets:
        raise ValueError(f"{path} holds no secret (one per line, # for comments)")
    return secrets


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


async def watch_secrets_file(
    path: Path,
    secrets: SharedSecrets,
    inline: tuple[str, ...] = (),
    poll_seconds: float = POLL_SECONDS,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Re-read `path` whenever it changes; `secrets` becomes `inline` + the file's."""
    seen = _identity(path)
    task_status.started()
    while True:
        await trio.sleep(poll_seconds)
        current = _identity(path)
        if current == seen:
            continue
        seen = current
        try:
            loaded = read_secrets_file(path)
        except ValueError as exc:
            log.warning("auth.secrets_file: keeping the current secrets: %s", exc)
            continue
        secrets.replace(inline + loaded)
        log.info("auth.secrets_file: reloaded %d secret(s) from %s", len(loaded), path)
