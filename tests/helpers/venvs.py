"""trelay installed the way a user installs it, offline: a wheel built from the checkout,
fresh venvs, and commands run in them with a clean environment.

Nothing here reaches a package index. The wheel is built by the running interpreter's pip
with the installed hatchling (`--no-build-isolation --no-index`, hatchling is in the
`test` extra). A venv made here gets trelay only (`--no-deps`); it borrows every other
dependency (trio, aioice, pytest...) through one `.pth` line naming the running
interpreter's site-packages. Python does not process the `.pth` files of a directory that
a `.pth` line added, so the editable install's own `.pth` (the checkout root on sys.path)
is not applied there: what such a venv imports as `trelay` is its own copy.

Used by tests/icekit/test_installed_namespace.py and tests/deploy.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT = 90.0  # every subprocess; under pytest-timeout's 120 s per test
# Stripped from the subprocesses' environment: nothing may add to their sys.path or plugins.
INHERITED_SETTINGS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONSAFEPATH",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
)
PTH_NAME = "_test_dependencies.pth"
# pip's offline flags: the checkout is built with the installed hatchling, nothing fetched.
OFFLINE_BUILD = ("--no-build-isolation", "--no-index")
OFFLINE_INSTALL = ("--no-deps", "--no-index")


@dataclass(frozen=True, slots=True)
class InstalledVenv:
    root: Path
    python: Path
    site_packages: Path
    borrowed: tuple[Path, ...]  # the running interpreter's site-packages, named by the .pth


def clean_env(venv: InstalledVenv | None = None, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in INHERITED_SETTINGS and not key.startswith("PYTEST_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if venv is not None:  # as if the user had activated it
        env["VIRTUAL_ENV"] = str(venv.root)
        env["PATH"] = os.pathsep.join([str(venv.root / "bin"), env.get("PATH", os.defpath)])
    env.update(extra)
    return env


def run(
    args: Sequence[str | Path],
    cwd: Path,
    venv: InstalledVenv | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded); fail the test with its output if it fails."""
    command = [str(arg) for arg in args]
    result = subprocess.run(
        command,
        cwd=cwd,
        env=clean_env(venv) if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode} (cwd {cwd})\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}",
            pytrace=False,
        )
    return result


def build_wheel(out: Path) -> Path:
    """The wheel `pip wheel --no-deps .` makes of the checkout, built offline into `out`."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.fail("hatchling is not installed: it is in the `test` extra (pip install '.[test]')")
    pip_wheel = ["-m", "pip", "wheel", "--no-deps", *OFFLINE_BUILD, "--no-cache-dir", "-q"]
    run([sys.executable, *pip_wheel, "-w", out, CHECKOUT], cwd=out)
    (built,) = out.glob("trelay-*.whl")
    return built


def site_packages_of(python: Path) -> Path:
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return Path(run([python, "-c", purelib], cwd=python.parent).stdout.strip())


def make_venv(root: Path, interpreter: str | Path = sys.executable) -> Path:
    """A fresh venv without pip (the running interpreter's pip installs into it); its python.

    `interpreter` (default: the running one) must be the same Python version as the
    running interpreter when the venv is to borrow its packages.
    """
    run([interpreter, "-m", "venv", "--without-pip", root], cwd=root.parent)
    return root / "bin" / "python"


def pip_install_into(python: Path, *requirements: str | Path, flags: Sequence[str] = ()) -> None:
    """`pip install` into the venv of `python` with the running interpreter's pip, offline."""
    pip_install = ["-m", "pip", "--python", str(python), "install", *OFFLINE_INSTALL, *flags]
    run([sys.executable, *pip_install, "--no-cache-dir", "-q", *requirements], cwd=python.parent)


def borrow_test_dependencies(root: Path) -> InstalledVenv:
    """Give the venv at `root` the running interpreter's packages through one `.pth` line.

    Call it after trelay is installed there: pip run in that venv would otherwise see the
    dev venv's editable trelay as already installed.
    """
    python = root / "bin" / "python"
    site_packages = site_packages_of(python)
    borrowed = tuple(dict.fromkeys(Path(sysconfig.get_path(n)) for n in ("purelib", "platlib")))
    (site_packages / PTH_NAME).write_text("".join(f"{path}\n" for path in borrowed))
    return InstalledVenv(root, python, site_packages, borrowed)
