"""Where long-term credentials come from: static users and TURN REST API shared secrets.

Owns the lookup from a USERNAME to the candidate keys (RFC 8489 §9.2.2,
key = MD5(username ":" realm ":" password)) and to the identity that quotas count.

- `StaticUsers`: usernames and passwords from the settings; keys derived once.
- `SharedSecrets`: the TURN REST API scheme (draft-uberti-behave-turn-rest-00, as
  coturn's `use-auth-secret`): the username is `<expiry>:<user>` or `<user>:<expiry>`
  (Unix seconds), the password is base64(HMAC-SHA1(secret, username)). Several secrets
  are accepted at once so that a secret can be rotated: one candidate key per secret.
- `CredentialSources`: both at once (coturn 4.6.1 cannot combine them).

Wall-clock time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stun.credentials import long_term_key


@dataclass(frozen=True, slots=True)
class Credential:
    """One candidate key for a username. `expires_at` is Unix seconds, None for never."""

    key: bytes
    identity: str
    expires_at: float | None = None


class StaticUsers:
    """Fixed username/password pairs."""

    __slots__ = ("_by_username",)

    def __init__(self, users: Mapping[str, str], realm: str) -> None:
        self._by_username = {
            name: Credential(long_term_key(name, realm, password), name)
            for name, password in users.items()
        }

    def candidates(self, username: str) -> tuple[Credential, ...]:
        found = self._by_username.get(username)
        return () if found is None else (found,)


def rest_password(secret: bytes, username: str) -> str:
    """The TURN REST API password for `username` under `secret`."""
    mac = hmac.digest(secret, username.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac).decode("ascii")


def parse_rest_username(username: str) -> tuple[str, float] | None:
    """`<expiry>:<user>` or `<user>:<expiry>` -> (user, expiry); None if neither."""
    head, sep, tail = username.partition(":")
    if sep and _is_seconds(head):
        return tail, float(head)
    head, sep, tail = username.rpartition(":")
    if sep and _is_seconds(tail):
        return head, float(tail)
    return None


def _is_seconds(text: str) -> bool:
    # ASCII only: str.isdigit() also accepts "²" and other digits float() refuses.
    return text.isascii() and text.isdigit()


class SharedSecrets:
    """TURN REST API credentials under any of several secrets (newest first)."""

    __slots__ = ("_realm", "_secrets")

    def __init__(self, secrets: Iterable[bytes | str], realm: str) -> None:
        self._secrets = _encoded(secrets)
        self._realm = realm

    def replace(self, secrets: Iterable[bytes | str]) -> None:
        """Use `secrets` from now on (a rotation); credentials are checked per request."""
        self._secrets = _encoded(secrets)

    def candidates(self, username: str) -> tuple[Credential, ...]:
        parsed = parse_rest_username(username)
        if parsed is None:
            return ()
        user, expiry = parsed
        return tuple(
            Credential(
                long_term_key(username, self._realm, rest_password(secret, username)),
                user,
                expiry,
            )
            for secret in self._secrets
        )


def _encoded(secrets: Iterable[bytes | str]) -> tuple[bytes, ...]:
    return tuple(s.encode("utf-8") if isinstance(s, str) else s for s in secrets)


class CredentialSources:
    """Static users first, then shared secrets; every candidate is tried."""

    __slots__ = ("_sources",)

    def __init__(self, *sources: StaticUsers | SharedSecrets) -> None:
        self._sources = sources

    def candidates(self, username: str) -> tuple[Credential, ...]:
        found: tuple[Credential, ...] = ()
        for source in self._sources:
            found += source.candidates(username)
        return found
