"""Reading the files operators keep, bounded, and replacing them atomically.

Owns the two file operations every operator file (secrets, API keys, revocations) needs:
- `read_text_bounded`: at most `limit` bytes read, UTF-8 decoded; any problem (missing,
  unreadable, too large, not UTF-8) is a `FileProblem` whose message names the problem
  but never the content (these files hold secrets);
- `write_file_atomically`: a temporary file beside the target, fsync, rename, so a
  reader (another node watching the same file) sees the old file or the new, never half.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class FileProblem(ValueError):
    """Why a file cannot be used: "file not found", "larger than N bytes", ..."""

    def __init__(self, path: Path, problem: str, *, missing: bool = False) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.missing = missing


def read_text_bounded(path: Path, limit: int) -> str:
    """The text of `path` (UTF-8, at most `limit` bytes); `FileProblem` otherwise."""
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)
    except FileNotFoundError:
        raise FileProblem(path, "file not found", missing=True) from None
    except OSError as exc:
        raise FileProblem(path, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise FileProblem(path, f"larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(path, f"not UTF-8 text (byte {exc.start})") from None


def write_file_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text` atomically: a temporary file beside it, then rename."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
