"""The operator HTTP port in settings ([http] listen, --listen-http) and in `trelay serve`.

Settings: the default is one port on 127.0.0.1 chosen by the kernel; `listen = []` turns
the port off; the flag replaces the file's list; errors name the key. The process: the
ready line lists the bound "http" addresses, /readyz is 200 once ready and 503 as soon
as SIGTERM starts the drain (an allocation keeps the node draining for its grace
period), /metrics serves trelay's metrics; a port that cannot be bound is exit status 1
naming `http.listen[0]`.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
import trio

from tests.helpers.http_client import http_request
from tests.helpers.settings_file import write
from tests.helpers.trelay_process import TIMEOUT, running_trelay, stop, trelay_command
from tests.helpers.turn_client import udp_client
from trelay.config.flags import Flags
from trelay.config.settings import HttpSettings, load_settings
from trelay.config.values import ListenAddress, SettingsError

LOOPBACK_ANY = (ListenAddress("127.0.0.1", 0),)


def test_the_default_is_one_ephemeral_loopback_port(tmp_path: Path) -> None:
    assert load_settings().http == HttpSettings(LOOPBACK_ANY)
    assert load_settings(write(tmp_path, "")).http.listen == LOOPBACK_ANY
    # Naming TURN listeners does not turn the operator port off.
    named = load_settings(write(tmp_path, '[listen]\nudp = ["127.0.0.1:0"]\n'))
    assert named.http.listen == LOOPBACK_ANY


def test_file_addresses_and_an_empty_list(tmp_path: Path) -> None:
    config = write(tmp_path, '[http]\nlisten = ["127.0.0.1:9478", "[::1]:9479"]\n')
    assert load_settings(config).http.listen == (
        ListenAddress("127.0.0.1", 9478),
        ListenAddress("::1", 9479),
    )
    assert load_settings(write(tmp_path, "[http]\nlisten = []\n")).http.listen == ()


def test_the_flag_replaces_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, '[http]\nlisten = ["127.0.0.1:9478"]\n')
    flags = Flags(listen_http=("127.0.0.2:0", "127.0.0.3:80"))
    assert load_settings(config, flags).http.listen == (
        ListenAddress("127.0.0.2", 0),
        ListenAddress("127.0.0.3", 80),
    )


@pytest.mark.parametrize(
    ("text", "flags", "key", "problem"),
    [
        ('[http]\nlisten = "127.0.0.1:1"\n', Flags(), "http.listen", "expected a list"),
        ('[http]\nlisten = ["nope"]\n', Flags(), "http.listen[0]", "expected host:port"),
        ("[http]\nport = 1\n", Flags(), "http.port", "unknown key"),
        ('http = "x"\n', Flags(), "http", "expected a table"),
        ("", Flags(listen_http=("x:1",)), "--listen-http", "expected an IP address"),
        (
            '[listen]\ntcp = ["127.0.0.1:9000"]\n[http]\nlisten = ["127.0.0.1:9000"]\n',
            Flags(),
            "http.listen[0]",
            "already listed as listen.tcp[0]",
        ),
    ],
)
def test_errors_name_the_key(
    tmp_path: Path, text: str, flags: Flags, key: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, text), flags)
    assert caught.value.key == key
    assert problem in caught.value.problem


# --- the process ------------------------------------------------------------------------


def address(text: object) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    return host.strip("[]"), int(port)


async def test_serve_reports_http_and_readyz_turns_503_on_sigterm(tmp_path: Path) -> None:
    args = ("--listen-udp", "127.0.0.1:0", "--listen-http", "127.0.0.1:0",
            "--user", "alice:wonderland", "--realm", "interop.test")  # fmt: skip
    async with running_trelay(tmp_path, *args) as running:
        http = running.ready["http"]
        assert isinstance(http, list) and len(http) == 1
        operator = address(http[0])
        assert (await http_request(operator, "/readyz")).status == 200
        metrics = await http_request(operator, "/metrics")
        assert "trelay_ready 1.0" in metrics.text
        assert 'trelay_allocations_active{transport="udp"} 0.0' in metrics.text
        [udp] = running.addresses("udp")
        async with udp_client(udp) as client:
            await client.allocate()
            metrics = await http_request(operator, "/metrics")
            assert 'trelay_allocations_active{transport="udp"} 1.0' in metrics.text
            # The allocation keeps the node draining (up to the drain timeout) after SIGTERM.
            running.process.send_signal(signal.SIGTERM)
            with trio.fail_after(TIMEOUT):
                for _ in range(1000):  # bounded: 503 comes within one poll or two
                    readyz = await http_request(operator, "/readyz")
                    if readyz.status == 503:
                        break
                    await trio.sleep(0.01)
            assert readyz.json() == {"status": "not ready", "reason": "draining"}
            assert (await http_request(operator, "/healthz")).status == 200
            assert "trelay_ready 0.0" in (await http_request(operator, "/metrics")).text
            # Its end is the drain's end: the node stops as soon as it is deleted.
            assert await client.refresh(0) == 0
        with trio.fail_after(TIMEOUT):
            assert await running.process.wait() == 0


async def test_no_http_port_when_the_list_is_empty(tmp_path: Path) -> None:
    config = write(tmp_path, '[listen]\nudp = ["127.0.0.1:0"]\n[http]\nlisten = []\n')
    async with running_trelay(tmp_path, "--config", str(config)) as running:
        assert running.ready["http"] == []
        assert await stop(running, signal.SIGINT) == 0


async def test_an_http_port_in_use_exits_2_naming_the_key_before_anything_binds(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            done = await trio.run_process(
                [*trelay_command(), "serve", "--listen-udp", "127.0.0.1:0",
                 "--listen-http", f"127.0.0.1:{port}"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == b""
    # One line, and before the relay bound anything (no "listening on" line before it).
    assert done.stderr.decode() == (
        f"trelay: http.listen[0]: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
