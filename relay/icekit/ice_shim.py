"""The ICE-policy client shim: aioice/aiortc agents forced through TURN, and proof they were.

Owns, for client code and tests:
- STUN and TURN URIs (RFC 7064 §3.1, RFC 7065 §3.1): `scheme ":" host [":" port]
  ["?transport=" transport]`, IPv6 literals in brackets (RFC 3986 §3.2.2), default ports
  3478 (stun, turn) and 5349 (stuns, turns), transport defaulting to udp for turn: and
  tcp for turns: (what browsers do). `parse_ice_uri` raises ValueError saying what is wrong.
- ICE server configurations in the shapes services hand out (`parse_ice_servers`): an
  RTCConfiguration (`iceServers`, W3C WebRTC §4.2.1, `urls` a string or a list), a Twilio
  Network Traversal token (`ice_servers`, entries with `url` and/or `urls`), a TURN REST
  API answer (`username`, `password`, `ttl`, `uris`; draft-uberti-behave-turn-rest-00),
  or a bare list of RTCIceServer dictionaries.
- The TURN server an agent uses (`choose_turn_server`). aioice and aiortc take ONE TURN
  server, so the shim chooses: the first transport of `prefer` (default udp, tcp, tls)
  that the configuration offers, and for it the first such URI in configuration order.
  turns: over udp (DTLS) is never chosen: aioice cannot speak it.
- aioice `Connection`s and aiortc `RTCConfiguration`s with policy "relay" (only relayed
  candidates, RFC 8445 §5.1.1.2 / W3C iceTransportPolicy) or "all".
- `assert_relayed`: after connect, every selected pair is relay on the local side and
  relay-derived on the remote side; AssertionError naming what was selected otherwise.

What is knowable about the remote side: its candidate type as signalled ("relay"), or,
for a peer-reflexive candidate learnt from a check, only its address; that address is
relay-derived when it is one of the relay's allocations (`relayed_addresses`, which the
test relay's `LoopbackRelay.relayed_addresses()` gives).

Versions relied on: aioice 0.13 (`Connection._nominated`, `turn_ssl` accepting an
`ssl.SSLContext`) and aiortc 1.16 (the chain behind `RTCPeerConnection`); the private
parts are read in `_nominated_pairs` and `_aiortc_ice_connections` only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import aioice

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

log = logging.getLogger(__name__)

Address = tuple[str, int]
Policy = Literal["relay", "all"]
Transport = Literal["udp", "tcp", "tls"]
DEFAULT_PREFERENCE: tuple[Transport, ...] = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}
CONNECT_TIMEOUT = 20.0
_URI = re.compile(r"(?P<scheme>[A-Za-z]+):(?P<rest>.*)", re.DOTALL)
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=]+")


@dataclass(frozen=True, slots=True)
class IceUri:
    """One parsed stun:, stuns:, turn: or turns: URI."""

    scheme: str  # lower case
    host: str  # without brackets
    port: int
    transport: str | None = None  # "udp" or "tcp" for TURN; None for STUN

    @property
    def is_turn(self) -> bool:
        return self.scheme in ("turn", "turns")

    @property
    def client_transport(self) -> str:
        """How a client reaches the server: "udp", "tcp", "tls" or "dtls"."""
        if self.scheme in ("stun", "turn"):
            return self.transport or "udp"
        return "tls" if (self.transport or "tcp") == "tcp" else "dtls"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?transport={self.transport}" if self.transport is not None else ""
        return f"{self.scheme}:{host}:{self.port}{query}"


def parse_ice_uri(uri: str) -> IceUri:
    """Parse a STUN (RFC 7064 §3.1) or TURN (RFC 7065 §3.1) URI; ValueError if malformed."""
    match = _URI.fullmatch(uri.strip())
    scheme = match["scheme"].lower() if match else ""
    if match is None or scheme not in DEFAULT_PORTS:
        raise ValueError(f"{uri!r}: the scheme must be stun:, stuns:, turn: or turns:")
    rest = match["rest"]
    if rest.startswith("//"):
        raise ValueError(f"{uri!r}: no '//' after the scheme (RFC 7064/7065: {scheme}:host)")
    if "@" in rest:
        raise ValueError(f"{uri!r}: credentials go in username/credential, not in the URI")
    authority, has_query, query = rest.partition("?")
    transport = None
    if has_query:
        if scheme in ("stun", "stuns"):
            raise ValueError(f"{uri!r}: a {scheme}: URI takes no query (RFC 7064 §3.1)")
        key, _, value = query.partition("=")
        if key.lower() != "transport" or value.lower() not in ("udp", "tcp"):
            raise ValueError(f"{uri!r}: the only query is ?transport=udp or ?transport=tcp")
        transport = value.lower()
    elif scheme in ("turn", "turns"):
        transport = "udp" if scheme == "turn" else "tcp"
    host, port = _split_host_port(uri, authority)
    return IceUri(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], transport)


def _split_host_port(uri: str, authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket:
            raise ValueError(f"{uri!r}: an IPv6 address needs its closing ']'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{uri!r}: {host!r} in brackets is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise ValueError(f"{uri!r}: unexpected {after!r} after the IPv6 address")
        port_text = after[1:] if after else None
    else:
        if authority.count(":") > 1:
            raise ValueError(f"{uri!r}: an IPv6 address must be in brackets, as [{authority}]")
        host, colon, port_text_ = authority.partition(":")
        port_text = port_text_ if colon else None
        if not host or not _REG_NAME.fullmatch(host):
            raise ValueError(f"{uri!r}: {host!r} is not a host name or IPv4 address")
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"{uri!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class IceServerEntry:
    """One RTCIceServer with its URIs parsed."""

    uris: tuple[IceUri, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        entry: dict[str, object] = {"urls": [str(uri) for uri in self.uris]}
        if self.username is not None:
            entry["username"] = self.username
        if self.credential is not None:
            entry["credential"] = self.credential
        return entry


def parse_ice_servers(config: object) -> tuple[IceServerEntry, ...]:
    """ICE servers from an RTCConfiguration, a Twilio token, a TURN REST answer or a list."""
    if isinstance(config, Mapping):
        if "iceServers" in config:
            return _entries(config["iceServers"], "iceServers")
        if "ice_servers" in config:  # Twilio Network Traversal Service token
            return _entries(config["ice_servers"], "ice_servers")
        if "uris" in config:  # TURN REST API answer: one credential for all URIs
            rest = {"urls": config["uris"], "credential": config.get("password")}
            rest["username"] = config.get("username")
            return _entries([rest], "uris")
        raise ValueError(
            "an ICE configuration needs 'iceServers' (RTCConfiguration), 'ice_servers' "
            f"(Twilio) or 'uris' (TURN REST API); got keys {sorted(map(str, config))}"
        )
    if isinstance(config, Sequence) and not isinstance(config, str | bytes):
        return _entries(config, "servers")
    raise ValueError(f"an ICE configuration is a mapping or a list, not {type(config).__name__}")


def _entries(servers: object, where: str) -> tuple[IceServerEntry, ...]:
    if not isinstance(servers, Sequence) or isinstance(servers, str | bytes):
        raise ValueError(f"{where}: a list of ICE servers is needed")
    return tuple(_entry(server, f"{where}[{index}]") for index, server in enumerate(servers))


def _entry(server: object, where: str) -> IceServerEntry:
    if not isinstance(server, Mapping):
        raise ValueError(f"{where}: an ICE server is a mapping with 'urls'")
    urls: list[str] = []
    for key in ("urls", "url"):  # Twilio gives both, with the same URL(s)
        value = server.get(key)
        found = [value] if isinstance(value, str) else value
        if value is None:
            continue
        if not isinstance(found, list | tuple) or not all(isinstance(u, str) for u in found):
            raise ValueError(f"{where}: '{key}' must be a string or a list of strings")
        urls += [u for u in found if u not in urls]
    if not urls:
        raise ValueError(f"{where}: no 'urls'")
    username, credential = server.get("username"), server.get("credential")
    for name, value in (("username", username), ("credential", credential)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: '{name}' must be a string")
    uris = tuple(parse_ice_uri(url) for url in urls)
    if any(uri.is_turn for uri in uris) and (username is None or credential is None):
        # W3C WebRTC §4.2.1 step "If scheme is turn or turns": InvalidAccessError.
        raise ValueError(f"{where}: TURN URLs need a 'username' and a 'credential'")
    return IceServerEntry(uris, username, credential)


@dataclass(frozen=True, slots=True)
class TurnChoice:
    """The TURN server an agent was given, and with which credential."""

    uri: IceUri
    username: str
    credential: str = field(repr=False)

    @property
    def transport(self) -> str:
        return self.uri.client_transport

    def connection_kwargs(self, ssl_context: ssl.SSLContext | None = None) -> dict[str, Any]:
        """aioice `Connection` arguments; turns: uses `ssl_context` (default trust otherwise)."""
        secure = self.uri.scheme == "turns"
        return {
            "turn_server": (self.uri.host, self.uri.port),
            "turn_username": self.username,
            "turn_password": self.credential,
            "turn_transport": "udp" if self.transport == "udp" else "tcp",
            # aioice 0.13 hands turn_ssl to loop.create_connection(ssl=...): a context works.
            "turn_ssl": (ssl_context or True) if secure else False,
        }


def choose_turn_server(
    servers: Iterable[IceServerEntry], prefer: Sequence[Transport] = DEFAULT_PREFERENCE
) -> TurnChoice:
    """The first transport of `prefer` offered, then the first such URI in config order."""
    offered = [(uri, server) for server in servers for uri in server.uris if uri.is_turn]
    for transport in prefer:
        for uri, server in offered:
            if uri.client_transport == transport:
                assert server.username is not None and server.credential is not None
                return TurnChoice(uri, server.username, server.credential)
    have = sorted({uri.client_transport for uri, _ in offered}) or ["no TURN URI"]
    raise ValueError(f"no TURN server over {'/'.join(prefer)}; the configuration has {have}")


def _first_stun(servers: Iterable[IceServerEntry]) -> IceUri | None:
    stun = [uri for server in servers for uri in server.uris if uri.scheme == "stun"]
    return stun[0] if stun else None


@dataclass(frozen=True, slots=True)
class ShimmedConnection:
    """An aioice agent built by the shim, with the TURN server it was given."""

    connection: aioice.Connection
    turn: TurnChoice
    policy: Policy


def _transport_policy(policy: Policy) -> Any:
    if policy not in ("relay", "all"):
        raise ValueError(f"policy must be 'relay' or 'all', not {policy!r}")
    return aioice.TransportPolicy.RELAY if policy == "relay" else aioice.TransportPolicy.ALL


def ice_connection(
    config: object,
    *,
    ice_controlling: bool,
    policy: Policy = "relay",
    prefer: Sequence[Transport] = DEFAULT_PREFERENCE,
    ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> ShimmedConnection:
    """An aioice `Connection` for `config` (any shape `parse_ice_servers` takes).

    `options` go to `aioice.Connection` as they are (components, use_ipv6, ...).
    """
    servers = parse_ice_servers(config)
    turn = choose_turn_server(servers, prefer)
    kwargs = turn.connection_kwargs(ssl_context)
    stun = _first_stun(servers)
    if stun is not None and policy == "all":
        kwargs["stun_server"] = (stun.host, stun.port)
    log.info("aioice agent: TURN %s (%s), policy %s", turn.uri, turn.transport, policy)
    connection = aioice.Connection(
        ice_controlling=ice_controlling,
        transport_policy=_transport_policy(policy),
        **kwargs,
        **options,
    )
    return ShimmedConnection(connection, turn, policy)


def rtc_configuration(
    config: object, policy: Policy = "relay", prefer: Sequence[Transport] = DEFAULT_PREFERENCE
) -> RTCConfiguration:
    """An aiortc `RTCConfiguration` holding the chosen TURN server (and the first STUN one).

    aiortc 1.16 uses one TURN URL (turn: over udp/tcp, turns: over tcp) and cannot parse
    bracketed IPv6 hosts, so only the chosen TURN URL and one stun: URL are passed on.
    """
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy  # noqa: PLC0415

    _transport_policy(policy)
    servers = parse_ice_servers(config)
    turn = choose_turn_server(servers, prefer)
    ice = [RTCIceServer(urls=str(turn.uri), username=turn.username, credential=turn.credential)]
    stun = _first_stun(servers)
    if stun is not None and ":" not in stun.host:
        ice.append(RTCIceServer(urls=str(stun)))
    relay = RTCIceTransportPolicy.RELAY if policy == "relay" else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=ice, iceTransportPolicy=relay)


async def connect_pair(
    left: aioice.Connection, right: aioice.Connection, limit: float = CONNECT_TIMEOUT
) -> None:
    """Gather, exchange candidates and ICE credentials in-process, connect both agents.

    The whole exchange is bounded by `limit` seconds (TimeoutError past it).
    """
    async with asyncio.timeout(limit):
        await asyncio.gather(left.gather_candidates(), right.gather_candidates())
        for a, b in ((left, right), (right, left)):
            for candidate in a.local_candidates:
                await b.add_remote_candidate(candidate)
            await b.add_remote_candidate(None)
            b.remote_username = a.local_username
            b.remote_password = a.local_password
        await asyncio.gather(left.connect(), right.connect())


@dataclass(frozen=True, slots=True)
class SelectedPair:
    """The candidate pair an agent selected (nominated) for one component."""

    component: int
    local_type: str
    local_address: Address
    remote_type: str
    remote_address: Address

    def __str__(self) -> str:
        local = f"{self.local_address[0]}:{self.local_address[1]}"
        remote = f"{self.remote_address[0]}:{self.remote_address[1]}"
        return (
            f"component {self.component}: local {self.local_type} {local}"
            f" -> remote {self.remote_type} {remote}"
        )


def _nominated_pairs(connection: aioice.Connection) -> list[SelectedPair]:
    # aioice 0.13 keeps the nominated pair per component in the private `_nominated`
    # dict (no public accessor); a pair's local candidate is its protocol's.
    nominated: dict[int, Any] = connection._nominated
    return [
        SelectedPair(
            component,
            str(pair.local_candidate.type),
            (str(pair.local_candidate.host), int(pair.local_candidate.port)),
            str(pair.remote_candidate.type),
            (str(pair.remote_addr[0]), int(pair.remote_addr[1])),
        )
        for component, pair in sorted(nominated.items())
    ]


def _aiortc_ice_connections(peer: Any) -> list[aioice.Connection]:
    # aiortc 1.16: RTCPeerConnection.sctp (RTCSctpTransport) and each transceiver's
    # sender.transport are RTCDtlsTransports; their .transport is an RTCIceTransport
    # whose private `_connection` is the aioice agent. With BUNDLE they share one.
    dtls = [] if peer.sctp is None else [peer.sctp.transport]
    dtls += [t.sender.transport for t in peer.getTransceivers() if t.sender.transport]
    found: list[aioice.Connection] = []
    for transport in dtls:
        connection = transport.transport._connection
        if all(connection is not seen for seen in found):
            found.append(connection)
    return found


def selected_pairs(target: object) -> tuple[SelectedPair, ...]:
    """The selected pairs of an aioice `Connection` or an aiortc `RTCPeerConnection`."""
    if isinstance(target, aioice.Connection):
        return tuple(_nominated_pairs(target))
    if hasattr(target, "getTransceivers") and hasattr(target, "sctp"):
        return tuple(p for c in _aiortc_ice_connections(target) for p in _nominated_pairs(c))
    raise TypeError(f"not an aioice Connection or aiortc RTCPeerConnection: {target!r}")


def assert_relayed(
    target: object, relayed_addresses: Iterable[Address] = ()
) -> tuple[SelectedPair, ...]:
    """Assert that every selected pair of `target` goes through a TURN relay; return them.

    Local side: a relay candidate. Remote side: a relay candidate, or (peer-reflexive
    candidates carry only an address) an address in `relayed_addresses`.
    """
    relayed = set(relayed_addresses)
    pairs = selected_pairs(target)
    if not pairs:
        raise AssertionError(
            "no selected candidate pair: connect() has not succeeded or the agent is closed"
        )
    wrong = [
        pair
        for pair in pairs
        if pair.local_type != "relay"
        or (pair.remote_type != "relay" and pair.remote_address not in relayed)
    ]
    if wrong:
        selected = "; ".join(str(pair) for pair in wrong)
        known = f" or one of the relay's allocations {sorted(relayed)}" if relayed else ""
        raise AssertionError(
            f"the call is not relayed: selected {selected}; "
            f"wanted local relay -> remote relay{known}"
        )
    return pairs
