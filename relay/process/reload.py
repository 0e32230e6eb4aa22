"""Reload on SIGHUP: re-read the settings file and apply what can change while serving.

Owns the process side of a reload, for one process and for a supervisor with workers:
- `SettingsSource`: where the settings in force came from (the file and the flags), so a
  reload reads them the same way (`trelay.config.reload.reload_settings` decides, per
  key, what applies live and what waits for a restart; a bad file changes nothing);
- `apply_reload`: the live part on a running node (`trelay.node.live_settings`: TLS
  pair, users, secrets, peer lists, quotas, lifetimes) and on the process (log level);
  one log line says what changed, one warning per key that needs a restart;
- `Reloader`: one reload at a time, on SIGHUP or `POST /v1/reload` (the admin routes),
  applied to the node (one process) or by `Supervisor.apply_reload` (workers; each
  worker applies the same `Reload` when its control channel delivers it).

systemd is told RELOADING=1 before and READY=1 after (`Type=notify` with
`ExecReload=kill -HUP $MAINPID`: `systemctl reload` waits for the reload to finish). No
allocation is touched by a reload: a call running through it loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from trelay.config.flags import Flags
from trelay.config.reload import Reload, ReloadFailed, reload_settings
from trelay.config.settings import Settings
from trelay.node.assembly import RunningNode
from trelay.node.live_settings import PROCESS_KEYS, apply_live
from trelay.ops.admin_routes import Reloaded
from trelay.ops.logs import set_level
from trelay.process import systemd

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SettingsSource:
    """The settings file (None: flags and defaults only) and the flags given at start."""

    config: Path | None
    flags: Flags


class Reloader:
    """One reload at a time, from SIGHUP or `POST /v1/reload`, against the settings in
    force; `apply` puts a decided `Reload` into effect (on the node, or handed to every
    worker) and returns what changed."""

    def __init__(
        self,
        settings: Settings,
        source: SettingsSource,
        apply: Callable[[Reload], Awaitable[list[str]]],
    ) -> None:
        self.settings = settings
        self.source = source
        self._apply = apply
        self._lock = trio.Lock()

    async def reload(self) -> Reloaded:
        async with self._lock:
            systemd.reloading()
            try:
                return await self._reload()
            finally:
                systemd.notify("READY=1")

    async def on_hangups(self, hangups: AsyncIterator[int]) -> None:
        async for _ in hangups:
            await self.reload()

    async def _reload(self) -> Reloaded:
        # Reading and checking the file (TLS pair, secrets file) is blocking file I/O.
        result = await trio.to_thread.run_sync(
            reload_settings, self.settings, self.source.config, self.source.flags
        )
        if isinstance(result, ReloadFailed):
            logger.error("reload refused, the settings in force stay: %s", result)
            return Reloaded(refused=str(result))
        waiting = tuple(str(change) for change in result.restart)
        for change in waiting:
            logger.warning("reload: %s", change)
        applied = await self._apply(result)
        self.settings = result.settings
        return Reloaded(tuple(applied), waiting)


def apply_reload(running: RunningNode | None, result: Reload) -> list[str]:
    """Apply `result` to `running` (None: a supervisor, which has no node: its workers
    apply the node's part) and the process; log and return what changed."""
    lines: list[str] = []
    if running is None:
        lines += [str(change) for change in result.live if change.key not in PROCESS_KEYS]
    else:
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
    return lines
