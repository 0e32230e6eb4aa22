"""The operator's admin token: `[http] admin_token_file`, read and checked at start.

Owns the format of the file that guards the session admin routes of the operator HTTP
port (`trelay.ops.admin_routes`: list and end sessions, start a drain). The file holds
one token: surrounding whitespace (a trailing newline) is not part of it, and it must be
at least `MIN_TOKEN_CHARACTERS` printable ASCII characters with no space inside, so it
travels as-is in `Authorization: Bearer <token>` (RFC 6750 §2.1). Make one with
`openssl rand -hex 32` or `python3 -c "import secrets; print(secrets.token_urlsafe(32))"`.

Errors name the key and the problem, never the content. Nothing here compares tokens;
the HTTP side does, in constant time.
"""

from __future__ import annotations

from pathlib import Path

from trelay.config.files import FileProblem, read_text_bounded
from trelay.config.values import SettingsError

MIN_TOKEN_CHARACTERS = 16
MAX_FILE_BYTES = 4096


def read_admin_token(key: str, path: Path) -> str:
    """The token in `path`; `SettingsError(key, ...)` if the file cannot serve as one."""
    try:
        token = read_text_bounded(path, MAX_FILE_BYTES).strip()
    except FileProblem as exc:
        raise SettingsError(key, str(exc)) from None
    if not token:
        raise SettingsError(key, f"{path} holds no token")
    if not all("!" <= c <= "~" for c in token):
        raise SettingsError(
            key, f"{path}: the token must be one word of printable ASCII (no spaces)"
        )
    if len(token) < MIN_TOKEN_CHARACTERS:
        raise SettingsError(
            key, f"{path}: the token must have at least {MIN_TOKEN_CHARACTERS} characters"
        )
    return token
