"""Start-up that tells the truth (`trelay.process.preflight`, `trelay.process.serve`):
`trelay --version`, `trelay check-config FILE` (binds nothing), and the mistakes that
used to start "ready" or fail half-way - a relay address the machine does not have, an
operator port in use, a TLS key that does not match its certificate, an unreadable
secrets file - each one line naming the key and status 2, before anything binds (the
relay logs a "listening on" line for each socket it binds: there is none).
"""

from __future__ import annotations

import errno
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import trio

from tests.helpers.trelay_process import TIMEOUT, trelay_command
from trelay.config.values import SettingsError
from trelay.node.tls import generate_self_signed
from trelay.process.cli import main
from trelay.process.preflight import check_local_address

NOT_HERE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): no machine has it


async def run_to_exit(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [*trelay_command(), *args], capture_stdout=True, capture_stderr=True, check=False
        )


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The whole of stderr, which must be exactly one line (no "listening on" before it)."""
    assert result.stdout == b""
    text = result.stderr.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    return text.rstrip("\n")


def mismatched_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and the key of another certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(generate_self_signed(["127.0.0.1"]).cert_pem)
    key.write_bytes(generate_self_signed(["127.0.0.1"]).key_pem)
    return cert, key


# --- --version and check-config -----------------------------------------------------------


async def test_version_prints_the_installed_version() -> None:
    result = await run_to_exit("--version")
    assert result.returncode == 0
    assert result.stdout.decode() == f"trelay {metadata.version('trelay')}\n"


async def test_check_config_says_ok_and_binds_nothing(tmp_path: Path) -> None:
    pair = generate_self_signed(["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(pair.cert_pem)
    (tmp_path / "key.pem").write_bytes(pair.key_pem)
    (tmp_path / "secrets").write_text("s3cret\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as http:
        udp.bind(("127.0.0.1", 0))
        http.bind(("127.0.0.1", 0))
        http.listen()
        # Ports held by the test: `serve` could not bind them, check-config does not try.
        config = tmp_path / "trelay.toml"
        config.write_text(
            f'[listen]\nudp = ["127.0.0.1:{udp.getsockname()[1]}"]\ntls = ["127.0.0.1:0"]\n'
            f'[tls]\ncert = "cert.pem"\nkey = "key.pem"\n'
            f'[auth]\nsecrets_file = "secrets"\n'
            f'[relay]\naddress = "{NOT_HERE}"\n'
            f'[http]\nlisten = ["127.0.0.1:{http.getsockname()[1]}"]\n'
        )
        result = await run_to_exit("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{config}: ok\n"
    assert result.stderr == b""


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[listen]\nudp = ["127.0.0.1:eighty"]\n',
         "trelay: listen.udp[0]: expected a port number, got 'eighty'"),
        ("[drain]\ntimeout = -1\n", "trelay: drain.timeout: expected a number of seconds >= 0"),
        ('[auth]\nrevocations_file = "revoked.toml"\n',
         "trelay: auth.revocations_file: "),
    ],
)  # fmt: skip
async def test_check_config_names_the_key_of_a_bad_file(
    tmp_path: Path, text: str, line: str
) -> None:
    (tmp_path / "revoked.toml").write_text("[[revoked]]\nidentity = 3\n")
    config = tmp_path / "trelay.toml"
    config.write_text(text)
    result = await run_to_exit("check-config", str(config))
    assert result.returncode == 2
    assert one_line(result).startswith(line)


async def test_check_config_loads_the_tls_pair(tmp_path: Path) -> None:
    cert, key = mismatched_pair(tmp_path)
    config = tmp_path / "trelay.toml"
    config.write_text(f'[tls]\ncert = "{cert.name}"\nkey = "{key.name}"\n')
    result = await run_to_exit("check-config", str(config))
    assert result.returncode == 2
    assert one_line(result).startswith(f"trelay: tls.key: does not match the certificate in {cert}")


async def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    result = await run_to_exit("check-config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert one_line(result) == f"trelay: --config: file not found: {tmp_path / 'absent.toml'}"


# --- serve: exit 2 before anything binds ----------------------------------------------------


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "workers"])
async def test_a_relay_address_the_machine_does_not_have(workers: list[str]) -> None:
    result = await run_to_exit("serve", "--relay-address", NOT_HERE, *workers)
    assert result.returncode == 2
    assert one_line(result).startswith(
        f"trelay: --relay-address: {NOT_HERE} is not an address of this machine"
    )


async def test_a_relay_address_in_the_file_names_its_key(tmp_path: Path) -> None:
    config = tmp_path / "trelay.toml"
    config.write_text(f'[relay]\naddress = "{NOT_HERE}"\n')
    result = await run_to_exit("serve", "--config", str(config))
    assert result.returncode == 2
    assert one_line(result).startswith(f"trelay: relay.address: {NOT_HERE} is not an address")

    config.write_text('[relay]\naddress = "127.0.0.1"\naddress_v6 = "2001:db8::1"\n')
    result = await run_to_exit("serve", "--config", str(config))
    assert result.returncode == 2
    assert one_line(result).startswith("trelay: relay.address_v6: 2001:db8::1 is not an address")


def test_the_wildcard_and_loopback_always_pass() -> None:
    for host in ("0.0.0.0", "::", "127.0.0.1", "127.0.0.2", "::1"):
        check_local_address("relay.address", host)
    with pytest.raises(SettingsError) as caught:
        check_local_address("relay.address", NOT_HERE)
    assert caught.value.key == "relay.address"


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "workers"])
async def test_a_taken_operator_port(workers: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_to_exit(
            "serve", "--listen-udp", "127.0.0.1:0", "--listen-http", f"127.0.0.1:{port}", *workers
        )
    assert result.returncode == 2
    assert one_line(result) == (
        f"trelay: http.listen[0]: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "workers"])
async def test_a_tls_key_that_does_not_match(tmp_path: Path, workers: list[str]) -> None:
    cert, key = mismatched_pair(tmp_path)
    result = await run_to_exit(
        "serve", "--listen-tls", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key),
        *workers,
    )  # fmt: skip
    assert result.returncode == 2
    assert one_line(result).startswith(f"trelay: tls.key: does not match the certificate in {cert}")


def test_an_unreadable_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text("s3cret\n")
    opened = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        # What open(2) says to a service user that may not read the file (tests run as
        # root here, whom file modes do not stop).
        if self == secrets:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return opened(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refuse)
    assert main(["serve", "--secrets-file", str(secrets)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"trelay: --secrets-file: {secrets}: cannot read: Permission denied\n"

    config = tmp_path / "trelay.toml"
    config.write_text('[auth]\nsecrets_file = "secrets"\n')
    assert main(["check-config", str(config)]) == 2
    assert capsys.readouterr().err.startswith("trelay: auth.secrets_file: ")
