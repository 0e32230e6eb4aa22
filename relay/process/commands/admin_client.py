"""The client side of a running relay's admin routes, shared by the commands that use them.

Owns what `trelay sessions`, `trelay reload` (`trelay.process.commands.admin`), `trelay
fleet nodes` (`trelay.process.commands.fleet`) and `trelay usage`
(`trelay.process.commands.usage`) have in common, written with the standard library only
(urllib):

- `add_admin_command`: a subcommand taking what every admin command takes
  (`add_admin_arguments`): `--http HOST:PORT` (the operator port), `--token-file FILE`
  (the admin token, `trelay.config.admin_token`) and `--json`;
- `admin_request`: `METHOD path?query` on that port with `Authorization: Bearer`;
- `ask`: sends it (bounded by `TIMEOUT`) and returns the route's JSON object, or writes
  the one-line error and returns the exit status (`trelay.process.commands.outcome`):
  2 for a bad flag or token file, 1 when refused or unreachable. A refusal says the
  HTTP status and the route's own words: its `message` (the `{"error", "message"}`
  routes), else its `reason` (401), else its `error`.

The token is never printed.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from trelay.config.admin_token import read_admin_token
from trelay.config.values import SettingsError, format_host_port, parse_host_port
from trelay.process.commands.outcome import CommandFailed, fail

TIMEOUT = 10.0
# Generic so that `trelay.process.cli`'s own ArgumentParser subclass (its error handling) is kept.
Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_admin_command(
    subparsers: argparse._SubParsersAction[Parser], name: str, summary: str, description: str
) -> Parser:
    """Add `name` (its `help` the summary) with the admin flags; the new parser."""
    parser = subparsers.add_parser(name, help=summary, description=description)
    add_admin_arguments(parser)
    return parser


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    """What every admin command takes: the operator port, the token, JSON output."""
    parser.add_argument(
        "--http", required=True, metavar="HOST:PORT", help="the relay's operator HTTP port"
    )
    parser.add_argument(
        "--token-file", required=True, type=Path, metavar="FILE", help="the admin token"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON the relay sent")


def admin_request(
    arguments: argparse.Namespace, path: str, method: str, query: dict[str, str] | None = None
) -> urllib.request.Request:
    """`method path?query` on the relay's operator port, with its admin token."""
    address = parse_host_port("--http", arguments.http)
    token = read_admin_token("--token-file", arguments.token_file)
    url = f"http://{format_host_port(address.host, address.port)}{path}"
    if query:
        url = f"{url}?{urllib.parse.urlencode(query)}"
    headers = {"Authorization": f"Bearer {token}"}
    return urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - http:// built here


def ask(
    name: str, build: Callable[[], urllib.request.Request], stderr: TextIO
) -> dict[str, Any] | int:
    """The relay's JSON answer to the request `build` makes, or the exit status of a
    one-line error (2: a bad flag or token file; 1: refused or unreachable)."""
    try:
        return _send(build())
    except (SettingsError, CommandFailed) as exc:
        return fail(name, exc, stderr)


def _send(request: urllib.request.Request) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise CommandFailed(refusal(exc.code, exc.read())) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandFailed(f"cannot reach {request.full_url}: {reason}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise CommandFailed(f"{request.full_url} answered no JSON") from None
    if not isinstance(answer, dict):
        raise CommandFailed(f"{request.full_url} answered unexpected JSON")
    return answer


def refusal(status: int, body: bytes) -> str:
    """One line from an HTTP error: its status and the route's words, if any."""
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    detail = ""
    if isinstance(document, dict):
        words = document.get("message") or document.get("reason") or document.get("error")
        detail = str(words or "")
    if status == 404 and detail == "not found":
        detail = "no admin routes there (is http.admin_token_file set?)"
    return f"HTTP {status}" + (f": {detail}" if detail else "")
