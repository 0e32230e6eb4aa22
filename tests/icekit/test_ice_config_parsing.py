"""The shim's URI and ICE configuration parsing, and which TURN server it chooses.

RFC 7064 §3.1 (stun:, stuns:), RFC 7065 §3.1 (turn:, turns: with ?transport=), W3C
RTCIceServer (`urls` a string or a list), Twilio NTS tokens, TURN REST API answers.
"""

from __future__ import annotations

import re

import aioice
import pytest
from aiortc import RTCIceTransportPolicy

from trelay.icekit.ice_shim import (
    IceServerEntry,
    IceUri,
    choose_turn_server,
    ice_connection,
    parse_ice_servers,
    parse_ice_uri,
    rtc_configuration,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("stun:stun.example.org", IceUri("stun", "stun.example.org", 3478)),
        ("stun:192.0.2.1:19302", IceUri("stun", "192.0.2.1", 19302)),
        ("stuns:stun.example.org", IceUri("stuns", "stun.example.org", 5349)),
        ("stun:[2001:db8::1]", IceUri("stun", "2001:db8::1", 3478)),
        ("stun:[2001:db8::1]:3479", IceUri("stun", "2001:db8::1", 3479)),
        ("turn:turn.example.org", IceUri("turn", "turn.example.org", 3478, "udp")),
        ("turns:turn.example.org", IceUri("turns", "turn.example.org", 5349, "tcp")),
        ("turn:192.0.2.1:3479?transport=tcp", IceUri("turn", "192.0.2.1", 3479, "tcp")),
        ("turn:192.0.2.1?transport=udp", IceUri("turn", "192.0.2.1", 3478, "udp")),
        ("turns:[::1]:443?transport=tcp", IceUri("turns", "::1", 443, "tcp")),
        ("turns:[::1]?transport=udp", IceUri("turns", "::1", 5349, "udp")),
        ("TURN:Example.org:80?TRANSPORT=TCP", IceUri("turn", "Example.org", 80, "tcp")),
    ],
)
def test_parse_ice_uri(uri: str, expected: IceUri) -> None:
    assert parse_ice_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "transport"),
    [
        ("turn:h?transport=udp", "udp"),
        ("turn:h?transport=tcp", "tcp"),
        ("turns:h?transport=tcp", "tls"),
        ("turns:h?transport=udp", "dtls"),
        ("stun:h", "udp"),
        ("stuns:h", "tls"),
    ],
)
def test_client_transport(uri: str, transport: str) -> None:
    assert parse_ice_uri(uri).client_transport == transport


@pytest.mark.parametrize(
    "uri",
    ["turn:h:3478?transport=tcp", "turns:[2001:db8::1]:5349?transport=tcp", "stun:h:3478"],
)
def test_uri_round_trip(uri: str) -> None:
    assert str(parse_ice_uri(uri)) == uri
    assert parse_ice_uri(str(parse_ice_uri(uri))) == parse_ice_uri(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.org", "scheme must be stun:, stuns:, turn: or turns:"),
        ("example.org:3478", "scheme must be"),
        ("", "scheme must be"),
        ("turn://example.org", "no '//' after the scheme"),
        ("turn:user:pass@example.org", "credentials go in username/credential"),
        ("stun:example.org?transport=udp", "takes no query (RFC 7064"),
        ("turn:example.org?transport=sctp", "?transport=udp or ?transport=tcp"),
        ("turn:example.org?proto=udp", "?transport=udp or ?transport=tcp"),
        ("turn:2001:db8::1:3478", "must be in brackets, as [2001:db8::1:3478]"),
        ("turn:[2001:db8::1:3478", "needs its closing ']'"),
        ("turn:[example.org]:3478", "is not an IPv6 address"),
        ("turn:[::1]3478", "unexpected '3478' after the IPv6 address"),
        ("turn:example.org:0", "port must be a number from 1 to 65535"),
        ("turn:example.org:65536", "port must be a number from 1 to 65535"),
        ("turn:example.org:34a", "port must be a number from 1 to 65535"),
        ("turn:example.org:", "port must be a number from 1 to 65535"),
        ("turn::3478", "'' is not a host name or IPv4 address"),
        ("turn:exa mple.org", "is not a host name or IPv4 address"),
    ],
)
def test_bad_uris_say_what_is_wrong(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_ice_uri(uri)


def test_bad_uri_message_quotes_the_uri() -> None:
    with pytest.raises(ValueError) as raised:
        parse_ice_uri("turn:example.org:99999")
    assert str(raised.value).startswith("'turn:example.org:99999': ")


RTC_CONFIGURATION = {
    "iceServers": [
        {"urls": "stun:stun.example.org"},
        {
            "urls": [
                "turns:turn.example.org:443?transport=tcp",
                "turn:turn.example.org:3478?transport=tcp",
                "turn:turn.example.org:3478?transport=udp",
            ],
            "username": "user",
            "credential": "pass",
        },
    ],
    "iceTransportPolicy": "all",
}

TWILIO_TOKEN = {
    "username": "dc2d2894d5a9023620c467b0e71cfa6a35457e6679785ed6ae9856fe5bdfa269",
    "password": "tE2DajzSJwnsSbc123",
    "ttl": "86400",
    "ice_servers": [
        {"url": "stun:global.stun.twilio.com:3478", "urls": "stun:global.stun.twilio.com:3478"},
        {
            "url": "turn:global.turn.twilio.com:3478?transport=udp",
            "urls": "turn:global.turn.twilio.com:3478?transport=udp",
            "username": "dc2d2894d5a9023620c467b0e71cfa6a35457e6679785ed6ae9856fe5bdfa269",
            "credential": "tE2DajzSJwnsSbc123",
        },
        {
            "urls": "turn:global.turn.twilio.com:443?transport=tcp",
            "username": "dc2d2894d5a9023620c467b0e71cfa6a35457e6679785ed6ae9856fe5bdfa269",
            "credential": "tE2DajzSJwnsSbc123",
        },
    ],
}

TURN_REST_ANSWER = {
    "username": "1700000000:alice",
    "password": "base64hmac=",
    "ttl": 86400,
    "uris": ["turn:192.0.2.7:3478?transport=udp", "turn:192.0.2.7:3478?transport=tcp"],
}


def test_rtc_configuration_shape() -> None:
    servers = parse_ice_servers(RTC_CONFIGURATION)
    assert servers[0] == IceServerEntry((IceUri("stun", "stun.example.org", 3478),))
    assert [str(uri) for uri in servers[1].uris] == [
        "turns:turn.example.org:443?transport=tcp",
        "turn:turn.example.org:3478?transport=tcp",
        "turn:turn.example.org:3478?transport=udp",
    ]
    assert (servers[1].username, servers[1].credential) == ("user", "pass")
    assert "pass" not in repr(servers[1])


def test_twilio_token_shape_url_and_urls_counted_once() -> None:
    servers = parse_ice_servers(TWILIO_TOKEN)
    assert [len(server.uris) for server in servers] == [1, 1, 1]
    assert servers[1].uris == (IceUri("turn", "global.turn.twilio.com", 3478, "udp"),)
    assert servers[2].uris == (IceUri("turn", "global.turn.twilio.com", 443, "tcp"),)
    assert servers[2].credential == "tE2DajzSJwnsSbc123"


def test_turn_rest_answer_shape_shares_one_credential() -> None:
    (server,) = parse_ice_servers(TURN_REST_ANSWER)
    assert [uri.client_transport for uri in server.uris] == ["udp", "tcp"]
    assert (server.username, server.credential) == ("1700000000:alice", "base64hmac=")


def test_bare_list_shape() -> None:
    servers = parse_ice_servers([{"urls": ["stun:a", "stun:b:1"]}])
    assert servers == (IceServerEntry((IceUri("stun", "a", 3478), IceUri("stun", "b", 1))),)


def test_to_json_is_an_rtc_ice_server() -> None:
    (server,) = parse_ice_servers(TURN_REST_ANSWER)
    assert server.to_json() == {
        "urls": TURN_REST_ANSWER["uris"],
        "username": "1700000000:alice",
        "credential": "base64hmac=",
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"servers": []}, "needs 'iceServers' \\(RTCConfiguration\\), 'ice_servers'"),
        ("turn:example.org", "a mapping or a list, not str"),
        (42, "a mapping or a list, not int"),
        ({"iceServers": "stun:x"}, "iceServers: a list of ICE servers is needed"),
        ({"iceServers": ["stun:x"]}, "iceServers\\[0\\]: an ICE server is a mapping"),
        ({"iceServers": [{"username": "u"}]}, "iceServers\\[0\\]: no 'urls'"),
        ({"iceServers": [{"urls": []}]}, "iceServers\\[0\\]: no 'urls'"),
        ({"iceServers": [{"urls": 5}]}, "'urls' must be a string or a list of strings"),
        ({"ice_servers": [{"url": ["stun:x", 1]}]}, "'url' must be a string or a list"),
        ({"iceServers": [{"urls": "turn:x"}]}, "TURN URLs need a 'username' and a 'credential'"),
        ({"iceServers": [{"urls": "turn:x", "username": "u"}]}, "need a 'username' and a"),
        ({"iceServers": [{"urls": "stun:x", "username": 1}]}, "'username' must be a string"),
        ({"uris": ["turn:x"], "username": "u"}, "uris\\[0\\]: TURN URLs need a 'username'"),
        ({"iceServers": [{"urls": "stun:ok"}, {"urls": "turn://x"}]}, "no '//' after"),
    ],
)
def test_bad_configurations_say_what_is_wrong(config: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ice_servers(config)


def test_choice_prefers_udp_then_tcp_then_tls_whatever_the_order() -> None:
    servers = parse_ice_servers(RTC_CONFIGURATION)
    assert str(choose_turn_server(servers).uri) == "turn:turn.example.org:3478?transport=udp"
    tcp_first = choose_turn_server(servers, ("tcp", "udp"))
    assert str(tcp_first.uri) == "turn:turn.example.org:3478?transport=tcp"
    tls = choose_turn_server(servers, ("tls",))
    assert (str(tls.uri), tls.transport) == ("turns:turn.example.org:443?transport=tcp", "tls")
    assert (tls.username, tls.credential) == ("user", "pass")


def test_choice_takes_the_first_uri_of_the_preferred_transport() -> None:
    servers = parse_ice_servers(TWILIO_TOKEN)
    choice = choose_turn_server(servers, ("tcp",))
    assert str(choice.uri) == "turn:global.turn.twilio.com:443?transport=tcp"


def test_choice_never_takes_dtls_and_says_what_there_is() -> None:
    servers = parse_ice_servers(
        {"iceServers": [{"urls": "turns:h?transport=udp", "username": "u", "credential": "p"}]}
    )
    with pytest.raises(ValueError, match=r"no TURN server over udp/tcp/tls; .* \['dtls'\]"):
        choose_turn_server(servers)
    with pytest.raises(ValueError, match=r"\['no TURN URI'\]"):
        choose_turn_server(parse_ice_servers([{"urls": "stun:h"}]))


def test_connection_kwargs_per_transport() -> None:
    servers = parse_ice_servers(RTC_CONFIGURATION)
    udp = choose_turn_server(servers, ("udp",)).connection_kwargs()
    assert udp == {
        "turn_server": ("turn.example.org", 3478),
        "turn_username": "user",
        "turn_password": "pass",
        "turn_transport": "udp",
        "turn_ssl": False,
    }
    assert choose_turn_server(servers, ("tcp",)).connection_kwargs()["turn_transport"] == "tcp"
    tls = choose_turn_server(servers, ("tls",)).connection_kwargs()
    assert (tls["turn_transport"], tls["turn_ssl"], tls["turn_server"]) == (
        "tcp",
        True,
        ("turn.example.org", 443),
    )


def test_ice_connection_policies() -> None:
    relayed = ice_connection(RTC_CONFIGURATION, ice_controlling=True)
    assert relayed.policy == "relay"
    assert relayed.connection._transport_policy is aioice.TransportPolicy.RELAY
    assert relayed.connection.turn_server == ("turn.example.org", 3478)
    assert relayed.connection.stun_server is None  # unused when only relays are gathered
    every = ice_connection(TWILIO_TOKEN, ice_controlling=False, policy="all", prefer=("tcp",))
    assert every.connection._transport_policy is aioice.TransportPolicy.ALL
    assert every.connection.turn_server == ("global.turn.twilio.com", 443)
    assert every.connection.turn_transport == "tcp"
    assert every.connection.stun_server == ("global.stun.twilio.com", 3478)
    with pytest.raises(ValueError, match="policy must be 'relay' or 'all'"):
        ice_connection(RTC_CONFIGURATION, ice_controlling=True, policy="none")  # type: ignore[arg-type]


def test_rtc_configuration_holds_the_chosen_turn_server_first() -> None:
    configuration = rtc_configuration(TWILIO_TOKEN, "relay", ("tcp", "udp"))
    assert configuration.iceTransportPolicy is RTCIceTransportPolicy.RELAY
    servers = configuration.iceServers or []
    assert [server.urls for server in servers] == [
        "turn:global.turn.twilio.com:443?transport=tcp",
        "stun:global.stun.twilio.com:3478",
    ]
    assert servers[0].username == TWILIO_TOKEN["username"]
    assert servers[0].credential == "tE2DajzSJwnsSbc123"
    every = rtc_configuration(RTC_CONFIGURATION, "all")
    assert every.iceTransportPolicy is RTCIceTransportPolicy.ALL
