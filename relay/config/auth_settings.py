"""The `[auth]` section: who may use the relay (RFC 8489 §9.2 long-term credentials).

Owns `AuthSettings` and how it is read from the file (`read_auth`) and the flags
(`auth_flags`): the realm, static users, TURN REST secrets inline and in a watched file,
strict expiry, the longest credential lifetime accepted (`max_credential_lifetime`,
seconds, an integer >= 1: a TURN REST username or RFC 7635 token expiring further out
is refused 401, issue 15), the revocations file (which may not exist yet: the token API creates it)
and `[auth.third_party]` (RFC 7635, `trelay.config.api_settings`). Secrets never appear in `repr`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from trelay.config.api_settings import ThirdPartySettings, read_third_party
from trelay.config.flags import Flags
from trelay.config.secrets_file import read_secrets_file
from trelay.config.values import (
    SettingsError,
    Table,
    check_file,
    check_text,
    read_bool,
    read_count,
    read_path,
    read_text,
)

DEFAULT_REALM = "trelay.local"
# A day and an hour of clock margin (`trelay.turn.auth.DEFAULT_MAX_CREDENTIAL_LIFETIME`).
DEFAULT_MAX_CREDENTIAL_LIFETIME = 90000


def generate_dev_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may use the relay. `dev_secret` signs TURN credentials when nothing else is set."""

    realm: str = DEFAULT_REALM
    dev_secret: str = field(default_factory=generate_dev_secret, repr=False)
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    secrets_file: Path | None = None
    # What `secrets_file` held when the settings were loaded (the node re-reads it).
    file_secrets: tuple[str, ...] = field(default=(), repr=False)
    strict_expiry: bool = True
    max_credential_lifetime: int = DEFAULT_MAX_CREDENTIAL_LIFETIME
    # Identities refused new allocations and refreshes (`trelay.config.revocations`); the file
    # may not exist yet (the token API creates it on the first revocation).
    revocations_file: Path | None = None
    third_party: ThirdPartySettings | None = None

    @property
    def shared_secrets(self) -> tuple[str, ...]:
        """The configured secrets (file ones last); the dev secret when nothing is set."""
        if self.secrets or self.file_secrets or self.users:
            return self.secrets + self.file_secrets
        return (self.dev_secret,)


def read_auth(table: Table, base: Path) -> AuthSettings:
    users_value = table.take("users")
    users: tuple[tuple[str, str], ...] = ()
    if users_value is not None:
        if not isinstance(users_value, dict):
            raise SettingsError(table.key("users"), "expected a table of name = password")
        users = tuple(
            (name, check_text(f"{table.key('users')}.{name}", password))
            for name, password in users_value.items()
        )
    secrets_value = table.take("secrets")
    secrets_list: tuple[str, ...] = ()
    if secrets_value is not None:
        if not isinstance(secrets_value, list):
            raise SettingsError(table.key("secrets"), "expected a list of strings")
        key = table.key("secrets")
        secrets_list = tuple(check_text(f"{key}[{i}]", v) for i, v in enumerate(secrets_value))
    secrets_file = read_path(table, "secrets_file", base)
    revocations = table.take("revocations_file")
    third_party_table = table.table("third_party")
    third_party = read_third_party(third_party_table)
    third_party_table.finish()
    return AuthSettings(
        realm=read_text(table, "realm", DEFAULT_REALM),
        users=users,
        secrets=secrets_list,
        secrets_file=secrets_file,
        file_secrets=load_secrets_file(table.key("secrets_file"), secrets_file),
        strict_expiry=read_bool(table, "strict_expiry", True),
        max_credential_lifetime=_read_lifetime(table),
        revocations_file=None
        if revocations is None
        else revocations_path(table.key("revocations_file"), revocations, base),
        third_party=third_party,
    )


def _read_lifetime(table: Table) -> int:
    seconds = read_count(table, "max_credential_lifetime", DEFAULT_MAX_CREDENTIAL_LIFETIME)
    if seconds < 1:
        raise SettingsError(table.key("max_credential_lifetime"), "expected seconds >= 1")
    return seconds


def revocations_path(key: str, value: object, base: Path) -> Path:
    """A file that may not exist yet, in a directory that must."""
    path = base / check_text(key, value)
    if path.exists() and not path.is_file():
        raise SettingsError(key, f"not a file: {path}")
    if not path.parent.is_dir():
        raise SettingsError(key, f"directory not found: {path.parent}")
    return path


def load_secrets_file(key: str, path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        return read_secrets_file(path)
    except ValueError as exc:
        raise SettingsError(key, str(exc)) from exc


def auth_flags(auth: AuthSettings, flags: Flags) -> AuthSettings:
    if flags.realm is not None:
        auth = replace(auth, realm=check_text("--realm", flags.realm))
    if flags.users is not None:
        users = []
        for value in flags.users:
            name, sep, password = value.partition(":")
            if not sep or not name or not password:
                raise SettingsError("--user", f"expected name:password, got {name!r}:...")
            users.append((name, password))
        auth = replace(auth, users=tuple(users))
    if flags.secrets is not None:
        auth = replace(auth, secrets=tuple(check_text("--secret", v) for v in flags.secrets))
    if flags.secrets_file is not None:
        path = check_file("--secrets-file", Path(flags.secrets_file))
        file_secrets = load_secrets_file("--secrets-file", path)
        auth = replace(auth, secrets_file=path, file_secrets=file_secrets)
    if flags.revocations_file is not None:
        path = revocations_path("--revocations-file", flags.revocations_file, Path())
        auth = replace(auth, revocations_file=path)
    return auth
