"""deploy/systemd/trelay.service: systemd accepts it, and the command it runs is one
`trelay` accepts, with the settings file the deploy example provides."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trelay.process.cli import build_parser

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "deploy" / "systemd" / "trelay.service"
TIMEOUT = 60


def exec_start() -> list[str]:
    [line] = [x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_unit_runs_trelay_serve_with_a_config_file() -> None:
    argv = exec_start()
    assert Path(argv[0]).name == "trelay"
    arguments = build_parser().parse_args(argv[1:])
    assert arguments.command == "serve"
    assert arguments.config == Path("/etc/trelay/trelay.toml")


def test_the_unit_stops_with_sigterm_and_leaves_time_to_drain() -> None:
    from trelay.process.serve import DRAIN_GRACE_SECONDS

    settings = dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line)
    assert settings["KillSignal"] == "SIGTERM"
    assert float(settings["TimeoutStopSec"]) > DRAIN_GRACE_SECONDS + 5


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # The same unit with ExecStart pointing at this environment's trelay, which exists.
    trelay = Path(sys.executable).with_name("trelay")
    text = UNIT.read_text().replace("/usr/local/bin/trelay", str(trelay))
    unit = tmp_path / "trelay.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "trelay.service" in line
    ]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr
