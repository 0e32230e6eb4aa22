"""The `trelay` command: its flags and subcommands, and the status it exits with.

Owns the operator's side of the runtime: parsing (`trelay serve`, `trelay check-config`,
`trelay keys`, `trelay token`, `trelay sessions`, `trelay reload`, `trelay fleet`, `trelay usage`,
`trelay --version`), logging set-up, and turning a
start-up failure into one line and an exit status. Serving is `trelay.process.serve`,
the ready line `trelay.process.ready`. Nothing imports this module; it is the
console-script entry point (`trelay = "trelay.process.cli:main"`, whose wrapper passes
`main`'s return value to `sys.exit`).

Invariants:
- A bad flag or setting is one line on stderr, "trelay: <key>: <problem>", and status 2;
  nothing has been bound by then. That includes what only the machine can tell
  (`trelay.process.preflight`): a TLS key that does not match its certificate, an
  unreadable secrets or revocations file, a relay address the machine does not have,
  and an operator HTTP port already in use (`trelay.process.serve`). A relay listen
  address that cannot be bound is one line too, naming its `listen.*` key, and status 1
  (`trelay.process.exit_codes`).
- `trelay check-config FILE` reads FILE as `trelay serve --config FILE` would, and the
  files it names, binding nothing: "FILE: ok" on stdout and status 0, or the one line
  and status 2.
- `--workers N` (`workers = N`), N > 1: this process supervises N worker processes that
  share the listen ports (`trelay.process.workers`); the ready line, the HTTP port,
  signals and exit statuses are the same. A worker that cannot start, or keeps dying,
  is one line and status 1 (2 for a bad setting).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import trio

from trelay.config.flags import Flags
from trelay.config.settings import Settings, load_settings
from trelay.config.values import SettingsError
from trelay.node.listeners import ListenError
from trelay.ops.logs import configure_logging
from trelay.process.commands.admin import (
    add_reload_command,
    add_sessions_command,
    run_reload_command,
    run_sessions_command,
)
from trelay.process.commands.fleet import add_fleet_command, run_fleet_command
from trelay.process.commands.fleet_state import (
    FLEET_STATE_ACTIONS,
    add_fleet_state_commands,
    run_fleet_state_command,
)
from trelay.process.commands.token import TOKEN_COMMANDS, add_token_commands, run_token_command
from trelay.process.commands.usage import add_usage_command, run_usage_command
from trelay.process.exit_codes import PROG, ExitStatus, known_error, status_for
from trelay.process.preflight import check_files, check_relay_addresses
from trelay.process.reload import SettingsSource
from trelay.process.serve import serve_until_signal, serve_workers_until_signal
from trelay.process.workers import WorkersFailed


def main(argv: list[str] | None = None) -> int:
    """Run `trelay` with `argv` (default: the process's arguments); return the exit status."""
    try:
        arguments = build_parser().parse_args(argv)
        if arguments.command in TOKEN_COMMANDS:
            return run_token_command(arguments)
        if arguments.command == "check-config":
            return check_config(arguments.file)
        if arguments.command == "sessions":
            return run_sessions_command(arguments)
        if arguments.command == "fleet":
            if arguments.fleet_command in FLEET_STATE_ACTIONS:
                return run_fleet_state_command(arguments)
            return run_fleet_command(arguments)
        if arguments.command == "reload":
            return run_reload_command(arguments)
        if arguments.command == "usage":
            return run_usage_command(arguments)
        flags = flags_from(arguments)
        settings = load_settings(arguments.config, flags)
        # Before anything binds: what only the files and the machine can tell.
        check_files(settings)
        check_relay_addresses(settings, flags)
    except SettingsError as exc:
        return _fail(exc, ExitStatus.BAD_SETTINGS)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else ExitStatus.OK
    configure_logging(settings.log_level.logging_level, settings.log_format, settings.log_usernames)
    return run(settings, SettingsSource(arguments.config, flags))


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors become `SettingsError` ("trelay: <key>: <problem>")."""

    def error(self, message: str) -> NoReturn:
        raise usage_error(message)


def usage_error(message: str) -> SettingsError:
    """Turn an argparse message into a `SettingsError` whose key is the flag concerned."""
    head, _, rest = message.partition(": ")
    if head.startswith("argument "):
        # "argument --listen-udp: expected one argument"
        flag, _, problem = message.removeprefix("argument ").partition(": ")
        return SettingsError(flag, problem)
    if head == "unrecognized arguments":
        first = rest.split()[0] if rest.split() else rest
        return SettingsError(first, "unknown flag" if first.startswith("-") else "unexpected")
    if head == "the following arguments are required":
        return SettingsError(rest, "required")
    return SettingsError("arguments", message)


def version() -> str:
    """The installed `trelay` distribution's version ("unknown" from a bare checkout)."""
    try:
        return metadata.version("trelay")
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def check_config(path: Path) -> int:
    """`trelay check-config FILE`: the settings and the files they name, no bind."""
    check_files(load_settings(path))
    print(f"{path}: ok")
    return ExitStatus.OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A STUN/TURN relay on trio.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    serve_parser = commands.add_parser(
        "serve",
        help="run the relay until SIGINT or SIGTERM",
        description="Run the relay. With no flags: loopback, ephemeral ports, dev TLS.",
    )
    serve_parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings")
    for transport in ("udp", "tcp", "tls", "dtls"):
        serve_parser.add_argument(
            f"--listen-{transport}",
            action="append",
            metavar="HOST:PORT",
            help=f"listen for {transport.upper()} (repeatable; replaces listen.{transport})",
        )
    serve_parser.add_argument(
        "--listen-http",
        action="append",
        metavar="HOST:PORT",
        help="the operator HTTP port: /metrics, /healthz, /readyz (repeatable; replaces "
        "http.listen)",
    )
    serve_parser.add_argument(
        "--admin-token-file",
        metavar="FILE",
        help="serve the session admin routes (/v1/sessions, /v1/drain) on the HTTP port to "
        "requests bearing the token in FILE (replaces http.admin_token_file)",
    )
    serve_parser.add_argument("--realm", help="REALM of the long-term credentials")
    serve_parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain")
    serve_parser.add_argument("--tls-key", metavar="FILE", help="PEM private key")
    serve_parser.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning, ...")
    serve_parser.add_argument(
        "--user", action="append", metavar="NAME:PASSWORD", help="a static TURN user"
    )
    serve_parser.add_argument(
        "--secret", action="append", metavar="SECRET", help="a TURN REST API shared secret"
    )
    serve_parser.add_argument(
        "--secrets-file",
        metavar="FILE",
        help="TURN REST API shared secrets, one per line, newest first; re-read on change",
    )
    serve_parser.add_argument("--relay-address", metavar="IP", help="where relay sockets bind")
    serve_parser.add_argument(
        "--external-address",
        metavar="IP",
        help="the relay address clients are told (behind a 1:1 NAT, or a wildcard relay address)",
    )
    serve_parser.add_argument(
        "--relay-address-v6", metavar="IP", help="where IPv6 relay sockets bind (dual stack)"
    )
    serve_parser.add_argument("--relay-ports", metavar="MIN-MAX", help="relay port range")
    serve_parser.add_argument(
        "--allow-loopback-peers",
        action="store_true",
        help="let peers on loopback through (tests and local development only)",
    )
    serve_parser.add_argument(
        "--selftest",
        action="store_true",
        help="serve /selftest on the HTTP port (it hands out short-lived TURN credentials)",
    )
    serve_parser.add_argument(
        "--api-keys", metavar="FILE", help="API keys (`trelay keys create`): serve the token API"
    )
    serve_parser.add_argument(
        "--revocations-file", metavar="FILE", help="revoked identities, watched for changes"
    )
    serve_parser.add_argument(
        "--workers",
        metavar="N",
        help="worker processes sharing the listen ports (SO_REUSEPORT); default 1",
    )
    serve_parser.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long existing allocations may run on (default 3600; "
        "replaces drain.timeout); a second signal ends at once",
    )
    serve_parser.add_argument(
        "--alternate-server",
        metavar="HOST:PORT",
        help="while draining, send new Allocates there (300 Try Alternate) instead of "
        "refusing them (508); replaces drain.alternate_server",
    )
    serve_parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="join a fleet through this Redis (redis:// or rediss://); replaces fleet.redis_url",
    )
    serve_parser.add_argument(
        "--region", metavar="NAME", help="this node's region in the fleet; replaces fleet.region"
    )
    serve_parser.add_argument(
        "--node-id", metavar="NAME", help="this node's id in the fleet; replaces fleet.node_id"
    )
    serve_parser.add_argument(
        "--public-uri",
        action="append",
        metavar="URI",
        help="a stun:/turn:/turns: URI clients reach this node at (repeatable; replaces "
        "fleet.public_uris)",
    )
    serve_parser.add_argument(
        "--redis-password-file",
        metavar="FILE",
        help="the fleet's Redis password; replaces fleet.redis_password_file",
    )
    serve_parser.add_argument("--log-format", metavar="FORMAT", help="human or json")
    serve_parser.add_argument(
        "--log-usernames", action="store_true", help="write usernames in logs"
    )
    add_token_commands(commands)
    check_parser = commands.add_parser(
        "check-config",
        help="validate a settings file without binding anything",
        description="Read FILE as `trelay serve --config FILE` would, with the files it "
        "names (TLS, secrets, revocations, API keys), binding nothing. Prints "
        '"FILE: ok" (status 0) or one line naming the key (status 2).',
    )
    check_parser.add_argument("file", type=Path, metavar="FILE", help="TOML settings")
    add_sessions_command(commands)
    add_reload_command(commands)
    add_fleet_state_commands(add_fleet_command(commands))
    add_usage_command(commands)
    return parser


def flags_from(arguments: argparse.Namespace) -> Flags:
    def addresses(values: list[str] | None) -> tuple[str, ...] | None:
        return None if values is None else tuple(values)

    return Flags(
        listen_udp=addresses(arguments.listen_udp),
        listen_tcp=addresses(arguments.listen_tcp),
        listen_tls=addresses(arguments.listen_tls),
        listen_dtls=addresses(arguments.listen_dtls),
        listen_http=addresses(arguments.listen_http),
        realm=arguments.realm,
        tls_cert=arguments.tls_cert,
        tls_key=arguments.tls_key,
        log_level=arguments.log_level,
        users=addresses(arguments.user),
        secrets=addresses(arguments.secret),
        secrets_file=arguments.secrets_file,
        relay_address=arguments.relay_address,
        relay_address_v6=arguments.relay_address_v6,
        external_address=arguments.external_address,
        relay_ports=arguments.relay_ports,
        allow_loopback_peers=arguments.allow_loopback_peers,
        selftest=arguments.selftest,
        api_keys=arguments.api_keys,
        revocations_file=arguments.revocations_file,
        log_format=arguments.log_format,
        log_usernames=arguments.log_usernames,
        workers=arguments.workers,
        drain_timeout=arguments.drain_timeout,
        alternate_server=arguments.alternate_server,
        redis_url=arguments.redis_url,
        region=arguments.region,
        node_id=arguments.node_id,
        public_uris=addresses(arguments.public_uri),
        redis_password_file=arguments.redis_password_file,
        admin_token_file=arguments.admin_token_file,
    )


def run(settings: Settings, source: SettingsSource) -> int:
    """Serve until SIGINT/SIGTERM; the exit status."""
    try:
        if settings.workers > 1:
            trio.run(serve_workers_until_signal, settings, source, sys.stdout, sys.stderr)
        else:
            trio.run(serve_until_signal, settings, source, sys.stdout, sys.stderr)
    except KeyboardInterrupt:  # a Ctrl-C before the signal receiver was installed
        return ExitStatus.OK
    except (SettingsError, ListenError, WorkersFailed, BaseExceptionGroup) as exc:
        known = known_error(exc, (SettingsError, ListenError, WorkersFailed))
        if known is None:
            raise
        if isinstance(known, WorkersFailed):
            return _fail(known, known.status)
        return _fail(known, status_for(known))
    return ExitStatus.OK


def _fail(error: Exception, status: int) -> int:
    print(f"{PROG}: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
