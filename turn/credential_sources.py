"""Where long-term credentials come from: static users and TURN REST API shared secrets.

Owns the lookup from a USERNAME (or a USERHASH) to the candidate keys (RFC 8489 §9.2.2,
§18.5.1: key = H(username ":" realm ":" password), H = MD5 or SHA-256 after the
PASSWORD-ALGORITHM the client chose) and to the identity that quotas count.

- `StaticUsers`: usernames and passwords from the settings; keys (MD5 and SHA-256) and
  USERHASHes (RFC 8489 §14.4) derived once.
- `SharedSecrets`: the TURN REST API scheme (draft-uberti-behave-turn-rest-00, as
  coturn's `use-auth-secret`): the username is `<expiry>:<user>` or `<user>:<expiry>`
  (Unix seconds), the password is base64(HMAC-SHA1(secret, username)). Several secrets
  are accepted at once so that a secret can be rotated: one candidate key per secret.
  The configured secrets (`replace`) and a fleet's shared ones (`share`) are kept apart,
  so that a reload and the fleet's follower never undo each other.
- `CredentialSources`: both at once (coturn 4.6.1 cannot combine them).
- `RetiredUsers`: the old credentials of static users a reload removed or gave a new
  password (`CredentialSources.with_static_users`), kept only for users that hold
  allocations. Their `Credential.retired` is set: the authenticator lets them refresh
  and extend those allocations but refuses them a new Allocate, so a reload ends no call.

USERHASH works for static users only: it is SHA-256(username ":" realm), and a TURN
REST username (`<expiry>:<user>`) cannot be recovered from its hash, so there is no
candidate to try. A client with REST credentials sends USERNAME.

`Sha256Key` marks a key whose responses are signed with MESSAGE-INTEGRITY-SHA256
(the request was, RFC 8489 §9.2.4); it is still the key's bytes everywhere else.

Wall-clock time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from trelay.stun.codes import PasswordAlgorithmId
from trelay.stun.credentials import long_term_key, userhash
from trelay.stun.integrity import keyed_hmac

MD5 = PasswordAlgorithmId.MD5


class Sha256Key(bytes):
    """An HMAC key whose responses carry MESSAGE-INTEGRITY-SHA256 instead of -INTEGRITY."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Credential:
    """One candidate key for a username. `expires_at` is Unix seconds, None for never."""

    key: bytes
    identity: str
    expires_at: float | None = None
    # From a user a reload removed or re-keyed (`RetiredUsers`): good for the allocations
    # made with it, never for a new Allocate (`LongTermAuthenticator.check`).
    retired: bool = False


class StaticUsers:
    """Fixed username/password pairs."""

    __slots__ = ("_by_hash", "_by_username")

    def __init__(self, users: Mapping[str, str], realm: str) -> None:
        self._by_username = {
            name: {
                algorithm: Credential(long_term_key(name, realm, password, algorithm), name)
                for algorithm in PasswordAlgorithmId
            }
            for name, password in users.items()
        }
        self._by_hash: dict[bytes, str] = {}
        for name in users:
            try:
                self._by_hash[userhash(name, realm)] = name
            except ValueError:
                continue  # not an OpaqueString: USERNAME still works, USERHASH cannot

    def candidates(
        self, username: str, algorithm: PasswordAlgorithmId = MD5
    ) -> tuple[Credential, ...]:
        found = self._by_username.get(username)
        return () if found is None else (found[algorithm],)

    def username_for_hash(self, hashed: bytes) -> str | None:
        return self._by_hash.get(hashed)

    def hashes_of(self, names: Collection[str]) -> dict[bytes, str]:
        """USERHASH -> username for the users in `names` (those that have a USERHASH)."""
        return {hashed: name for hashed, name in self._by_hash.items() if name in names}


def rest_password(secret: bytes, username: str) -> str:
    """The TURN REST API password for `username` under `secret`."""
    mac = keyed_hmac(secret, username.encode("utf-8"), "sha1")  # the same few secrets
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

    __slots__ = ("_configured", "_realm", "_secrets", "_shared")

    def __init__(self, secrets: Iterable[bytes | str], realm: str) -> None:
        self._configured = _encoded(secrets)
        self._shared: tuple[bytes, ...] = ()
        self._secrets = self._configured
        self._realm = realm

    def replace(self, secrets: Iterable[bytes | str]) -> None:
        """Use `secrets` from now on (a rotation); credentials are checked per request.
        The secrets given to `share` stay."""
        self._configured = _encoded(secrets)
        self._secrets = _deduplicated(self._configured + self._shared)

    def share(self, secrets: Iterable[bytes | str]) -> None:
        """Also accept `secrets` (a fleet's, from its store), beside the configured ones;
        `replace` (a reload, a secrets file) keeps them, and they keep the configured."""
        self._shared = _encoded(secrets)
        self._secrets = _deduplicated(self._configured + self._shared)

    def candidates(
        self, username: str, algorithm: PasswordAlgorithmId = MD5
    ) -> tuple[Credential, ...]:
        if not self._secrets:
            return ()  # no secret configured or shared (yet): nothing to parse for
        parsed = parse_rest_username(username)
        if parsed is None:
            return ()
        user, expiry = parsed
        return tuple(
            Credential(
                long_term_key(username, self._realm, rest_password(secret, username), algorithm),
                user,
                expiry,
            )
            for secret in self._secrets
        )

    def username_for_hash(self, hashed: bytes) -> str | None:
        return None  # a hash of `<expiry>:<user>` cannot be inverted (module docstring)


def _encoded(secrets: Iterable[bytes | str]) -> tuple[bytes, ...]:
    return tuple(s.encode("utf-8") if isinstance(s, str) else s for s in secrets)


def _deduplicated(secrets: tuple[bytes, ...]) -> tuple[bytes, ...]:
    # One candidate key per distinct secret, in order.
    return tuple(dict.fromkeys(secrets))


class CredentialSources:
    """Static users first, then shared secrets; every candidate is tried."""

    __slots__ = ("_sources",)

    def __init__(self, *sources: StaticUsers | SharedSecrets | RetiredUsers) -> None:
        self._sources = sources

    def candidates(
        self, username: str, algorithm: PasswordAlgorithmId = MD5
    ) -> tuple[Credential, ...]:
        found: tuple[Credential, ...] = ()
        for source in self._sources:
            found += source.candidates(username, algorithm)
        return found

    def username_for_hash(self, hashed: bytes) -> str | None:
        """The username whose USERHASH is `hashed` (static users only), or None."""
        for source in self._sources:
            found = source.username_for_hash(hashed)
            if found is not None:
                return found
        return None

    @property
    def shared_secrets(self) -> tuple[SharedSecrets, ...]:
        """The TURN REST secrets objects, as given (a secrets-file watcher swaps them in place)."""
        return tuple(s for s in self._sources if isinstance(s, SharedSecrets))

    @property
    def retired_users(self) -> int:
        """How many users have retired credentials here (`RetiredUsers`)."""
        return sum(len(s) for s in self._sources if isinstance(s, RetiredUsers))

    def with_static_users(
        self, users: StaticUsers, *, keep_for: Collection[str] = ()
    ) -> CredentialSources:
        """These sources with `users` as the static users (tried first, as before).

        The credentials the old static users (and users retired earlier) had under the
        names in `keep_for` (those holding allocations) are kept as `RetiredUsers`, tried
        after `users`: a user removed or given a new password keeps its allocations
        alive, and a user whose password did not change matches `users` first. The
        shared secrets objects are kept as they are.
        """
        old = [s for s in self._sources if isinstance(s, StaticUsers | RetiredUsers)]
        kept: dict[str, dict[PasswordAlgorithmId, tuple[Credential, ...]]] = {}
        hashes: dict[bytes, str] = {}
        for name in keep_for:
            for algorithm in PasswordAlgorithmId:
                current = users.candidates(name, algorithm)
                found = tuple(
                    replace(credential, retired=True)
                    for source in old
                    for credential in source.candidates(name, algorithm)
                    if credential.key not in {c.key for c in current}
                )
                if found:
                    kept.setdefault(name, {})[algorithm] = tuple(dict.fromkeys(found))
        for source in old:
            hashes |= source.hashes_of(kept)
        sources: tuple[StaticUsers | SharedSecrets | RetiredUsers, ...] = (users,)
        if kept:
            sources += (RetiredUsers(kept, hashes),)
        return CredentialSources(*sources, *self.shared_secrets)


class RetiredUsers:
    """Old credentials of static users a reload removed or re-keyed, for their allocations.

    Every candidate is `Credential.retired`; the authenticator refuses it a new
    Allocate. Kept for the users that held allocations at the reload, so it holds no
    more entries than there were allocations.
    """

    __slots__ = ("_by_hash", "_by_username")

    def __init__(
        self,
        by_username: Mapping[str, Mapping[PasswordAlgorithmId, tuple[Credential, ...]]],
        by_hash: Mapping[bytes, str],
    ) -> None:
        self._by_username = {name: dict(keys) for name, keys in by_username.items()}
        self._by_hash = dict(by_hash)

    def __len__(self) -> int:
        """How many users have retired credentials here."""
        return len(self._by_username)

    def candidates(
        self, username: str, algorithm: PasswordAlgorithmId = MD5
    ) -> tuple[Credential, ...]:
        return self._by_username.get(username, {}).get(algorithm, ())

    def username_for_hash(self, hashed: bytes) -> str | None:
        return self._by_hash.get(hashed)

    def hashes_of(self, names: Collection[str]) -> dict[bytes, str]:
        return {hashed: name for hashed, name in self._by_hash.items() if name in names}
