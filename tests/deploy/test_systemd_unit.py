"""deploy/systemd/trelay.service: systemd accepts it, what it runs exists, and its command
line serves as an unprivileged user with the secrets handed over as a credential.

- The unit runs `make install`'s trelay (`$(PREFIX)/bin/trelay`, PREFIX /opt/trelay; the
  install target itself is tested in tests/deploy/test_install.py).
- `systemd-analyze verify` (Debian package `systemd`, installed by .ci/run) checks the unit,
  with ExecStart pointing at this environment's trelay because nothing is in /opt here.
- The unit's ExecStart runs as `nobody` (setpriv, as root) the way systemd would run it:
  `${CREDENTIALS_DIRECTORY}` expanded to a directory holding `secrets` readable by that
  user only (as LoadCredential= makes it), a temporary settings file instead of
  /etc/trelay/trelay.toml, and a notify socket as `$NOTIFY_SOCKET`. /opt/trelay is a
  temporary directory holding a venv with the wheel of this checkout (the dev venv's
  interpreter may sit where `nobody` cannot reach it, as pyenv's under /root does, so the
  venv is made from one `nobody` can run; the other dependencies are borrowed from the dev
  venv, `tests.helpers.venvs`). It must print its ready line, then exit 0 on SIGTERM,
  with one process and with two workers. What systemd itself adds (the dynamic user, the
  sandboxing, the credential copy) is not run here: no systemd runs as PID 1 on this
  machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.venvs import borrow_test_dependencies, build_wheel, make_venv, pip_install_into
from trelay.config.settings import Settings
from trelay.process.cli import build_parser

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "deploy" / "systemd" / "trelay.service"
MAKEFILE = ROOT / "Makefile"
TIMEOUT = 60
# `[drain] timeout`'s default (issue 11, part 1): how long a stop may keep calls relaying.
DRAIN_TIMEOUT = 3600.0
TRELAY = Path(sys.executable).with_name("trelay")  # this environment's `trelay` command
WATCHDOG_USEC = 1_000_000  # a ping every 0.5 s, so a short run sees some


def unit_settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, by key (a key may repeat), comments left out."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def setting(key: str) -> str:
    [value] = unit_settings()[key]
    return value


def exec_start() -> list[str]:
    return shlex.split(setting("ExecStart"))


def expand(argv: list[str], environment: dict[str, str]) -> list[str]:
    """systemd's `${NAME}` expansion inside an ExecStart= word (systemd.service(5))."""
    return [re.sub(r"\$\{(\w+)\}", lambda m: environment[m[1]], word) for word in argv]


def test_the_unit_runs_the_installed_trelay_serve_with_the_config_and_credential() -> None:
    argv = exec_start()
    prefix = re.search(r"^PREFIX \?= (\S+)$", MAKEFILE.read_text(), re.M)
    assert prefix is not None
    assert argv[0] == f"{prefix[1]}/bin/trelay"  # what `make install` puts there
    arguments = build_parser().parse_args(argv[1:])
    assert arguments.command == "serve"
    assert arguments.config == Path("/etc/trelay/trelay.toml")
    # The root-only secrets file reaches the dynamic user as a credential.
    assert unit_settings()["LoadCredential"] == ["secrets:/etc/trelay/secrets"]
    assert arguments.secrets_file == "${CREDENTIALS_DIRECTORY}/secrets"
    assert setting("DynamicUser") == "yes"


def test_the_unit_is_notify_with_a_watchdog_and_reloads_with_sighup() -> None:
    assert setting("Type") == "notify"
    assert setting("WatchdogSec") == "30"
    assert setting("ExecReload") == "/bin/kill -HUP $MAINPID"
    # sd_notify and the workers' control channels are AF_UNIX.
    assert "AF_UNIX" in setting("RestrictAddressFamilies").split()


def test_the_stop_timeout_covers_the_drain() -> None:
    assert setting("KillSignal") == "SIGTERM"
    assert float(setting("TimeoutStopSec")) == DRAIN_TIMEOUT + 60
    assert "TimeoutStopSec=3660 is that drain timeout plus 60 s" in UNIT.read_text()


def test_the_drain_default_is_the_one_the_unit_assumes() -> None:
    drain = getattr(Settings(), "drain", None)
    if drain is None:
        pytest.skip("trelay has no [drain] settings yet (issue 11 part 1, in progress)")
    assert float(drain.timeout) == DRAIN_TIMEOUT


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian package systemd; .ci/run installs it)",
)
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # The same unit with ExecStart pointing at this environment's trelay, which exists.
    text = UNIT.read_text().replace(exec_start()[0], str(TRELAY))
    unit = tmp_path / "trelay.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    complaints = [line for line in output.splitlines() if "trelay.service" in line]
    assert result.returncode == 0 and complaints == [], output
    # verify does look at the command: a missing one is reported.
    unit.write_text(UNIT.read_text().replace(exec_start()[0], str(tmp_path / "missing")))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout + result.stderr


# --- the unit's command line, run as its user ---------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitRun:
    ready: dict[str, object]
    status: int
    stderr: str
    notifications: list[str]  # what reached $NOTIFY_SOCKET, in order
    at_sigterm: int  # how many had arrived when SIGTERM was sent


def wants_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("running as another user (setpriv --reuid) needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed (Debian package util-linux)")


AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--")
NOBODY = 65534


@pytest.fixture(scope="module")
def shared_directory() -> Iterator[Path]:
    """A directory `nobody` can read (pytest's tmp_path is private to root)."""
    wants_root()
    path = Path(tempfile.mkdtemp(prefix="trelay-unit-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def runs_as_nobody(interpreter: str) -> bool:
    """Whether a process of `nobody` can start `interpreter` (the workers are started so).

    Asked from a shell already running as `nobody`: setpriv's own exec of a path through
    /root was seen to succeed where the same exec from the user's process fails.
    """
    probe = '"$0" -c "import sys; print(sys.version_info[:2])"'
    result = subprocess.run(
        [*AS_NOBODY, "/bin/sh", "-c", probe, interpreter],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    return result.stdout.strip() == str(sys.version_info[:2])


@pytest.fixture(scope="module")
def installed_trelay(shared_directory: Path) -> Path:
    """The unit's /opt/trelay/bin/trelay: this checkout's wheel in a venv `nobody` can run."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, getattr(sys, "_base_executable", sys.executable),
                  f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]  # fmt: skip
    usable = [c for c in candidates if Path(c).exists() and runs_as_nobody(c)]
    if not usable:
        pytest.skip(f"no Python {version} that nobody may run: {candidates}")
    wheel = build_wheel(Path(tempfile.mkdtemp(dir=shared_directory)))
    prefix = shared_directory / "opt" / "trelay"
    prefix.parent.mkdir()
    pip_install_into(make_venv(prefix, usable[0]), wheel)
    borrow_test_dependencies(prefix)
    return prefix / "bin" / "trelay"


def read_ready_line(
    process: subprocess.Popen[bytes], deadline: float, stderr: Path
) -> dict[str, object]:
    """The first JSON line with `"event": "ready"` on the process's stdout."""
    assert process.stdout is not None
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("event") == "ready":
                        return record
    process.kill()
    process.wait()
    pytest.fail(
        f"no ready line; stdout so far: {buffer!r}\n--- stderr\n{stderr.read_text()}",
        pytrace=False,
    )


def received(sock: socket.socket) -> list[str]:
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.extend(sock.recv(4096).decode().splitlines())
    return messages


def run_the_unit_command(shared: Path, trelay: Path, workers: int) -> UnitRun:
    base = Path(tempfile.mkdtemp(dir=shared))
    base.chmod(0o755)
    credentials = base / "credentials"  # as LoadCredential= makes it: the user's, 0400
    credentials.mkdir(mode=0o500)
    (credentials / "secrets").write_text("a-long-random-secret-for-the-unit-test\n")
    (credentials / "secrets").chmod(0o400)
    for path in (credentials / "secrets", credentials):
        os.chown(path, NOBODY, NOBODY)
    config = base / "trelay.toml"
    config.write_text(
        f'log_format = "json"\nworkers = {workers}\n'
        '[listen]\nudp = ["127.0.0.1:0"]\ntcp = ["127.0.0.1:0"]\n'
        '[auth]\nrealm = "turn.example.org"\n'
        '[http]\nlisten = ["127.0.0.1:0"]\n'
    )
    config.chmod(0o644)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(base / "notify"))
    notify.setblocking(False)
    (base / "notify").chmod(0o666)
    environment = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "NOTIFY_SOCKET": str(base / "notify"),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
    }
    argv = expand(exec_start(), environment)
    assert argv[0] == "/opt/trelay/bin/trelay"
    argv = [str(trelay), *argv[1:]]
    argv[argv.index("/etc/trelay/trelay.toml")] = str(config)
    with notify, (base / "stderr").open("w+") as stderr:
        process = subprocess.Popen(
            [*AS_NOBODY, *argv], cwd=base, env=environment,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        try:
            ready = read_ready_line(process, time.monotonic() + TIMEOUT, base / "stderr")
            time.sleep(2 * WATCHDOG_USEC / 1e6)  # room for watchdog pings
            notifications = received(notify)
            at_sigterm = len(notifications)
            process.send_signal(signal.SIGTERM)  # setpriv exec()s: this is trelay
            status = process.wait(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()
        notifications += received(notify)
        stderr.seek(0)
        return UnitRun(ready, status, stderr.read(), notifications, at_sigterm)


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def unit_run(
    request: pytest.FixtureRequest, shared_directory: Path, installed_trelay: Path
) -> UnitRun:
    workers: int = request.param
    return run_the_unit_command(shared_directory, installed_trelay, workers)


def test_the_unit_command_serves_as_nobody_and_exits_0_on_sigterm(unit_run: UnitRun) -> None:
    assert unit_run.ready["event"] == "ready"
    assert unit_run.ready["udp"] and unit_run.ready["http"]
    assert unit_run.status == 0, unit_run.stderr
    assert "Traceback" not in unit_run.stderr


def sd_notify_is_wired() -> bool:
    """Whether `trelay serve` uses trelay.process.systemd yet (another part of issue 11)."""
    probe = "import sys, trelay.process.cli; print('trelay.process.systemd' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    return result.stdout.strip() == "True"


def test_the_unit_command_tells_systemd_ready_watchdog_and_stopping(unit_run: UnitRun) -> None:
    if not sd_notify_is_wired():
        pytest.skip("`trelay serve` does not call trelay.process.systemd yet (issue 11)")
    messages = unit_run.notifications
    # READY=1 once serving (Type=notify: systemd waits for it; trelay sends it right after
    # the ready line, so it may arrive just after the test read that line).
    serving = messages[: unit_run.at_sigterm]
    assert "READY=1" in serving, messages
    # WatchdogSec=: pings at half the interval while serving.
    assert "WATCHDOG=1" in serving[serving.index("READY=1") :], messages
    # SIGTERM: STOPPING=1 as the drain starts.
    assert "STOPPING=1" in messages[unit_run.at_sigterm :], messages
