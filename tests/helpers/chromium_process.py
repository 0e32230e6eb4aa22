"""Headless Chromium in its own process (for a network namespace), driven over JSON lines.

Selenium talks to chromedriver, and chromedriver to Chromium, over the loopback of the
namespace they run in, so a browser inside `ip netns exec` must be driven from inside
it too. Run as `python -m tests.helpers.chromium_process PROFILE_DIR` (in a namespace:
`NatLab.popen("pub", ...)`): it starts `tests.helpers.chromium.headless_chromium` (the
Debian binaries, offline, no loopback in ICE gathering: the TURN servers are on real
interfaces; no name resolution, `NAMESPACE_FLAGS`), then reads one JSON command per
line on stdin and writes one JSON line per command on stdout:

    out {"event": "started", "seconds"}                          the browser is up
    in  {"op": "run", "script": PATH, "args": {...}}             about:blank, then the
    out {"event": "result", "result", "console", "seconds"}      async script at PATH with
                                                                 `args` as arguments[0]
    in  {"op": "execute", "script": JS}  out {"event": "executed", "result"}
    in  {"op": "quit"} or end of input: the browser quits, exit 0

"console" is what the page logged (Chromium's console), for diagnostics. An unexpected
exception is one last line {"event": "error", "error"} (exit 1). Every wait is bounded by
`tests.helpers.chromium` (page load, script, each chromedriver call); `ChromiumProcess`
is the test's side, every read bounded too.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from selenium import webdriver

from tests.helpers.chromium import headless_chromium
from tests.helpers.ice_agent import JsonLines

# Above chromium.SCRIPT_TIMEOUT: a script that times out is answered (as an error) first.
READ_TIMEOUT = 45.0
START_TIMEOUT = 30.0
# Every host name fails at once. A lab namespace has a default route (through its NAT)
# but no DNS server it can reach: Chromium's own first page then waits on name lookups
# that time out, and every WebDriver command meanwhile ends in "Timed out receiving
# message from renderer". The tests name their TURN servers by IP address.
NAMESPACE_FLAGS = ("--host-resolver-rules=MAP * ~NOTFOUND",)


def _emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _console(browser: webdriver.Chrome) -> list[object]:
    # Selenium leaves get_log unannotated; it returns the console entries as dicts.
    entries = browser.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry.get("message") for entry in entries]


def _serve(browser: webdriver.Chrome) -> None:
    for line in sys.stdin:
        command = json.loads(line)
        op = command.get("op")
        if op == "quit":
            return
        started = time.monotonic()
        if op == "run":
            script = Path(command["script"]).read_text(encoding="utf-8")
            browser.get("about:blank")
            result = browser.execute_async_script(script, command.get("args", {}))
            seconds = round(time.monotonic() - started, 3)
            _emit("result", result=result, console=_console(browser), seconds=seconds)
        elif op == "execute":
            _emit("executed", result=browser.execute_script(command["script"]))
        else:
            raise ValueError(f"unknown op {op!r} in {line!r}")


def main(argv: list[str]) -> int:
    (profile,) = argv
    directory = Path(profile)
    started = time.monotonic()
    try:
        with headless_chromium(
            directory / "profile",
            directory / "chromedriver.log",
            allow_loopback=False,
            extra_flags=NAMESPACE_FLAGS,
        ) as browser:
            _emit("started", seconds=round(time.monotonic() - started, 3))
            _serve(browser)
    except Exception as exc:  # the test shows it (this process's last line)
        _emit("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


class ChromiumProcess(JsonLines):
    """The test's handle on a browser process (module docstring): commands in, lines out."""

    def __init__(self, process: subprocess.Popen[bytes], name: str, log_path: Path) -> None:
        super().__init__(process, name, log_path)
        assert process.stdin is not None
        self._stdin: IO[bytes] = process.stdin
        self.started = self.expect("started", START_TIMEOUT)

    def send(self, command: dict[str, Any]) -> None:
        self._stdin.write(json.dumps(command).encode() + b"\n")
        self._stdin.flush()

    def expect(self, event: str, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        """The next line, which must be `event` (else AssertionError with the log)."""
        message = self.read(timeout)
        if message.get("event") != event:
            raise AssertionError(f"{self.name}: expected {event}, got {message}\n{self.log_tail()}")
        return message

    def run(self, script: Path, args: dict[str, Any]) -> dict[str, Any]:
        """Run the async `script` on about:blank: its result line."""
        self.send({"op": "run", "script": str(script), "args": args})
        return self.expect("result")

    def execute(self, script: str) -> object:
        self.send({"op": "execute", "script": script})
        return self.expect("executed")["result"]

    def close(self) -> None:
        """Quit the browser (end of input), bounded; kill it if it does not go."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self._stdin.close()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
