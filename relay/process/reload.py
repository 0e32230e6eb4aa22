"""Reload on SIGHUP: re-read the settings file and apply what can change while serving.

Owns the process side of a reload, for one process and for a supervisor with workers:
- `SettingsSource`: where the settings in force came from (the file and the flags), so a
  reload reads them the same way (`trelay.config.reload.reload_settings` decides, per
  key, what applies live and what waits for a restart; a bad file changes nothing);
- `apply_reload`: the live part on a running node (`trelay.node.live_settings`: TLS
  pair, users, secrets, peer lists, quotas, lifetimes) and on the process (log level);
  one log line says what changed, one warning per key that needs a restart;
- `reload_on_hangup` (one process) and `Supervisor.reload` (workers; each worker applies
  the same `Reload` when its control channel delivers it).

systemd is told RELOADING=1 before and READY=1 after (`Type=notify` with
`ExecReload=kill -HUP $MAINPID`: `systemctl reload` waits for the reload to finish). No
allocation is touched by a reload: a call running through it loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio

from trelay.config.flags import Flags
from trelay.config.reload import Reload, ReloadFailed, reload_settings
from trelay.config.settings import Settings
from trelay.node.assembly import RunningNode
from trelay.node.live_settings import PROCESS_KEYS, apply_live
from trelay.ops.logs import set_level
from trelay.process import systemd

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SettingsSource:
    """The settings file (None: flags and defaults only) and the flags given at start."""

    config: Path | None
    flags: Flags


async def decide_reload(settings: Settings, source: SettingsSource) -> Reload | None:
    """The reload of `source` against `settings`, or None (logged) when the file is bad."""
    # Reading and checking the file (TLS pair, secrets file) is blocking file I/O.
    result = await trio.to_thread.run_sync(reload_settings, settings, source.config, source.flags)
    if isinstance(result, ReloadFailed):
        logger.error("reload refused, the settings in force stay: %s", result)
        return None
    for change in result.restart:
        logger.warning("reload: %s", change)
    return result


def apply_reload(running: RunningNode | None, result: Reload) -> None:
    """Apply `result` to `running` (None: a supervisor, which has no node) and the process."""
    lines: list[str] = []
    if running is not None:
        applied = apply_live(running, result)
        lines += applied.changed
        for problem in applied.failed:
            logger.error("reload: %s", problem)
    level = result.applies(*PROCESS_KEYS)
    if level:
        lines += [str(change) for change in result.live if change.key in PROCESS_KEYS]
    # Said at the level in force before the reload, so a reload that raises the level
    # to "warning" still leaves its own line.
    logger.info("reloaded: %s", "; ".join(lines) or "nothing changed")
    if level:
        set_level(result.settings.log_level.logging_level)


async def reload_on_hangup(
    hangups: AsyncIterator[int], running: RunningNode, settings: Settings, source: SettingsSource
) -> None:
    """Reload the single-process node on every SIGHUP, for as long as it serves."""
    async for _ in hangups:
        systemd.reloading()
        result = await decide_reload(settings, source)
        if result is not None:
            apply_reload(running, result)
            settings = result.settings
        systemd.notify("READY=1")
