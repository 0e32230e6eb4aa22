"""trelay as `pip install` leaves it: one top-level package, `trelay`, and nothing else.

The wheel is built from the checkout once per module and installed into a fresh venv that
borrows the test dependencies (`tests.helpers.venvs`: offline, hatchling from the `test`
extra). The editable install's own `.pth` (the checkout root on sys.path, where `relay`,
`stun`, `turn` and the `trelay` link are importable) is not applied there: the probe checks
it, so what the venv imports as `trelay` is the wheel's copy.

A user project that owns packages named `relay`, `stun` and `turn` then runs the README's
relay-only test through the installed plugin (entry point `pytest11`, no conftest), under
`pytest` and under `python -m pytest` (which also puts the project first on sys.path before
the plugin loads). Its test calls its own modules and checks that every `relay`, `stun` and
`turn` module loaded is the project's and every `trelay` module the venv's, after the relay
ran. The call is relay-only, so it needs no host address besides loopback (aioice gathers
no host candidates under the relay policy; see tests/icekit/test_plugin_as_a_user.py).
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import stat
import sys
import textwrap
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from tests.helpers.user_project import CALL_WITHOUT_TRELAY
from tests.helpers.venvs import (
    CHECKOUT,
    PTH_NAME,
    InstalledVenv,
    borrow_test_dependencies,
    build_wheel,
    make_venv,
    pip_install_into,
    run,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout (bin/)")

PACKAGE = CHECKOUT / "relay"  # installed as trelay/
SHADOWED = ("relay", "stun", "turn")  # top-level names the wheel must not install


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` would install, built from the checkout with no network."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> InstalledVenv:
    """A fresh venv with the wheel installed, and the test dependencies borrowed."""
    root = tmp_path_factory.mktemp("venv")
    python = make_venv(root)
    pip_install_into(python, wheel)
    installed = borrow_test_dependencies(root)
    # The `pytest` command as pip writes console scripts; pytest itself is borrowed.
    script = root / "bin" / "pytest"
    script.write_text(
        f"#!{python}\nimport sys\nfrom pytest import console_main\n\n"
        "if __name__ == '__main__':\n    sys.exit(console_main())\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return installed


def absolute_imports(source: bytes) -> set[str]:
    """The top-level names a module imports absolutely (anywhere, lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def checkout_files() -> set[str]:
    """The files of relay/, its links to stun/ and turn/ followed, as wheel paths."""
    files = set()
    for directory, subdirectories, names in os.walk(PACKAGE, followlinks=True):
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        for name in names:
            relative = (Path(directory) / name).relative_to(PACKAGE).as_posix()
            files.add(f"trelay/{relative}")
    return files


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        entries = archive.infolist()
        names = [entry.filename for entry in entries]
        (dist_info,) = {n.partition("/")[0] for n in names if ".dist-info/" in n}
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        modules = {name: archive.read(name) for name in names if name.endswith(".py")}
    assert dist_info.startswith("trelay-")
    assert {PurePosixPath(name).parts[0] for name in names} == {"trelay", dist_info}
    # hatchling copied the linked folders' files: no link, no top-level stun/ or turn/.
    assert not [e.filename for e in entries if stat.S_ISLNK(e.external_attr >> 16)]
    packaged = {name for name in names if name.startswith("trelay/")}
    for required in ("__init__.py", "py.typed", "stun/__init__.py", "stun/message.py"):
        assert f"trelay/{required}" in packaged
    for required in ("turn/__init__.py", "node/__init__.py", "icekit/pytest_plugin.py"):
        assert f"trelay/{required}" in packaged
    # Every module of the checkout's package is in the wheel, and nothing else is.
    in_checkout = checkout_files()
    assert {f for f in in_checkout if f.endswith(".py")} <= packaged
    assert packaged <= in_checkout
    # No module imports the names that the checkout, but not an install, can provide.
    stray = {
        name: sorted(absolute_imports(source) & set(SHADOWED))
        for name, source in modules.items()
        if absolute_imports(source) & set(SHADOWED)
    }
    assert stray == {}
    points = configparser.ConfigParser()
    points.read_string(entry_points)
    assert dict(points["pytest11"]) == {"trelay": "trelay.icekit.pytest_plugin"}
    assert dict(points["console_scripts"]) == {"trelay": "trelay.process.cli:main"}


PROBE = """
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
import trelay

failed = {}
def record(name):
    failed[name] = repr(sys.exc_info()[1])
for info in pkgutil.walk_packages(trelay.__path__, "trelay.", onerror=record):
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        record(info.name)
dist = importlib.metadata.distribution("trelay")
print(json.dumps({
    "sys_path": sys.path,
    "failed": failed,
    "trelay": sorted(
        (name, getattr(module, "__file__", None) or str(list(module.__path__)))
        for name, module in sys.modules.items() if name.partition(".")[0] == "trelay"
    ),
    "findable": [name for name in SHADOWED if importlib.util.find_spec(name) is not None],
    "loaded": sorted(name for name in sys.modules if name.partition(".")[0] in SHADOWED),
    "distribution": str(dist.locate_file("")),
    "pytest11": [ep.value for ep in importlib.metadata.entry_points(group="pytest11")
                 if ep.name == "trelay"],
}))
""".replace("SHADOWED", repr(SHADOWED))


def test_the_venv_imports_trelay_from_the_install_only(
    venv: InstalledVenv, wheel: Path, tmp_path: Path
) -> None:
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert {p.name for p in venv.site_packages.iterdir()} == {"trelay", dist_info, PTH_NAME}
    with (venv.site_packages / dist_info / "RECORD").open() as record:
        installed = [line.partition(",")[0] for line in record if line.strip()]
    tops = {PurePosixPath(path).parts[0] for path in installed if not path.startswith("..")}
    assert tops == {"trelay", dist_info}
    # Every module of the package imports in the venv, from the venv (cwd: an empty folder).
    report = json.loads(run([venv.python, "-c", PROBE], cwd=tmp_path, venv=venv).stdout)
    assert report["failed"] == {}
    site = venv.site_packages.resolve()
    outside = [(n, f) for n, f in report["trelay"] if not Path(f).resolve().is_relative_to(site)]
    assert outside == []
    assert len(report["trelay"]) > 50  # stun, turn, node, icekit... all of it
    assert report["findable"] == []
    assert report["loaded"] == []
    assert Path(report["distribution"]).resolve() == site
    assert report["pytest11"] == ["trelay.icekit.pytest_plugin"]
    # The editable install's .pth was not applied: the checkout is not on sys.path.
    on_path = {Path(p or tmp_path).resolve() for p in report["sys_path"]}
    assert CHECKOUT not in on_path
    assert {p.resolve() for p in venv.borrowed} <= on_path


USER_PACKAGES = {
    "relay/__init__.py": '"""The project\'s own media relay: not trelay."""\n',
    "relay/media.py": "def mix(left, right):\n    return [a + b for a, b in zip(left, right)]\n",
    "stun/__init__.py": '"""The project\'s game effects."""\n',
    "stun/effects.py": "def stun(seconds):\n    return f'stunned for {seconds} s'\n",
    "turn/__init__.py": '"""The project\'s turn order."""\n',
    "turn/order.py": (
        "def next_turn(players, current):\n"
        "    return players[(players.index(current) + 1) % len(players)]\n"
    ),
}

USER_CONFIG = """
[project]
name = "arcade"
version = "1.0"

[tool.pytest.ini_options]
pythonpath = ["."]
addopts = "--strict-markers"
"""

# The README's relay-only test, with an aioice pair instead of aiortc (a dependency of trelay).
USER_TEST = (
    '''
import asyncio
import sys
from pathlib import Path

import aioice
import pytest

import relay.media
import stun.effects
import turn.order
from trelay.icekit import assert_relayed, connect_pair

PROJECT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix).resolve()
PAYLOAD = b"x" * 1000


def homes(module):
    found = getattr(module, "__file__", None)
    return [Path(p).resolve() for p in ([found] if found else module.__path__)]


def check_modules():
    """Every relay, stun and turn module is the project's, every trelay one the venv's."""
    own = {n: m for n, m in sys.modules.items() if n.partition(".")[0] in ("relay", "stun", "turn")}
    assert sorted(own) == [
        "relay", "relay.media", "stun", "stun.effects", "turn", "turn.order"
    ]
    for name, module in own.items():
        assert all(p.is_relative_to(PROJECT) for p in homes(module)), (name, module)
    kit = {n: m for n, m in sys.modules.items() if n.partition(".")[0] == "trelay"}
    assert "trelay.icekit.pytest_plugin" in kit
    for name, module in kit.items():
        assert all(p.is_relative_to(VENV) for p in homes(module)), (name, module)
    return kit


def play():
    assert relay.media.mix([1, 2], [3, 4]) == [4, 6]
    assert stun.effects.stun(3) == "stunned for 3 s"
    assert turn.order.next_turn(["ana", "bo"], "bo") == "ana"


'''
    + CALL_WITHOUT_TRELAY
    + """


def test_own_packages_before_the_relay():
    play()
    check_modules()


@pytest.mark.relay_only
def test_call_works_through_turn_only(turn_server):
    asyncio.run(call_without_trelay())
    assert turn_server.counters().client_to_peer_bytes >= len(PAYLOAD)
    play()
    kit = check_modules()
    assert "trelay.node.assembly" in kit  # the relay ran, and left the project's modules alone
    assert "trelay.stun.message" in kit and "trelay.turn.allocation" in kit
"""
)


def make_user_project(root: Path) -> Path:
    for name, text in {**USER_PACKAGES, "pyproject.toml": USER_CONFIG}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "tests").mkdir()
    (root / "tests" / "test_arcade.py").write_text(textwrap.dedent(USER_TEST).lstrip())
    return root


@pytest.mark.parametrize("command", [["pytest"], ["python", "-m", "pytest"]], ids=" ".join)
def test_a_project_with_its_own_relay_stun_turn_runs_the_readme_test(
    venv: InstalledVenv, command: list[str], tmp_path: Path
) -> None:
    project = make_user_project(tmp_path / "arcade")
    executable = venv.root / "bin" / command[0]  # the venv's, as on an activated PATH
    args: list[str | Path] = [executable, *command[1:], "-p", "no:cacheprovider", "-v"]
    result = run(args, cwd=project, venv=venv)
    assert re.search(r"^plugins: .*\btrelay-\S+", result.stdout, re.MULTILINE), result.stdout
    for name in ("test_own_packages_before_the_relay", "test_call_works_through_turn_only"):
        assert re.search(rf"tests/test_arcade\.py::{name} PASSED", result.stdout), result.stdout
    assert re.search(r"=+ 2 passed in ", result.stdout), result.stdout
