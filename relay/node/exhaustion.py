"""Running out of descriptors (or socket memory): counted, logged at a bounded rate.

Owns the node's answer to resource exhaustion (issue 15, design §6): when the process
reaches its descriptor limit (EMFILE, or the system's: ENFILE), or the kernel has no
memory for a socket (ENOBUFS, ENOMEM), the runtime refuses what needed the resource
(a new TCP/TLS connection is closed, an Allocate gets 508 through the core's
`relay_failed`) and tells `Exhaustion.refused`. That

- counts every refusal by (resource, what) for `trelay_resource_exhaustion_total`
  (`trelay.ops.metrics`): `resource` is `descriptors` or `memory`, `what` one of `WHAT`;
- logs at most one warning per `interval` seconds (default `LOG_SECONDS`), with the
  number of refusals since the previous line and the latest error, never a traceback:
  a process at its limit for an hour writes a few hundred lines, not megabytes;
- logs once that the resource is back (the first success after a warning line), so an
  operator sees when the condition ended; at most one such line per warning line.

A node's listeners and relay sockets share one `Exhaustion` (`TurnNode.exhaustion`).

The operator HTTP port is served by hypercorn, whose accept loop is trio's
`serve_listeners`: at the limit it logs a traceback every 0.1 s for as long as one
connection (a Prometheus scrape) waits. `quiet_accept_retries` puts a filter on that
logger: one line per `LOG_SECONDS` with the count since the previous one, no traceback.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

LOG_SECONDS = 10.0

DESCRIPTOR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
MEMORY_ERRNOS = frozenset({errno.ENOBUFS, errno.ENOMEM})
# Every error that means "no resource now, try later", not "this request is wrong".
EXHAUSTION_ERRNOS = DESCRIPTOR_ERRNOS | MEMORY_ERRNOS

# What could not be made: a client connection (accept), an allocation's relay socket,
# a channel's connected socket (the channel then keeps using the relay socket), a TCP
# allocation's connection to or from a peer (RFC 6062, `trelay.node.tcp_relay`).
ACCEPT, RELAY_SOCKET, CHANNEL_SOCKET = "accept", "relay_socket", "channel_socket"
PEER_CONNECTION = "peer_connection"
WHAT = (ACCEPT, RELAY_SOCKET, CHANNEL_SOCKET, PEER_CONNECTION)
RESOURCES = ("descriptors", "memory")


def resource_of(error: OSError) -> str | None:
    """`descriptors` or `memory` when `error` means that resource ran out, else None."""
    if error.errno in DESCRIPTOR_ERRNOS:
        return "descriptors"
    if error.errno in MEMORY_ERRNOS:
        return "memory"
    return None


def _every_pair() -> dict[tuple[str, str], int]:
    return {(resource, what): 0 for resource in RESOURCES for what in WHAT}


@dataclass(slots=True)
class Exhaustion:
    """Refusals for lack of a resource: `counts` by (resource, what), a bounded log."""

    interval: float = LOG_SECONDS
    counts: dict[tuple[str, str], int] = field(default_factory=_every_pair)
    unlogged: int = 0
    next_line: float = -math.inf
    # A warning was logged and nothing has succeeded since: the next success says so.
    warned: bool = False

    def refused(self, what: str, error: OSError, now: float, count: int = 1) -> None:
        """Count `count` refusals of `what` because of `error` (an `EXHAUSTION_ERRNOS`)."""
        resource = resource_of(error) or "descriptors"
        self.counts[(resource, what)] += count
        self.unlogged += count
        if now < self.next_line:
            return
        code = errno.errorcode.get(error.errno or 0, str(error.errno))
        logger.warning(
            "out of %s (%s: %s): %d refused since the last such line (latest: %s); new "
            "connections are closed and Allocates answered 508 until it frees up",
            resource, code, os.strerror(error.errno or 0), self.unlogged, what.replace("_", " "),
        )  # fmt: skip
        self.unlogged = 0
        self.next_line = now + self.interval
        self.warned = True

    def succeeded(self) -> None:
        """What `refused` refused worked again: say so once after a warning line."""
        if self.warned:
            self.warned = False
            logger.warning(
                "resources available again (%d refused since the last line)", self.unlogged
            )
            self.unlogged = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# trio's logger for `serve_listeners`' accept retries (EMFILE, ENFILE, ENOMEM, ENOBUFS).
TRIO_ACCEPT_LOGGER = "trio.serve_listeners"


class AcceptRetryFilter(logging.Filter):
    """Lets one of trio's accept-retry records through per `interval` seconds, without
    its traceback and with the number of retries since the last one let through."""

    def __init__(self, interval: float = LOG_SECONDS, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.suppressed = 0
        self.next_line = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if now < self.next_line:
            self.suppressed += 1
            return False
        record.msg = f"{record.getMessage()} (%d such lines since the last one shown)"
        record.args = (self.suppressed + 1,)
        record.exc_info = record.exc_text = None
        self.suppressed = 0
        self.next_line = now + self.interval
        return True


def quiet_accept_retries() -> None:
    """Filter trio's accept-retry log (idempotent: one filter per process)."""
    log = logging.getLogger(TRIO_ACCEPT_LOGGER)
    if not any(isinstance(f, AcceptRetryFilter) for f in log.filters):
        log.addFilter(AcceptRetryFilter())
