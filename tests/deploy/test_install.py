"""The README's "Install" commands, run offline: trelay is not on a package index, so it is
installed from a checkout, from a wheel built from one, or by `make install` into a venv
(the path deploy/systemd/trelay.service runs). Each install gets trelay only; the other
dependencies are borrowed from the dev venv (`tests.helpers.venvs`), so nothing is fetched.
"""

from __future__ import annotations

import re
import shlex
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.venvs import (
    CHECKOUT,
    OFFLINE_BUILD,
    OFFLINE_INSTALL,
    borrow_test_dependencies,
    build_wheel,
    clean_env,
    make_venv,
    pip_install_into,
    run,
    site_packages_of,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout (bin/)")

README = CHECKOUT / "README.md"
LICENSE = CHECKOUT / "LICENSE"


def install_section() -> str:
    text = README.read_text()
    found = re.search(r"^## Install\n(.*?)^## ", text, re.S | re.M)
    assert found is not None, "README has no '## Install' section"
    return found[1]


def commands(section: str) -> list[str]:
    """The shell lines of the section's ```sh blocks (comments dropped)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def test_the_readme_installs_from_the_repository_and_says_trelay_is_not_on_pypi() -> None:
    section = install_section()
    assert "not on PyPI" in section
    lines = commands(section)
    assert not [line for line in lines if re.search(r"pip install ['\"]?trelay\b", line)]
    # The commands the tests below run, as the README spells them.
    assert "python -m pip wheel --no-deps -w dist ." in lines
    assert "pip install dist/trelay-*.whl" in lines
    assert any(re.fullmatch(r"pip install \S*/trelay", line) for line in lines), lines
    assert "sudo make install PREFIX=/opt/trelay" in lines
    # The image tag the Kubernetes manifest and the Helm chart use.
    assert "docker build -f deploy/Dockerfile -t trelay:0.1.0 ." in lines


def test_the_wheel_carries_the_mit_license(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        [license_file] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_file) == LICENSE.read_bytes()
        headers = archive.read(metadata).decode().split("\n\n")[0].splitlines()
    assert "License-Expression: MIT" in headers
    assert "License-File: LICENSE" in headers
    assert "Copyright (c) 2026 the trelay authors" in LICENSE.read_text()


def test_pip_install_from_a_checkout(tmp_path: Path) -> None:
    # `pip install /path/to/trelay`, offline. pip builds in the venv it installs into, so
    # the venv borrows the dev venv's packages (hatchling among them) first; the dev venv's
    # editable trelay is then visible there too, and the install must not take it for
    # the venv's own.
    python = make_venv(tmp_path / "venv")
    venv = borrow_test_dependencies(tmp_path / "venv")
    pip_install_into(python, CHECKOUT, flags=OFFLINE_BUILD)
    site_packages = site_packages_of(python)
    assert (site_packages / "trelay" / "process" / "cli.py").is_file()
    assert (site_packages / "trelay" / "stun" / "message.py").is_file()  # linked layers copied
    result = run([venv.root / "bin" / "trelay", "serve", "--help"], cwd=tmp_path, venv=venv)
    assert "--config" in result.stdout


def make_install(prefix: Path, dist: Path) -> None:
    """`make install PREFIX=...` offline: the wheel built by this environment's Python (it
    has hatchling), installed without dependencies and without an index."""
    variables = {
        "PREFIX": prefix,
        "DIST": dist,
        # Any Python of this version that can make a venv with pip (ensurepip is offline).
        "PYTHON": getattr(sys, "_base_executable", sys.executable),
        "WHEEL_PYTHON": sys.executable,
        "WHEEL_FLAGS": " ".join(OFFLINE_BUILD),
        "INSTALL_FLAGS": " ".join(OFFLINE_INSTALL),
    }
    arguments = [f"{key}={value}" for key, value in variables.items()]
    run(["make", "--no-print-directory", "-C", CHECKOUT, "install", *arguments], cwd=CHECKOUT,
        env=clean_env())  # fmt: skip


def test_make_install_puts_trelay_in_a_venv_at_prefix_and_can_run_again(tmp_path: Path) -> None:
    prefix, dist = tmp_path / "opt" / "trelay", tmp_path / "dist"
    make_install(prefix, dist)
    [wheel] = dist.glob("trelay-*.whl")
    trelay = prefix / "bin" / "trelay"
    assert trelay.is_file()
    first = trelay.stat().st_mtime_ns
    # Again (an upgrade from a newer checkout): trelay is replaced, not kept as installed.
    make_install(prefix, dist)
    assert list(dist.glob("trelay-*.whl")) == [wheel]
    assert trelay.stat().st_mtime_ns != first
    # The unit's ExecStart= is `$(PREFIX)/bin/trelay serve ...`: it runs.
    venv = borrow_test_dependencies(prefix)
    result = run([trelay, "serve", "--help"], cwd=tmp_path, venv=venv)
    assert "--secrets-file" in result.stdout
    shebang = trelay.read_text().splitlines()[0]
    assert shlex.split(shebang.removeprefix("#!"))[0] == str(prefix / "bin" / "python")
