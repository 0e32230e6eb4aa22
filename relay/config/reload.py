"""Reloading the settings file without a restart: what may change live, and what may not.

Owns the decision of a reload (SIGHUP, `trelay reload`): `reload_settings(current,
config, flags)` re-reads the file through `load_settings` with the command line's
`Flags` (flags still win over the file), compares the result with the settings in force
and returns either
- a `Reload`: the settings to keep in force from now on (the file's values for the keys
  that apply live, the running ones for every other key), the live `Change`s and the
  changes that wait for a restart, each naming its key as written in the file; or
- a `ReloadFailed` naming the key that is wrong: nothing changes, the settings in force
  stay (a reload never leaves a node worse than it was).

Data in, data out: nothing here binds, watches or touches a running node (that is
`trelay.node.live_settings.apply_live`, and the log level is the process's:
`trelay.ops.logs.set_level`). Values of secrets (passwords, shared secrets) never appear
in a `Change`, only their counts.

What applies live, and why it can:
- `tls.cert`, `tls.key`: the TLS listeners keep one `ssl.SSLContext` (the DTLS listeners
  one `OpenSSL.SSL.Context`); loading the pair into it serves new handshakes with it,
  while established connections (and DTLS associations) keep theirs.
  Re-read at every reload while files are configured (a renewed certificate usually
  keeps its path), so this change is listed even when the paths stayed the same.
- `auth.users`: the core's credential lookup is swapped (`TurnServer.use_users`); a user
  removed or re-keyed cannot Allocate, and its running allocations keep refreshing.
- `auth.secrets` (inline), and the content of `auth.secrets_file`: the shared-secrets
  object is replaced in place, as the secrets-file watcher does; nonces stay valid
  (their key was derived at start). Allocations made under a secret rotated out are not
  refreshed any more (as with the watcher): rotate out only expired credentials' secrets.
- `auth.strict_expiry`, `quotas.user`, `quotas.total`, `lifetimes.default`,
  `lifetimes.max`: read by the core at each request (`TurnServer.use_config`); a lower
  quota refuses new Allocates and ends none.
- `quotas.unauthenticated_per_second`, `quotas.unauthenticated_burst`,
  `quotas.reflection_bytes_per_second`, `quotas.reflection_burst_bytes`: the limiter
  takes the new rates and bursts and keeps its buckets (`trelay.turn.rate_limit`).
- `relay.allow_peers`, `relay.deny_peers`, `relay.allow_loopback_peers`: the core's
  peer policy (`TurnServer.use_policy`); permissions and channels to peers now denied
  are withdrawn at once, the allocations live on (`trelay.turn.policy`).
- `bandwidth.*`: the node's buckets take the new rates and bursts in place, each
  keeping its debt; a level turned on starts full, one turned off costs nothing again
  (`trelay.turn.bandwidth`, `TurnNode.use_bandwidth`).
- `log_level`: the root logger's level.

What needs a restart (the change is listed, the running value kept), and why:
- `listen.*`, `http.listen`, `workers`: sockets bound and processes started at start
  (with `--workers` the supervisor holds the UDP sockets for its whole life);
- `relay.address`, `relay.address_v6`, `relay.external_address*`, `relay.ports`: relay
  sockets and the port pool are made at start, live allocations hold relayed addresses;
- `auth.realm`: every long-term key is derived from it (RFC 8489 §9.2.2): every client
  would have to authenticate again, and it is in every credential handed out;
- `auth.secrets_file` (the path) and `auth.revocations_file` (the path): their watchers
  follow the file they started with (their content is re-read on change anyway);
- `auth.secrets` while `auth.secrets_file` is set: that file's watcher re-adds the
  inline secrets it started with at the file's next change, so a live change would be
  undone behind the operator's back;
- `auth.third_party`, `api.*`, `http.selftest`: the token API and `/selftest` routes are
  built at start with their keys and secret;
- `http.admin_token_file` (the path and the token it holds): the admin routes are built
  at start with the token;
- `software`: SOFTWARE is encoded once into the core (RFC 8489 §14.14);
- `stream.idle_timeout`: each TCP/TLS listener got it as an argument at start;
- `log_format`, `log_usernames`: the formatter and its `user_ref` key are made at start;
  a new one would change every user reference mid-run (the "allocation created" and
  "ended" lines of one user would no longer match) and mix formats in one stream;
- `tls.cert` dropped (back to a throw-away certificate): each worker would make its own;
- any key not named above (new sections included): read at start only, until someone
  decides otherwise here.

A reload whose live result would contradict what stays until a restart is refused: no
TURN REST secret left while `/selftest` or the token API (restart-only) mint with one.

The auto-generated `auth.dev_secret` of the development defaults is never "changed" by
a reload: the one in force is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trelay.config.flags import Flags
from trelay.config.settings import Settings, load_settings
from trelay.config.values import SettingsError

# Attribute path in `Settings` -> the key as written in the settings file.
_KEYS = {
    "tls.cert_file": "tls.cert",
    "tls.key_file": "tls.key",
    "auth.file_secrets": "auth.secrets_file",
    "relay.user_quota": "quotas.user",
    "relay.total_quota": "quotas.total",
    "relay.permissions_per_allocation": "quotas.permissions_per_allocation",
    "relay.channels_per_allocation": "quotas.channels_per_allocation",
    "relay.peers_per_request": "quotas.peers_per_request",
    "relay.allocations_per_source": "quotas.allocations_per_source",
    "relay.pending_per_source": "quotas.pending_per_source",
    "relay.peer_connections_per_allocation": "quotas.peer_connections_per_allocation",
    "relay.unauthenticated_rate": "quotas.unauthenticated_per_second",
    "relay.unauthenticated_burst": "quotas.unauthenticated_burst",
    "relay.reflection_rate": "quotas.reflection_bytes_per_second",
    "relay.reflection_burst": "quotas.reflection_burst_bytes",
    "relay.default_lifetime": "lifetimes.default",
    "relay.max_lifetime": "lifetimes.max",
    "api.keys": "api.keys_file",
    "http.admin_token": "http.admin_token_file",  # its content; never shown
}
# Paths that apply live without a special rule (TLS and the secrets have their own).
_LIVE = frozenset(
    (
        "auth.users",
        "auth.strict_expiry",
        "relay.allow_peers",
        "relay.deny_peers",
        "relay.allow_loopback_peers",
        "relay.user_quota",
        "relay.total_quota",
        "relay.permissions_per_allocation",
        "relay.channels_per_allocation",
        "relay.peers_per_request",
        "relay.allocations_per_source",
        "relay.pending_per_source",
        "relay.peer_connections_per_allocation",
        "relay.unauthenticated_rate",
        "relay.unauthenticated_burst",
        "relay.reflection_rate",
        "relay.reflection_burst",
        "relay.default_lifetime",
        "relay.max_lifetime",
        # Retuned in place (`trelay.turn.bandwidth.Bandwidth.retune`).
        "bandwidth.per_allocation",
        "bandwidth.per_allocation_burst",
        "bandwidth.per_identity",
        "bandwidth.per_identity_burst",
        "bandwidth.node_total",
        "bandwidth.node_total_burst",
        "log_level",
    )
)
_SPECIAL = frozenset(
    (
        "tls.cert_file",
        "tls.key_file",
        "auth.secrets",
        "auth.secrets_file",
        "auth.file_secrets",
        "auth.dev_secret",
    )
)
# Why a key needs a restart, by the longest matching prefix of its attribute path.
_WHY_RESTART = {
    "": "read at start only",
    "listen": "listening sockets are bound at start",
    "http": "the operator port and its routes are set up at start",
    "workers": "worker processes are started at start",
    "relay": "relay sockets and the port pool are made at start",
    "stream": "each TCP/TLS listener got it at start",
    "dtls": "each DTLS listener got it at start",
    "auth.realm": "every long-term key is derived from the realm",
    "auth.secrets_file": "its watcher follows the file it started with",
    "auth.secrets": "auth.secrets_file's watcher keeps the inline secrets it started with",
    "auth.revocations_file": "its watcher follows the file it started with",
    "auth.third_party": "the token API is built with these keys at start",
    "api": "the token API is built at start",
    "software": "SOFTWARE is encoded once at start",
    "log_format": "the log formatter is made at start",
    "log_usernames": "the log formatter is made at start",
    "tls": "a throw-away certificate is made at start only",
    "drain": "the drain is set up at start",
    "fleet": "the fleet's Redis connection and registry entry are set up at start",
}


@dataclass(frozen=True, slots=True)
class Change:
    """One changed key, as written in the file, and what changed (never a secret)."""

    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.key}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Reload:
    """The outcome of a good file: what to keep in force, applied live or waiting.

    `settings`: the settings in force from now on (compare the next reload with them).
    `live`: the changes a running node and process apply (`applies` asks for a key).
    `restart`: changes refused until a restart; `settings` keeps the running values.
    `live_paths`: the `Settings` attribute paths ("relay.user_quota") whose values the
    live changes set, for `onto`.
    """

    settings: Settings
    live: tuple[Change, ...] = ()
    restart: tuple[Change, ...] = ()
    live_paths: tuple[str, ...] = ()

    def onto(self, settings: Settings) -> Settings:
        """`settings` with this reload's live values: another view of the same node (a
        worker's settings, with its own ports and relay port slice), kept up to date so
        that a worker restarted later starts with what is in force."""
        for path in self.live_paths:
            settings = _with(settings, path, _value(self.settings, path))
        return settings

    def applies(self, *keys: str) -> bool:
        """True if any of `keys` (as in the file: "quotas.user") changes live."""
        return any(change.key in keys for change in self.live)


@dataclass(frozen=True, slots=True)
class ReloadFailed:
    """The file cannot be used: `key` names what is wrong; the settings in force stay."""

    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


def reload_settings(current: Settings, config: Path | None, flags: Flags) -> Reload | ReloadFailed:
    """Re-read `config` with `flags` (as at start) and decide against `current`."""
    try:
        new = load_settings(config, flags)
    except SettingsError as exc:
        return ReloadFailed(exc.key, exc.problem)
    merged = current
    live: list[Change] = []
    restart: list[Change] = []
    for path in _differences(current, new):
        if path in _SPECIAL:
            continue
        key = _KEYS.get(path, path)
        if path in _LIVE:
            merged = _with(merged, path, _value(new, path))
            live.append(Change(key, _describe(path, _value(current, path), _value(new, path))))
        else:
            restart.append(Change(key, f"changed; needs a restart ({_why(path)})"))
    merged, tls = _tls(current, new, merged)
    merged, secrets, refused = _secrets(current, new, merged)
    problem = _contradiction(merged)
    if problem is not None:
        return problem
    return Reload(
        merged,
        (*tls.live, *secrets, *live),
        (*tls.restart, *refused, *restart),
        tuple(_differences(current, merged)),
    )


# --- the rules with more than one key ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Split:
    live: tuple[Change, ...] = ()
    restart: tuple[Change, ...] = ()


def _tls(current: Settings, new: Settings, merged: Settings) -> tuple[Settings, _Split]:
    if not current.listen.tls and not current.listen.dtls:
        # No TLS or DTLS listener until a restart, which reads the file again: nothing to load.
        return replace(merged, tls=new.tls), _Split()
    if new.tls.cert_file is None or new.tls.key_file is None:
        if current.tls.self_signed:
            return merged, _Split()
        why = f"changed; needs a restart ({_why('tls')})"
        return merged, _Split(restart=(Change("tls.cert", why),))
    if new.tls == current.tls:
        detail = f"re-read {new.tls.cert_file} and {new.tls.key_file}"
    else:
        detail = f"now {new.tls.cert_file} and {new.tls.key_file}"
    return replace(merged, tls=new.tls), _Split(live=(Change("tls.cert", detail),))


def _secrets(
    current: Settings, new: Settings, merged: Settings
) -> tuple[Settings, tuple[Change, ...], tuple[Change, ...]]:
    """The TURN REST secrets: inline ones, the secrets file's path and its content."""
    old_auth, new_auth = current.auth, new.auth
    live: list[Change] = []
    restart: list[Change] = []
    auth = merged.auth
    if new_auth.secrets_file != old_auth.secrets_file:
        why = f"changed; needs a restart ({_why('auth.secrets_file')})"
        restart.append(Change("auth.secrets_file", why))
    elif new_auth.file_secrets != old_auth.file_secrets:
        auth = replace(auth, file_secrets=new_auth.file_secrets)
        detail = (
            f"re-read, {_count(new_auth.file_secrets, 'secret')} (was {len(old_auth.file_secrets)})"
        )
        live.append(Change("auth.secrets_file", detail))
    if new_auth.secrets != old_auth.secrets:
        if old_auth.secrets_file is None:
            auth = replace(auth, secrets=new_auth.secrets)
            detail = f"{_count(new_auth.secrets, 'secret')} (was {len(old_auth.secrets)})"
            live.append(Change("auth.secrets", detail))
        else:
            restart.append(
                Change("auth.secrets", f"changed; needs a restart ({_why('auth.secrets')})")
            )
    merged = replace(merged, auth=auth)
    in_force = merged.auth.shared_secrets
    if not live and in_force != old_auth.shared_secrets:
        # Only the users changed, and with them whether the dev secret is in force.
        detail = f"{_count(in_force, 'secret')} in force (was {len(old_auth.shared_secrets)})"
        live.append(Change("auth.secrets", detail))
    return merged, tuple(live), tuple(restart)


def _contradiction(merged: Settings) -> ReloadFailed | None:
    if merged.auth.shared_secrets:
        return None
    if merged.http.selftest:
        return ReloadFailed(
            "auth.secrets", "http.selftest (until a restart) needs a TURN REST secret"
        )
    if merged.api.keys_file is not None:
        return ReloadFailed(
            "auth.secrets", "the token API (until a restart) needs a TURN REST secret"
        )
    return None


# --- comparing and rebuilding the settings tree -------------------------------------------


def _differences(current: Settings, new: Settings) -> Iterator[str]:
    """Attribute paths ("relay.deny_peers", "workers") whose values differ, in order.

    Two levels: the top-level values and the fields of each section; a section's field
    that is itself a dataclass (`auth.third_party`, `drain.alternate_server`) is one value.
    """
    for field in dataclasses.fields(current):
        old_value, new_value = getattr(current, field.name), getattr(new, field.name)
        if _is_section(old_value) and type(old_value) is type(new_value):
            for inner in dataclasses.fields(old_value):
                if getattr(old_value, inner.name) != getattr(new_value, inner.name):
                    yield f"{field.name}.{inner.name}"
        elif old_value != new_value:
            yield field.name


def _is_section(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _value(settings: Settings, path: str) -> object:
    section, _, name = path.partition(".")
    value = getattr(settings, section)
    return getattr(value, name) if name else value


def _with(settings: Settings, path: str, value: object) -> Settings:
    section, _, name = path.partition(".")
    # Any: the value comes from the same path of another `Settings`, so its type fits.
    change: dict[str, Any] = {name or section: value}
    if not name:
        return replace(settings, **change)
    return replace(settings, **{section: replace(getattr(settings, section), **change)})


def _why(path: str) -> str:
    prefixes = [p for p in _WHY_RESTART if path == p or path.startswith(p + ".") or not p]
    return _WHY_RESTART[max(prefixes, key=len)]


def _describe(path: str, old: object, new: object) -> str:
    if path == "auth.users":
        assert isinstance(old, tuple) and isinstance(new, tuple)
        return _users_change(dict(old), dict(new))
    if isinstance(old, tuple) and isinstance(new, tuple):
        added = [str(v) for v in new if v not in old]
        removed = [str(v) for v in old if v not in new]
        parts = [f"+ {', '.join(added)}"] * bool(added) + [f"- {', '.join(removed)}"] * bool(
            removed
        )
        return "; ".join(parts) or "reordered"
    return f"{_text(old)} -> {_text(new)}"


def _users_change(old: dict[str, str], new: dict[str, str]) -> str:
    # Counts only: usernames stay out of the logs unless log_usernames says otherwise.
    added = sum(1 for name in new if name not in old)
    removed = sum(1 for name in old if name not in new)
    changed = sum(1 for name in new if name in old and old[name] != new[name])
    parts = [(added, "added"), (removed, "removed"), (changed, "with a new password")]
    counted = ", ".join(f"{n} {what}" for n, what in parts if n) or "reordered"
    return f"{counted} ({len(new)} in all)"


def _count(items: tuple[str, ...], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
