"""systemd's service notifications (sd_notify(3)), spoken directly: readiness, reload,
stopping and the watchdog, for a unit with `Type=notify` (or `notify-reload`).

Owns the one datagram protocol systemd gives a service: newline-separated `KEY=VALUE`
fields sent to the AF_UNIX datagram socket named by `$NOTIFY_SOCKET` (a path, or an
abstract name when it starts with "@"). Without `$NOTIFY_SOCKET` (not run by systemd)
every call is a no-op that returns False, so callers need no condition of their own.
The watchdog interval is half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises,
and only when `$WATCHDOG_PID` is unset or names this process.

Fields used by trelay: READY=1 once the ready line is out, RELOADING=1 with
MONOTONIC_USEC while settings are re-read (then READY=1), STOPPING=1 when a drain
starts, STATUS=<text> for `systemctl status`, WATCHDOG=1 while the event loop runs.
"""

from __future__ import annotations

import os
import socket
import time

import trio

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send `fields` ("READY=1", ...) to systemd; False when not run under systemd."""
    environment = os.environ if environ is None else environ
    address = environment.get(NOTIFY_SOCKET, "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto("\n".join(fields).encode(), address)
        except OSError:
            return False  # systemd gone or the socket unreachable: nothing to tell
    return True


def reloading() -> bool:
    """RELOADING=1 with the monotonic time, as `Type=notify-reload` requires."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings, or None when no watchdog is asked for."""
    environment = os.environ if environ is None else environ
    usec = environment.get("WATCHDOG_USEC", "")
    pid = environment.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


async def keep_watchdog(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Ping the watchdog for as long as the trio loop runs (returns at once without one).

    A ping proves the event loop still schedules tasks: a loop stuck in a busy batch or
    deadlocked stops pinging, and systemd restarts the service.
    """
    interval = watchdog_interval()
    task_status.started()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(interval)
