"""The token API: HTTP routes that turn API keys and access tokens into TURN credentials.

Owns the HTTP surface of credential minting (Starlette routes; the server that runs
them is the caller's). Every credential handed out is a TURN REST API credential
(draft-uberti-behave-turn-rest-00 §2.2): username "<expiry>:<identity>", password
base64(HMAC-SHA1(secret, username)) under the node's shared secret, so any relay node
holding the secret verifies it alone.

- `POST /2010-04-01/Accounts/{AccountSid}/Tokens.json`: Twilio's Network Traversal
  Service Token resource. HTTP Basic auth (RFC 7617) with an API key SID and secret,
  the path's account must be the key's; form field `Ttl` (1..86400, default 86400);
  201 with username, password, ttl (a string), account_sid, date_created and
  date_updated (RFC 2822), ice_servers [{url, urls, username, credential}]. The
  identity is the API key SID, so revoking the SID revokes what the key minted.
- `GET /v1/ice-servers` with `Authorization: Bearer <access token>` (RFC 6750 §2.1):
  an RTCConfiguration (W3C WebRTC §4.2.1), `iceTransportPolicy: "relay"` only for
  `?policy=relay`; credentials bound to the token's identity, expiring no later than
  the token.
- `GET|POST /v1/turn-credentials?service=turn&username=...`: the draft's response shape
  {username, password, ttl, uris} (draft §2.2), Bearer token or Basic key.
- `POST /v1/iceconfig` (and `/v1alpha/iceconfig`), Bearer token or Basic key: Google's
  Network Traversal answer that AppRTC-style clients parse: {"lifetimeDuration": "<n>s",
  "iceServers": [{urls, username, credential}], "iceTransportPolicy": "all" | "relay"}
  (`relay` for `?policy=relay` or a JSON body {"policy": "relay"}); the body may be empty.
- `POST /v1/revocations` (Basic key) with JSON {identity, until | ttl}: 201; handed to the
  context's `revoke` writer (today's: the revocations file that every node watches,
  `trelay.config.revocations`; none: 404).
- `POST /v1/access-tokens` (Bearer token or Basic key): an RFC 7635 ACCESS-TOKEN and its
  mac_key for a non-browser client (`access_tokens` says what revocation can reach).

What the routes hand out comes from providers in the context, so that one node alone and
a node in a fleet share the routes: the API keys (`keys()`: the keys file, merged with
the fleet's keys in Redis, `trelay.fleet.api_keys`), the minting secret (`secret()`), the
ICE URIs for the request (`uris(request)`: a static list, or placement in the fleet,
`trelay.credentials.ice_uris`; 503 `no_relay` when no node can take the client) and the
revocation writer (`revoke(identity, until, now)`).

Invariants: every refusal is a 4xx with JSON {"error": reason, "message": ...}; an
identity that is revoked gets no credential; secrets, passwords and tokens are never
logged (only reasons, key SIDs and identities); the clock is the context's.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trelay.config.api_keys import ApiKeys
from trelay.config.revocations import Revocation, Revocations, parse_until, revoke
from trelay.credentials.access_tokens import VerifiedToken, check_identity
from trelay.credentials.api_requests import (
    BEARER_CHALLENGE,
    ApiError,
    authorization,
    basic_key,
    bearer_token,
    read_body,
    read_form,
    refusal,
)
from trelay.credentials.ice_config import rest_credential
from trelay.credentials.ice_uris import IceUriProvider, static_uris
from trelay.credentials.token_crypto import mint_access_token
from trelay.turn.third_party import token_identity

log = logging.getLogger(__name__)

DEFAULT_TTL = 86400  # Twilio's default and maximum for the Token resource
MAX_REVOCATION_SECONDS = 10 * 365 * 86400
NTS_PATH = "/2010-04-01/Accounts/{account_sid}/Tokens.json"


@dataclass(frozen=True, slots=True)
class ThirdPartyMint:
    """How this API mints RFC 7635 tokens: one kid of the nodes' key table, our name for them.

    `server_name` must be the nodes' `ThirdPartyAuthorizer` server name (the AEAD's
    associated data); `lifetime` is the most a token gets (RFC 7635 §6.2, seconds).
    """

    kid: str
    key: bytes = field(repr=False)  # 16 (A128GCM) or 32 (AES-256-GCM) bytes
    server_name: str
    lifetime: int = 3600

    def mint(self, lifetime: int, now: float) -> tuple[bytes, bytes]:
        """(ACCESS-TOKEN value, mac_key), valid from `now` (Unix) for `lifetime` seconds."""
        return mint_access_token(self.kid, self.key, self.server_name, lifetime, now)


# Writes a revocation (identity, until, now: Unix seconds) where every node will see it.
RevocationWriter = Callable[[str, float, float], Awaitable[Revocation]]


@dataclass(frozen=True, slots=True)
class TokenApiContext:
    """What the routes need: providers of keys, secret and URIs, a revocation writer, a clock."""

    keys: Callable[[], ApiKeys]
    # The TURN REST secret credentials are minted under (the nodes accept it).
    secret: Callable[[], str] = field(repr=False)
    # turn:/turns:/stun: URIs (RFC 7064/7065) for one request.
    uris: IceUriProvider
    default_ttl: int = DEFAULT_TTL
    max_ttl: int = DEFAULT_TTL
    # None: `POST /v1/revocations` answers 404 (no place to write revocations to).
    revoke: RevocationWriter | None = None
    # The node's live view (kept fresh by `watch_revocations_file`); checked before minting.
    revocations: Revocations = field(default_factory=Revocations)
    clock: Callable[[], float] = time.time
    # RFC 7635 minting (`POST /v1/access-tokens`); None: that route answers 404.
    third_party: ThirdPartyMint | None = None


def file_revocation_writer(path: Path) -> RevocationWriter:
    """Today's writer: the revocations file every node watches (`trelay.config.revocations`)."""

    async def write(identity: str, until: float, now: float) -> Revocation:
        entry: Revocation = await trio.to_thread.run_sync(revoke, path, identity, until, now)
        return entry

    return write


def static_context(
    keys: ApiKeys,
    turn_secret: str,
    ice_urls: tuple[str, ...],
    *,
    default_ttl: int = DEFAULT_TTL,
    max_ttl: int = DEFAULT_TTL,
    revocations_file: Path | None = None,
    revocations: Revocations | None = None,
    clock: Callable[[], float] = time.time,
    third_party: ThirdPartyMint | None = None,
) -> TokenApiContext:
    """A context of fixed values: a node alone, as before the fleet (and the tests)."""
    return TokenApiContext(
        keys=lambda: keys,
        secret=lambda: turn_secret,
        uris=static_uris(ice_urls),
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        revoke=None if revocations_file is None else file_revocation_writer(revocations_file),
        revocations=Revocations() if revocations is None else revocations,
        clock=clock,
        third_party=third_party,
    )


def token_routes(context: TokenApiContext) -> list[Route]:
    """The token API's routes, bound to `context`."""

    def route(
        path: str,
        handler: Callable[[TokenApiContext, Request], Awaitable[Response]],
        methods: list[str],
    ) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(context, request)
            except ApiError as exc:
                return refusal(request, exc)

        return Route(path, endpoint, methods=methods)

    return [
        route(NTS_PATH, nts_token, ["POST"]),
        route("/v1/ice-servers", ice_servers, ["GET"]),
        route("/v1/turn-credentials", turn_credentials, ["GET", "POST"]),
        route("/v1/revocations", revocations, ["POST"]),
        route("/v1/access-tokens", access_tokens, ["POST"]),
        route("/v1/iceconfig", iceconfig, ["POST"]),
        route("/v1alpha/iceconfig", iceconfig, ["POST"]),
    ]


# --- credentials --------------------------------------------------------------------


def turn_credential(secret: str, identity: str, expiry: int) -> tuple[str, str]:
    """(username, password) of the TURN REST API for `identity` until `expiry`."""
    credential = rest_credential(secret, identity, expiry)
    return credential.username, credential.password


def _is_turn(url: str) -> bool:
    return url.startswith(("turn:", "turns:"))


def rtc_ice_servers(urls: tuple[str, ...], username: str, password: str) -> list[dict[str, Any]]:
    """RTCIceServer entries: the STUN URIs without, the TURN URIs with the credential."""
    servers: list[dict[str, Any]] = []
    stun = [u for u in urls if not _is_turn(u)]
    turn = [u for u in urls if _is_turn(u)]
    if stun:
        servers.append({"urls": stun})
    if turn:
        servers.append({"urls": turn, "username": username, "credential": password})
    return servers


def _refuse_revoked(context: TokenApiContext, identity: str, now: float) -> None:
    if context.revocations.is_revoked(identity, now):
        raise ApiError(403, "revoked", "the identity is revoked")


def _ttl(raw: str | None, context: TokenApiContext) -> int:
    if raw is None or raw == "":
        return context.default_ttl
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= context.max_ttl:
        raise ApiError(400, "bad_ttl", f"Ttl must be an integer from 1 to {context.max_ttl}")
    return int(raw)


def _rfc2822(unix: float) -> str:
    # As Twilio writes it: "Thu, 01 Jan 2026 00:00:00 +0000".
    return email.utils.format_datetime(dt.datetime.fromtimestamp(int(unix), dt.UTC))


# --- handlers -----------------------------------------------------------------------


async def nts_token(context: TokenApiContext, request: Request) -> Response:
    """Twilio NTS `POST /2010-04-01/Accounts/{AccountSid}/Tokens.json`."""
    now = context.clock()
    key = basic_key(context.keys(), request, now)
    if request.path_params["account_sid"] != key.account:
        raise ApiError(403, "wrong_account", f"the API key {key.sid} is not of this account")
    ttl = _ttl((await read_form(request)).get("Ttl"), context)
    _refuse_revoked(context, key.sid, now)
    urls = await context.uris(request)
    username, password = turn_credential(context.secret(), key.sid, int(now) + ttl)
    servers = []
    for url in urls:
        entry: dict[str, str] = {"url": url, "urls": url}
        if _is_turn(url):
            entry |= {"username": username, "credential": password}
        servers.append(entry)
    log.info("token api: NTS token for %s, ttl %d", key.sid, ttl)
    date = _rfc2822(now)
    body = {
        "account_sid": key.account,
        "date_created": date,
        "date_updated": date,
        "ice_servers": servers,
        "password": password,
        "ttl": str(ttl),
        "username": username,
    }
    return JSONResponse(body, status_code=201)


def _bearer_expiry(context: TokenApiContext, token: VerifiedToken, now: float) -> int:
    # Never past the token: floor, so a credential cannot outlive it by a fraction.
    expiry = min(int(now) + context.max_ttl, math.floor(token.expires_at))
    if expiry <= now:  # within the verification leeway, but nothing left to hand out
        raise ApiError(401, "expired", "the token expires now", BEARER_CHALLENGE)
    return expiry


async def ice_servers(context: TokenApiContext, request: Request) -> Response:
    """`GET /v1/ice-servers`: an RTCConfiguration for the bearer token's identity."""
    now = context.clock()
    token = bearer_token(context.keys(), context.revocations.is_revoked, request, now)
    policy = _policy(request.query_params.get("policy", "all"))
    expiry = _bearer_expiry(context, token, now)
    urls = await context.uris(request)
    username, password = turn_credential(context.secret(), token.identity, expiry)
    body: dict[str, Any] = {"iceServers": rtc_ice_servers(urls, username, password)}
    if policy == "relay":
        body["iceTransportPolicy"] = "relay"
    # Identities go in `extra`, where trelay.ops.logs hides them unless usernames may be logged.
    log.info("token api: ice servers minted", extra={"identity": token.identity, "until": expiry})
    return JSONResponse(body)


async def turn_credentials(context: TokenApiContext, request: Request) -> Response:
    """The TURN REST API draft's `?service=turn&username=...` answer."""
    now = context.clock()
    params = dict(request.query_params)
    if request.method == "POST":
        params |= await read_form(request)
    if params.get("service") != "turn":
        raise ApiError(400, "bad_service", "service=turn is required")
    scheme = (authorization(request) or ("", ""))[0]
    requested = params.get("username")
    if scheme == "bearer":
        token = bearer_token(context.keys(), context.revocations.is_revoked, request, now)
        if requested not in {None, "", token.identity}:
            raise ApiError(403, "identity_mismatch", "username is not the token's identity")
        identity, expiry = token.identity, _bearer_expiry(context, token, now)
    else:
        key = basic_key(context.keys(), request, now)
        identity = requested or key.sid
        try:
            check_identity(identity)
        except ValueError as exc:
            raise ApiError(400, "bad_username", str(exc)) from None
        _refuse_revoked(context, identity, now)
        expiry = int(now) + _ttl(params.get("ttl"), context)
    uris = [u for u in await context.uris(request) if _is_turn(u)]
    username, password = turn_credential(context.secret(), identity, expiry)
    body = {"username": username, "password": password, "ttl": max(0, expiry - int(now))}
    return JSONResponse(body | {"uris": uris})


async def access_tokens(context: TokenApiContext, request: Request) -> Response:
    """`POST /v1/access-tokens`: an RFC 7635 ACCESS-TOKEN for a non-browser TURN client.

    201 {kid, access_token, mac_key (both base64), lifetime, server_name, uris, identity}.
    The client sends USERNAME = kid, ACCESS-TOKEN = the token, and signs with mac_key
    (RFC 7635 §5). The lifetime is the configured one, and never past a Bearer token's
    `exp`.

    Revocation: the token format has no room for a user. Its encrypted block holds only
    mac_key, timestamp and lifetime (RFC 7635 §6.2) and USERNAME is the kid, so a node
    cannot tell whose token it checks. Revoking the caller's identity (say "alice") stops
    this route minting more for her, but the tokens she already holds stay valid on the
    nodes until their lifetime ends; keep the lifetime short. Nodes refuse, for Allocate
    and Refresh (`trelay.turn.auth`), either the kid, which refuses every token under it
    (every user of that key), or one token's own identity `<kid>#<fingerprint of its
    mac_key>` (`trelay.turn.third_party.token_identity`, the identity quotas count), returned
    here as `identity` so the back-end can revoke exactly that token through
    `/v1/revocations`. Revoking per user on the nodes would need one kid per user.
    """
    now = context.clock()
    identity, not_after = _caller(context, request, now)
    mint = context.third_party
    if mint is None:
        raise ApiError(404, "not_configured", "this node mints no RFC 7635 access tokens")
    _refuse_revoked(context, mint.kid, now)  # nodes would refuse every token under it
    lifetime = mint.lifetime
    if not_after is not None:
        # Floor: the token's timestamp is `now`, so it expires no later than the Bearer.
        lifetime = min(lifetime, math.floor(not_after - now))
    if lifetime <= 0:  # within the verification leeway, but nothing left to hand out
        raise ApiError(401, "expired", "the token expires now", BEARER_CHALLENGE)
    uris = [u for u in await context.uris(request) if _is_turn(u)]
    token, mac_key = mint.mint(lifetime, now)
    log.info(
        "token api: RFC 7635 token minted",
        extra={"kid": mint.kid, "identity": identity, "lifetime": lifetime},
    )
    body = {
        "kid": mint.kid,
        "access_token": base64.b64encode(token).decode("ascii"),
        "mac_key": base64.b64encode(mac_key).decode("ascii"),
        "lifetime": lifetime,
        "server_name": mint.server_name,
        "uris": uris,
        "identity": token_identity(mint.kid, mac_key),
    }
    return JSONResponse(body, status_code=201)


async def iceconfig(context: TokenApiContext, request: Request) -> Response:
    """`POST /v1/iceconfig`: Google's Network Traversal answer, as AppRTC's client parses it.

    200 {"lifetimeDuration": "<seconds>s" (a protobuf Duration in JSON), "iceServers":
    [RTCIceServer...], "iceTransportPolicy": "all" | "relay"}. A Bearer token's identity
    (its credential expiring no later than the token) or a Basic key's SID (for
    `api.default_ttl`); the body may be empty, or a JSON object whose `policy` may say
    "relay" (as may `?policy=relay`); other fields are ignored, as Google's API does.
    """
    now = context.clock()
    identity, not_after = _caller(context, request, now)
    raw = await read_body(request)
    policy = request.query_params.get("policy")
    if raw.strip():
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ApiError(400, "malformed_body", "the body is not JSON") from None
        if not isinstance(document, dict):
            raise ApiError(400, "malformed_body", "expected a JSON object")
        given = document.get("policy")
        if given is not None:
            policy = given if isinstance(given, str) else ""
    policy = _policy("all" if policy is None else policy)
    if not_after is None:
        expiry = int(now) + context.default_ttl
    else:
        expiry = min(int(now) + context.max_ttl, math.floor(not_after))
        if expiry <= now:
            raise ApiError(401, "expired", "the token expires now", BEARER_CHALLENGE)
    urls = await context.uris(request)
    username, password = turn_credential(context.secret(), identity, expiry)
    body = {
        "lifetimeDuration": f"{expiry - int(now)}s",
        "iceServers": rtc_ice_servers(urls, username, password),
        "iceTransportPolicy": policy,
    }
    log.info("token api: iceconfig minted", extra={"identity": identity, "until": expiry})
    return JSONResponse(body)


def _policy(value: str) -> str:
    if value not in {"all", "relay"}:
        raise ApiError(400, "bad_policy", "policy must be 'all' or 'relay'")
    return value


def _caller(context: TokenApiContext, request: Request, now: float) -> tuple[str, float | None]:
    """Who asks, and when their Bearer token expires (None for an API key)."""
    if (authorization(request) or ("", ""))[0] == "bearer":
        token = bearer_token(context.keys(), context.revocations.is_revoked, request, now)
        return token.identity, token.expires_at
    key = basic_key(context.keys(), request, now)
    _refuse_revoked(context, key.sid, now)
    return key.sid, None


async def revocations(context: TokenApiContext, request: Request) -> Response:
    """`POST /v1/revocations` {identity, until | ttl}: refuse the identity until then."""
    now = context.clock()
    key = basic_key(context.keys(), request, now)
    if context.revoke is None:
        raise ApiError(404, "not_configured", "this node has no revocations file")
    try:
        document = json.loads(await read_body(request))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "malformed_body", "the body is not JSON") from None
    until = _revocation_until(document, now)
    identity = document["identity"]
    try:
        entry = await context.revoke(identity, until, now)
    except ValueError as exc:
        raise ApiError(400, "malformed_body", str(exc)) from None
    context.revocations.add(entry)
    log.info(
        "token api: revoked", extra={"sid": key.sid, "identity": identity, "until": entry.until}
    )
    until_text = dt.datetime.fromtimestamp(entry.until, dt.UTC).isoformat()
    body = {"identity": identity, "until": int(entry.until), "until_rfc3339": until_text}
    return JSONResponse(body, status_code=201)


def _revocation_until(document: object, now: float) -> float:
    if not isinstance(document, dict):
        raise ApiError(400, "malformed_body", "expected a JSON object")
    identity = document.get("identity")
    if not isinstance(identity, str) or not identity:
        raise ApiError(400, "malformed_body", "identity must be a non-empty string")
    if ("until" in document) == ("ttl" in document):
        raise ApiError(400, "malformed_body", "give exactly one of until and ttl")
    if "ttl" in document:
        ttl = document["ttl"]
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise ApiError(400, "malformed_body", "ttl must be a positive integer (seconds)")
        until = now + ttl
    else:
        try:
            until = parse_until(document["until"])
        except ValueError as exc:
            raise ApiError(400, "malformed_body", str(exc)) from None
    if not now < until <= now + MAX_REVOCATION_SECONDS:
        raise ApiError(400, "malformed_body", "until must be in the future (at most 10 years)")
    return until
