"""Serve an ASGI app (the operator app of `trelay.ops.http_app`) with hypercorn on trio.

Owns the operator port's socket and server loop: HTTP/1.1 (and h2c) over plain TCP,
one address per call.

Invariants (design §4):
- `task_status.started((host, port))` is called once the socket is bound and listening,
  with the port actually bound (port 0 asks for any free one);
- an address that cannot be bound raises `OSError` before `started` (the CLI turns it
  into a `ListenError` naming its `http.listen[i]` key);
- cancelling the caller's scope closes the listening socket and every connection
  (hypercorn's own graceful timeout is short, since only scrapes and probes come here);
- hypercorn logs through the `trelay.http` logger; no access log unless asked.
"""

from __future__ import annotations

import logging
import os
import socket

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import Framework

from trelay.config.values import format_host_port
from trelay.node.exhaustion import quiet_accept_retries

log = logging.getLogger(__name__)
GRACEFUL_SECONDS = 1.0

HostPort = tuple[str, int]


def http_config(sock: socket.socket, *, access_log: bool = False) -> Config:
    """hypercorn's settings for serving on a duplicate of `sock` (already bound)."""
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn closes its copy
    config.errorlog = log
    config.accesslog = logging.getLogger(f"{__name__}.access") if access_log else None
    config.graceful_timeout = GRACEFUL_SECONDS
    config.include_server_header = False
    return config


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (SO_REUSEADDR, as trio's listeners); OSError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_http(
    host: str,
    port: int,
    app: Framework,
    *,
    access_log: bool = False,
    task_status: trio.TaskStatus[HostPort] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on host:port until cancelled; report the bound (host, port) once bound.

    Binding happens here, before hypercorn starts, so that a bad address is a plain
    `OSError` (hypercorn's would come wrapped in exception groups). trio's accept loop
    under hypercorn logs at a bounded rate when descriptors run out (`quiet_accept_retries`).
    """
    quiet_accept_retries()
    with bind_socket(host, port) as sock:
        bound_host, bound_port = sock.getsockname()[:2]
        config = http_config(sock, access_log=access_log)

        async def run(task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(app, config, task_status=task_status)

        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            log.info("operator HTTP on http://%s", format_host_port(bound_host, bound_port))
            task_status.started((bound_host, bound_port))
