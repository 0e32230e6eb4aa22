"""The one place a TURN-serving process joins the fleet's shared state (design §9).

Owns `run_node_link(settings, running)`: the single `trelay serve` process and each worker of
`trelay serve --workers N` run it beside their node. Without `[fleet]` it returns at
once and touches nothing. With `[fleet]` it opens the process's own `RedisStore` (or
uses the registry's, in `trelay serve`) and
runs, in one nursery, the followers that keep the node's in-memory copies of fleet-wide
state current (each a `trelay.fleet.follow` loop):

- revocations (`trelay.fleet.revocations`): the `FLEET` source of the node's
  `Revocations`, which its TURN authentication consults; a revoked identity's live
  allocations on this node are ended as the revocation arrives;
- TURN REST secrets (`trelay.fleet.secrets`): shared with the core's `SharedSecrets`
  beside the configured ones; `NodeLink.secrets.minting_secret` is what a token API in
  this process mints under;
- usage records (`trelay.fleet.usage_stream`): the node's records go to the stream
  `trelay:fleet:usage` instead of the log.

Each follower is one task start in `run_node_link`; what else a node follows (quotas,
usage records) is started there too: overflow (`trelay.fleet.overflow`: 300 to a healthy
node while this one is overloaded or draining) and the fleet-wide user quota
(`trelay.fleet.quotas`), both under the node's one id (`registry.node_id_of`).

Invariants: the node never imports this module (the process wires it); nothing here is
awaited by the data path or TURN authentication, which read the copies synchronously;
a lost Redis leaves the copies as they were until the store is back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import trio

from trelay.config.revocations import Revocations
from trelay.config.settings import Settings
from trelay.fleet.follow import follow, run_steps
from trelay.fleet.overflow import OverflowTask
from trelay.fleet.quotas import quota_sync_for
from trelay.fleet.registry import node_id_of
from trelay.fleet.revocations import RevocationFollower
from trelay.fleet.secrets import FleetSecrets, SecretFollower
from trelay.fleet.store import RedisStore
from trelay.fleet.usage_stream import run_usage_stream
from trelay.node.assembly import RunningNode

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeLink:
    """What a linked process holds: its store, and the copies its followers keep."""

    store: RedisStore
    revocations: Revocations
    secrets: FleetSecrets


async def run_node_link(
    settings: Settings,
    running: RunningNode,
    shared: RedisStore | None = None,
    *,
    task_status: trio.TaskStatus[NodeLink | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Follow the fleet's state for `running` until cancelled; `started` with the link
    (None, at once, without `[fleet]`). Nothing waits for Redis to answer.

    `shared`: a store the caller holds open for as long as this runs (`trelay serve`'s
    registry's: one connection, one log line when Redis is lost); default: its own."""
    if settings.fleet is None:
        task_status.started(None)
        return
    store = RedisStore(settings.fleet) if shared is None else shared
    revocations = _revocations_of(running)
    server = running.node.server
    # Until a fleet secret is active, a token API here mints under the configured one.
    fleet_secrets = FleetSecrets(next(iter(settings.auth.shared_secrets), None))

    def accept_secrets(held: tuple[str, ...]) -> None:
        for configured in server.auth.credentials.shared_secrets:
            configured.share(held)

    def end_revoked(identities: Iterable[str]) -> None:
        wanted = set(identities)
        for identity in {a.identity for a in server.allocations.values()} & wanted:
            ended = running.node.end_sessions(identity=identity)
            logger.info("fleet: revoked; %d allocation(s) ended", ended,
                        extra={"identity": identity})  # fmt: skip

    async with contextlib.AsyncExitStack() as stack:
        if shared is None:
            await stack.enter_async_context(store.opened())
        async with trio.open_nursery() as nursery:
            revoked = RevocationFollower(store, revocations, on_revoked=end_revoked)
            await nursery.start(follow, store, revoked)
            await nursery.start(follow, store, SecretFollower(store, fleet_secrets, accept_secrets))
            await nursery.start(run_usage_stream, store, settings, running)
            node_id = node_id_of(settings.fleet)
            await nursery.start(run_steps, OverflowTask(store, settings.fleet, server, node_id))
            await nursery.start(run_steps, quota_sync_for(store, settings.fleet, server, node_id))
            task_status.started(NodeLink(store, revocations, fleet_secrets))


def _revocations_of(running: RunningNode) -> Revocations:
    """The node's revocations: those of its file, which the fleet's become a second
    source of; a node without a file gets some now, and its TURN authentication checks
    them from now on (`NodeLink.revocations` is then what its token API consults)."""
    if running.revocations is not None:
        return running.revocations
    revocations = Revocations()
    running.node.server.auth.use_revocation_check(revocations.is_revoked)
    return revocations
