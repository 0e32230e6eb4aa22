"""`trelay serve`: flags and their errors, the ready line and iceServers, signals.

The process tests run the installed console script (`.venv/bin/trelay`) on loopback
port 0 and read its ready line; every wait has a timeout.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio

from tests.helpers.netutil import ipv6_loopback_works
from tests.helpers.trelay_process import (
    TIMEOUT,
    allocate_with,
    running_trelay,
    stop,
    trelay_command,
)
from trelay.credentials.ice_config import (
    IceServer,
    TurnCredential,
    browser_ice_servers,
    format_ice_servers,
    ice_servers,
    ice_servers_json,
    rest_credential,
    stun_uri,
    turn_uri,
)
from trelay.node.listeners import BoundAddresses
from trelay.process.cli import main, usage_error
from trelay.process.ready import ready_event
from trelay.stun.address_attributes import XorMappedAddress
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id

# --- iceServers and the ready line -------------------------------------------------------


def test_stun_and_turn_uris() -> None:
    assert stun_uri(False, "127.0.0.1", 3478) == "stun:127.0.0.1:3478"
    assert stun_uri(True, "::1", 5349) == "stuns:[::1]:5349"
    assert turn_uri(False, "192.0.2.1", 3478, "udp") == "turn:192.0.2.1:3478?transport=udp"
    assert turn_uri(True, "2001:db8::1", 443, "tcp") == "turns:[2001:db8::1]:443?transport=tcp"
    # A wildcard listener is advertised on loopback, the one address known to reach it.
    assert stun_uri(False, "0.0.0.0", 1) == "stun:127.0.0.1:1"
    assert stun_uri(False, "::", 1) == "stun:[::1]:1"


BOUND = BoundAddresses(
    udp=(("127.0.0.1", 40000), ("::1", 40002)),
    tcp=(("127.0.0.1", 40000),),
    tls=(("127.0.0.1", 40001),),
)


def test_ice_servers_without_credentials_are_stun_only() -> None:
    assert ice_servers_json(ice_servers(BOUND)) == [
        {"urls": ["stun:127.0.0.1:40000", "stun:[::1]:40002", "stuns:127.0.0.1:40001"]}
    ]
    assert ice_servers(BoundAddresses(tcp=(("127.0.0.1", 1),))) == ()


def test_ice_servers_with_a_credential_add_one_turn_entry() -> None:
    servers = ice_servers(BOUND, TurnCredential("1700000000:alice", "c2VjcmV0"))
    assert ice_servers_json(servers)[1] == {
        "urls": [
            "turn:127.0.0.1:40000?transport=udp",
            "turn:[::1]:40002?transport=udp",
            "turn:127.0.0.1:40000?transport=tcp",
            "turns:127.0.0.1:40001?transport=tcp",
        ],
        "username": "1700000000:alice",
        "credential": "c2VjcmV0",
    }
    assert "c2VjcmV0" not in repr(servers)
    assert "c2VjcmV0" not in repr(TurnCredential("u", "c2VjcmV0"))


def test_browser_ice_servers_leave_out_what_a_browser_cannot_use() -> None:
    credential = TurnCredential("1700000000:alice", "c2VjcmV0")
    untrusted = ice_servers_json(browser_ice_servers(BOUND, credential, trusted_tls=False))
    # No stuns: (browsers send STUN over UDP only), no turns: to a certificate the
    # browser will refuse: Chromium's gathering would wait on each of them.
    assert untrusted == [
        {"urls": ["stun:127.0.0.1:40000", "stun:[::1]:40002"]},
        {
            "urls": [
                "turn:127.0.0.1:40000?transport=udp",
                "turn:[::1]:40002?transport=udp",
                "turn:127.0.0.1:40000?transport=tcp",
            ],
            "username": "1700000000:alice",
            "credential": "c2VjcmV0",
        },
    ]
    trusted = ice_servers_json(browser_ice_servers(BOUND, credential, trusted_tls=True))
    assert trusted[0] == untrusted[0]
    assert trusted[1]["urls"] == [
        "turn:127.0.0.1:40000?transport=udp",
        "turn:[::1]:40002?transport=udp",
        "turn:127.0.0.1:40000?transport=tcp",
        "turns:127.0.0.1:40001?transport=tcp",  # a configured certificate: trusted
    ]
    assert browser_ice_servers(BOUND, None, trusted_tls=True) == (
        IceServer(("stun:127.0.0.1:40000", "stun:[::1]:40002")),
    )


def test_the_paste_block_is_the_same_json() -> None:
    servers = (IceServer(("stun:127.0.0.1:1",)),)
    block = format_ice_servers(servers)
    assert block.startswith("iceServers: ")
    assert json.loads(block.removeprefix("iceServers: ")) == ice_servers_json(servers)


def test_ready_event() -> None:
    event = ready_event(BOUND)
    assert event == {
        "event": "ready",
        "udp": ["127.0.0.1:40000", "[::1]:40002"],
        "tcp": ["127.0.0.1:40000"],
        "tls": ["127.0.0.1:40001"],
        "ice_servers": ice_servers_json(ice_servers(BOUND)),
    }
    assert json.loads(json.dumps(event)) == event


# --- flag errors, in process --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["serve", "--listen-udp", "x"], "trelay: --listen-udp: expected host:port, got 'x'"),
        (["serve", "--bogus"], "trelay: --bogus: unknown flag"),
        (["serve", "--listen-tcp"], "trelay: --listen-tcp: expected one argument"),
        (["serve", "extra"], "trelay: extra: unexpected"),
        ([], "trelay: command: required"),
        (
            ["frob"],
            "trelay: command: invalid choice: 'frob' (choose from 'serve', 'keys', 'token'",
        ),
        (["serve", "--log-level", "loud"], "trelay: --log-level: expected one of"),
        (["serve", "--config", "/nonexistent/trelay.toml"], "trelay: --config: file not found"),
    ],
)
def test_a_bad_flag_is_one_line_and_status_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(line)


def test_usage_error_falls_back_to_a_generic_key() -> None:
    error = usage_error("something odd")
    assert (error.key, error.problem) == ("arguments", "something odd")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    assert "--listen-udp" in capsys.readouterr().out


# --- the real process (tests/helpers/trelay_process.py starts it) ------------------------------


async def test_serve_prints_ready_answers_binding_and_stops_on_sigterm(tmp_path: Path) -> None:
    async with running_trelay(tmp_path) as running:
        assert running.ready["event"] == "ready"
        [udp] = running.addresses("udp")
        [tcp] = running.addresses("tcp")
        [tls] = running.addresses("tls")
        assert udp[0] == tcp[0] == tls[0] == "127.0.0.1"
        assert udp[1] and tcp[1] and tls[1]
        servers = running.ready["ice_servers"]
        assert isinstance(servers, list)
        stun_entry, turn_entry = servers
        assert stun_entry == {"urls": [f"stun:127.0.0.1:{udp[1]}", f"stuns:127.0.0.1:{tls[1]}"]}
        assert turn_entry["urls"] == [
            f"turn:127.0.0.1:{udp[1]}?transport=udp",
            f"turn:127.0.0.1:{tcp[1]}?transport=tcp",
            f"turns:127.0.0.1:{tls[1]}?transport=tcp",
        ]
        # The printed dev credential really allocates (TURN REST form, generated secret).
        await allocate_with(udp, turn_entry["username"], turn_entry["credential"])
        # stderr was complete when the ready line came: the block to paste into a
        # browser has what Chromium uses as-is, no stuns: and no turns: to the
        # self-signed certificate, and says where TLS is instead.
        stderr = running.stderr_path.read_text()
        pasted = json.loads(paste_block(stderr))
        assert pasted == [
            {"urls": [f"stun:127.0.0.1:{udp[1]}"]},
            {
                "urls": [
                    f"turn:127.0.0.1:{udp[1]}?transport=udp",
                    f"turn:127.0.0.1:{tcp[1]}?transport=tcp",
                ],
                "username": turn_entry["username"],
                "credential": turn_entry["credential"],
            },
        ]
        assert f"TURN over TLS listens on 127.0.0.1:{tls[1]} with a throw-away" in stderr
        assert f"openssl s_client -connect 127.0.0.1:{tls[1]}" in stderr

        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            await client.bind(("127.0.0.1", 0))
            request = Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
            await client.sendto(encode_message(request), udp)
            with trio.fail_after(TIMEOUT):
                reply = decode_message(await client.recv(2048))
            assert reply.transaction_id == request.transaction_id
            assert reply.message_class is MessageClass.SUCCESS
            assert reply.get(XorMappedAddress) == XorMappedAddress(*client.getsockname())

        assert await stop(running, signal.SIGTERM) == 0
        assert "Traceback" not in running.stderr_path.read_text()


def paste_block(stderr: str) -> str:
    """The JSON of the `iceServers: [...]` block `trelay serve` prints on stderr."""
    start = stderr.index("iceServers: [") + len("iceServers: ")
    end = stderr.index("\n]", start) + 2
    return stderr[start:end]


async def test_the_server_denies_its_own_listeners_as_peers(tmp_path: Path) -> None:
    async with running_trelay(tmp_path, "--allow-loopback-peers") as running:
        [udp] = running.addresses("udp")
        [tcp] = running.addresses("tcp")
        servers = running.ready["ice_servers"]
        assert isinstance(servers, list)
        credential = servers[1]
        other = ("127.0.0.1", 9)  # any loopback port that is not ours
        binds = [(udp, 403), (tcp, 403), (other, None)]
        await allocate_with(udp, credential["username"], credential["credential"], binds)
        assert await stop(running, signal.SIGTERM) == 0


async def test_sigint_stops_cleanly_too(tmp_path: Path) -> None:
    # IPv6 loopback where the machine has it (some containers do not).
    second = "[::1]:0" if ipv6_loopback_works() else "127.0.0.1:0"
    async with running_trelay(
        tmp_path, "--listen-udp", "127.0.0.1:0", "--listen-udp", second, "--realm", "t.test"
    ) as running:
        assert running.addresses("udp")[1][0] == second.rpartition(":")[0].strip("[]")
        assert running.ready["tcp"] == running.ready["tls"] == []
        assert await stop(running, signal.SIGINT) == 0


async def test_a_config_file_is_used(tmp_path: Path) -> None:
    config = tmp_path / "trelay.toml"
    config.write_text('log_level = "error"\n[listen]\ntcp = ["127.0.0.1:0"]\n')
    async with running_trelay(tmp_path, "--config", str(config)) as running:
        assert running.ready["udp"] == running.ready["tls"] == []
        [tcp] = running.addresses("tcp")
        stream = await trio.open_tcp_stream(*tcp)
        async with stream:
            request = Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
            await stream.send_all(encode_message(request))
            with trio.fail_after(TIMEOUT):
                header = b""
                for _ in range(100):
                    if len(header) >= 20:
                        break
                    header += await stream.receive_some(20 - len(header))
            assert header[:2] == b"\x01\x01"  # Binding success response (RFC 8489 §5)
            assert header[8:20] == request.transaction_id
        assert await stop(running, signal.SIGTERM) == 0
        # log_level = "error": no info lines. No users or secrets in the file: the node
        # runs on the generated dev secret, so the paste block (its only way in) is shown.
        stderr = running.stderr_path.read_text()
        assert "INFO" not in stderr
        assert "iceServers: [" in stderr


async def run_to_exit(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [*trelay_command(), *args], capture_stdout=True, capture_stderr=True, check=False
        )


async def test_bad_flag_and_bad_file_exit_2_naming_the_key(tmp_path: Path) -> None:
    result = await run_to_exit("serve", "--listen-tls", "[::1:5349")
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr == b"trelay: --listen-tls: expected host:port, got '[::1:5349'\n"

    config = tmp_path / "bad.toml"
    config.write_text('[listen]\nudp = ["127.0.0.1:0", "127.0.0.1:eighty"]\n')
    result = await run_to_exit("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == b"trelay: listen.udp[1]: expected a port number, got 'eighty'\n"

    config.write_text("[listen]\nudp = []\nsecret = 1\n")
    result = await run_to_exit("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == b"trelay: listen.secret: unknown key\n"


async def test_bad_certificate_exits_2_before_binding(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("garbage")
    key.write_text("garbage")
    result = await run_to_exit("serve", "--tls-cert", str(cert), "--tls-key", str(key))
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr == f"trelay: tls.cert: no PEM certificate in {cert}\n".encode()


async def test_a_port_in_use_exits_1_naming_the_key() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        await holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        result = await run_to_exit("serve", "--listen-udp", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().splitlines()[-1] == (
        f"trelay: listen.udp[0]: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


async def test_a_secrets_file_signs_credentials_and_none_is_printed(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.txt"
    secrets.write_text("# newest first\nrotated-in\nolder\n")
    async with running_trelay(tmp_path, "--secrets-file", str(secrets)) as running:
        [udp] = running.addresses("udp")
        [tls] = running.addresses("tls")
        # A configured secret is production: the ready line names the listeners and
        # carries STUN URIs, no credential (it would land in journald and kubectl logs).
        assert running.ready["ice_servers"] == [
            {"urls": [f"stun:127.0.0.1:{udp[1]}", f"stuns:127.0.0.1:{tls[1]}"]}
        ]
        # Clients mint their credential from the secret, as an application back end does.
        expiry = int(time.time()) + 300
        for secret in ("rotated-in", "older"):
            credential = rest_credential(secret, "alice", expiry)
            await allocate_with(udp, credential.username, credential.password)
        assert await stop(running, signal.SIGTERM) == 0
    stderr = running.stderr_path.read_text()
    assert "iceServers" not in stderr and "credential" not in json.dumps(running.ready)
    assert f"trelay: ready: udp 127.0.0.1:{udp[1]}, tcp 127.0.0.1:" in stderr


@pytest.mark.parametrize(
    "auth",
    [
        ["--secret", "s3cret-of-the-fleet"],
        ["--user", "alice:wonderland"],
    ],
)
async def test_a_production_node_prints_no_credential(tmp_path: Path, auth: list[str]) -> None:
    config = tmp_path / "trelay.toml"
    # The example's shape on loopback: listeners, an operator port, a configured auth.
    config.write_text(
        '[listen]\nudp = ["127.0.0.1:0"]\ntcp = ["127.0.0.1:0"]\n[http]\nlisten = ["127.0.0.1:0"]\n'
    )
    async with running_trelay(tmp_path, "--config", str(config), *auth) as running:
        [udp] = running.addresses("udp")
        [http] = running.addresses("http")
        assert running.ready["ice_servers"] == [{"urls": [f"stun:127.0.0.1:{udp[1]}"]}]
        assert "username" not in json.dumps(running.ready)
        assert await stop(running, signal.SIGTERM) == 0
    stderr = running.stderr_path.read_text()
    assert "iceServers" not in stderr and 'credential"' not in stderr
    assert f"http 127.0.0.1:{http[1]}" in stderr
    assert auth[1] not in stderr and "wonderland" not in stderr
