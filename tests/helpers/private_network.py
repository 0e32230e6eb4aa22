"""Run a test in a private network namespace: only `lo`, so nothing leaves the machine.

Issue 15 (Done when): tests of the peer policy that run a real node and name peers the
policy must deny (private, metadata, documentation or mapped addresses) run where a
permission wrongly granted cannot send a datagram, or open a connection, off the
machine. `@private_network` on such a test makes pytest run it again in a child process
under `unshare -n` (a new network namespace holding only the loopback interface, which
the child brings up), as `python -m pytest <the test's node id>`, and pass or fail with
that run. Inside the namespace (`PRIVATE_NETWORK_ENV` set), the decorator first checks
that `lo` is the only interface, then leaves the test as it is: fixtures, parameters,
trio and hypothesis work as in any other run.

In the parent process the test asks for no fixture (its parameters only, to be
collected once per parameter set), so nothing of it runs outside the namespace. Where no
private namespace can be made (not root and no user namespaces, no `unshare` or `ip`),
the test is skipped with that reason; the pure-core policy tests need none (they send
nothing).
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRIVATE_NETWORK_ENV = "TRELAY_TEST_PRIVATE_NETWORK"
# The child pytest: start-up, the test and its node (the fuzzer's examples take ~15 s).
CHILD_TIMEOUT = 100.0  # under pytest-timeout's 120 s for the parent test
PROBE_TIMEOUT = 10.0

Test = TypeVar("Test", bound=Callable[..., Any])


@functools.cache
def unshare_command() -> tuple[str, ...] | None:
    """`unshare -n` (as root) or `unshare -rn` (a user namespace), whichever works here."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    for command in (("unshare", "-n"), ("unshare", "-rn")):
        try:
            probe = subprocess.run(
                [*command, "ip", "link", "set", "lo", "up"],
                capture_output=True, timeout=PROBE_TIMEOUT, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return command
    return None


def unavailable_reason() -> str | None:
    """Why no private network namespace can be made here, or None."""
    if unshare_command() is None:
        return "no private network namespace here (unshare -n / -rn with ip link)"
    return None


def inside() -> bool:
    """True in the child process this module started."""
    return os.environ.get(PRIVATE_NETWORK_ENV) == "1"


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def run_in_private_network(node_id: str) -> subprocess.CompletedProcess[str]:
    """`python -m pytest node_id` in a new network namespace with `lo` up."""
    command = unshare_command()
    assert command is not None
    script = 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider "$1"'
    return subprocess.run(
        [*command, "sh", "-c", script, sys.executable, node_id],
        cwd=ROOT, env={**os.environ, PRIVATE_NETWORK_ENV: "1"},
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False,
    )  # fmt: skip


def private_network(test: Test) -> Test:
    """Run `test` in a private network namespace (module docstring). Put it above the
    test's `parametrize` marks, so that the parent collects the same parameter sets."""
    if inside():
        only = interfaces()
        if only != ["lo"]:
            raise RuntimeError(f"not a private network namespace: interfaces {only}")
        return test
    marks = list(getattr(test, "pytestmark", []))
    names = [
        name.strip()
        for mark in marks
        if mark.name == "parametrize"
        for name in (mark.args[0].split(",") if isinstance(mark.args[0], str) else mark.args[0])
    ]

    def in_namespace(request: pytest.FixtureRequest, **_: object) -> None:
        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        done = run_in_private_network(request.node.nodeid)
        output = (done.stdout + done.stderr)[-4000:]
        assert done.returncode == 0, f"in the private network namespace:\n{output}"
        assert " passed" in done.stdout, output  # not skipped or deselected there

    parameters = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    in_namespace.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    in_namespace.__name__ = test.__name__
    in_namespace.__qualname__ = test.__qualname__
    in_namespace.__doc__ = test.__doc__
    in_namespace.__module__ = test.__module__
    in_namespace.pytestmark = marks  # type: ignore[attr-defined]
    return in_namespace  # type: ignore[return-value]
