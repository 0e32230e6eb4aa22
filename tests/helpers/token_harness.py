"""The token API served by a real hypercorn on 127.0.0.1 port 0, in a background trio thread.

The app is the operator app (`trelay.ops.http_app.build_app`) with `token_routes` as extra
routes, served by `trelay.ops.http_server.serve_http`, as a node will serve it.

Tests talk to it with blocking clients (urllib, Twilio's `requests`-based REST client),
so the server runs in its own `trio.run` (`trelay.icekit.loopback_relay.trio_in_thread`).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import trio

from trelay.config.api_keys import ApiKey, ApiKeys
from trelay.config.revocations import Revocations, watch_revocations_file
from trelay.credentials.token_api import TokenApiContext, token_routes
from trelay.icekit.loopback_relay import trio_in_thread
from trelay.ops.http_app import NodeStatus, build_app
from trelay.ops.http_server import serve_http

ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"
OTHER_ACCOUNT = "AC" + "ffeeddccbbaa99887766554433221100"
KEY = ApiKey("SK" + "0123456789abcdef" * 2, "K" * 32, ACCOUNT)
FOREIGN = ApiKey("SK" + "fedcba9876543210" * 2, "F" * 32, OTHER_ACCOUNT)
KEYS = ApiKeys((KEY, FOREIGN))
TURN_SECRET = "the-turn-rest-secret"
TIMEOUT = 10.0
WATCH_POLL_SECONDS = 0.05


class SettableClock:
    """A wall clock the test sets (the API's `clock`)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextmanager
def serve_token_api(
    context: TokenApiContext, watch: tuple[Path, Revocations] | None = None
) -> Iterator[str]:
    """The base URL ("http://127.0.0.1:<port>") of the operator app with the token routes.

    `watch`: a node's revocations list kept in step with the file by
    `watch_revocations_file` (run in the same thread, polling every `WATCH_POLL_SECONDS`).
    """
    app = build_app(NodeStatus(), extra_routes=token_routes(context))

    async def start(nursery: trio.Nursery) -> str:
        host, port = await nursery.start(serve_http, "127.0.0.1", 0, app)
        if watch is not None:
            await nursery.start(watch_revocations_file, *watch, WATCH_POLL_SECONDS)
        return f"http://{host}:{port}"

    with trio_in_thread(start, "trelay-token-api", TIMEOUT) as base_url:
        yield base_url


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def basic(key: ApiKey, secret: str | None = None) -> dict[str, str]:
    pair = f"{key.sid}:{key.secret if secret is None else secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One HTTP request; the status, headers and JSON body (None if not JSON)."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            status, raw, found = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, found = error.code, error.read(), dict(error.headers)
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return Answer(status, {k.lower(): v for k, v in found.items()}, parsed)


def form(**fields: str) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(fields).encode()


def forged(token: str) -> str:
    """`token` with its identity changed to "root" and its signature kept: a forgery."""
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["grants"] = {**claims.get("grants", {}), "identity": "root"}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{body}.{signature}"


def alg_none(token: str) -> str:
    _, body, _ = token.split(".")
    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{head}.{body}."
