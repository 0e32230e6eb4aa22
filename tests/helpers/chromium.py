"""Headless Debian Chromium under Selenium, for browser interop tests (design §7).

Owns how the browser is started: only the Debian binaries (/usr/bin/chromium and
/usr/bin/chromedriver) are used, and Selenium Manager - which would otherwise look for
and download a browser and driver of its own - is never run: the driver path is given
to `Service`, SE_OFFLINE is set, and `SeleniumManager.binary_paths` is replaced by a
function that fails while the driver starts, so a change in Selenium's lookup order
fails the test instead of downloading anything.

Invariants: every browser gets a fresh profile directory; every wait is bounded (page
load, script, and the HTTP calls to chromedriver); the driver is always quit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from unittest import mock

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.remote_connection import RemoteConnection

from trelay.icekit.loopback_relay import LoopbackRelay
from trelay.turn.allocation import Allocation

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCRIPT_TIMEOUT = 30.0
PAGE_LOAD_TIMEOUT = 10.0
# Each HTTP call from Selenium to chromedriver once the session is up (the session
# start itself is bounded by the 120 s Selenium gives ChromiumRemoteConnection).
COMMAND_TIMEOUT = 60

# design §7: headless, no sandbox (CI runs as root in a container), no GPU, and nothing
# that talks to the network by itself (first-run pages, component updates, sync,
# background fetches).
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LOOPBACK_FLAG = "--allow-loopback-in-peer-connection"
# Beyond design §7. Checked and not needed for a relay-only call on loopback:
# --disable-quic (WebRTC's TURN client never uses QUIC) and any flag for mDNS host
# candidates (a relay-only connection gathers no host candidates).
EXTRA_FLAGS = (
    # Let WebRTC enumerate the loopback interface too. Chromium leaves it out of ICE
    # gathering unless this is set; a runner whose only interface is `lo` would then
    # have no local socket to reach the TURN server on 127.0.0.1 from, and gather nothing.
    LOOPBACK_FLAG,
    # Containers often mount a 64 MB /dev/shm; Chromium's shared memory there can run out
    # and crash the renderer. Debian's launcher adds this by itself only when its
    # free-space check works (it fails when findmnt prints more than one line).
    "--disable-dev-shm-usage",
)


def missing_binaries() -> list[str]:
    """The Debian Chromium binaries that are not installed (empty when both are)."""
    return [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]


def _no_selenium_manager(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("Selenium Manager must not run: it may download a browser or driver")


@contextmanager
def headless_chromium(
    profile: Path,
    driver_log: Path,
    *,
    allow_loopback: bool = True,
    extra_flags: Sequence[str] = (),
) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile in `profile`; quit when the block ends.

    Chromium's console is kept (`driver.get_log("browser")`), and chromedriver's own
    log goes to `driver_log`. `allow_loopback=False` leaves out
    `--allow-loopback-in-peer-connection`: where the TURN servers are on a real
    interface (a network namespace), a loopback socket could only add a useless
    TurnPort (and allocation) per ICE server. `extra_flags` are added to the rest.
    """
    options = Options()
    options.binary_location = str(CHROMIUM)
    extra = [f for f in EXTRA_FLAGS if allow_loopback or f != LOOPBACK_FLAG]
    for flag in (*BASE_FLAGS, *extra, *extra_flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(driver_log))
    with (
        mock.patch.dict(os.environ, {"SE_OFFLINE": "true"}),
        mock.patch.object(SeleniumManager, "binary_paths", _no_selenium_manager),
    ):
        driver = webdriver.Chrome(options=options, service=service)
    try:
        executor = driver.command_executor
        assert isinstance(executor, RemoteConnection)
        executor.client_config.timeout = COMMAND_TIMEOUT
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        driver.set_script_timeout(SCRIPT_TIMEOUT)
        yield driver
    finally:
        driver.quit()


def diagnostics(result: object, browser: webdriver.Chrome) -> str:
    """What a failed browser test prints: the page's result and the browser console."""
    # Selenium leaves get_log unannotated; it returns the console entries as dicts.
    entries = browser.get_log("browser")  # type: ignore[no-untyped-call]
    console = [entry.get("message") for entry in entries]
    return f"page result: {result!r}\nbrowser console: {console!r}"


RELEASE_TIMEOUT = 10.0


def wait_for_no_allocations(relay: LoopbackRelay) -> int:
    """Poll (bounded) until the relay holds no allocation; the count left is returned."""
    deadline = time.monotonic() + RELEASE_TIMEOUT
    while relay.allocations and time.monotonic() < deadline:
        time.sleep(0.05)
    return relay.allocations


def check_relayed_call(
    call: dict[str, Any],
    result: object,
    browser: webdriver.Chrome,
    allocations: list[Allocation],
    message: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What every relay-only browser call must show (`relay_call.js`'s result `call`):
    relayed candidates only, relay/relay selected pairs facing each other, and those
    pairs running between relayed addresses the relay handed out. Returns the pairs."""
    assert (call["received"], call["echo"]) == (message, "echo:" + message)
    for side in ("caller", "callee"):
        gathered = call["candidates"][side]
        assert gathered, diagnostics(result, browser)
        assert all(" typ relay " in candidate for candidate in gathered), gathered
    caller, callee = call["pairs"]
    for pair in (caller, callee):
        assert pair is not None, diagnostics(result, browser)
        assert (pair["localType"], pair["remoteType"]) == ("relay", "relay"), pair
    assert (caller["remote"], callee["remote"]) == (callee["local"], caller["local"])
    assert len(allocations) >= 2
    relayed = {f"{a.relayed[0]}:{a.relayed[1]}" for a in allocations}
    assert {caller["local"], callee["local"]} <= relayed, (relayed, caller, callee)
    return caller, callee
