"""The coredis client of the fleet's Redis: one endpoint (`redis_url`) or the primary that
Redis Sentinel names (`redis_sentinels`, `redis_sentinel_service`).

Owns how a client is built from `FleetSettings`, nothing about its state (that is
`trelay.fleet.store`). Both kinds are bounded the same way: connect and stream timeouts
of the store's call timeout, and no retries inside coredis (the store owns reconnection).

Sentinel (design §9): every new connection asks the sentinels, in turn, for the address
of the service's primary (`SENTINEL GET-MASTER-ADDR-BY-NAME`), and checks that the server
there says ROLE master; when the address changes, coredis drops the connections to the
old one. So after a failover the store's next probe reaches the promoted replica. The
sentinels get the same TLS and timeouts and their own password, not the primary's.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
from coredis.connection import TCPLocation
from coredis.exceptions import ConnectionError, PrimaryNotFoundError
from coredis.retry import NoRetryPolicy

from trelay.config.fleet_settings import FleetSettings

Client = coredis.Redis[str]


def redis_client(
    settings: FleetSettings, call_timeout: float
) -> AbstractAsyncContextManager[Client]:
    """The client to enter (`async with`) for the fleet's Redis; nothing connects yet.
    `call_timeout` bounds connecting and each answer."""
    if settings.redis_url is not None:
        client: Client = coredis.Redis.from_url(
            settings.redis_url,
            password=settings.redis_password,
            decode_responses=True,
            stream_timeout=call_timeout,
            connect_timeout=call_timeout,
            retry_policy=NoRetryPolicy(),
        )
        return client
    return _sentinel_primary(settings, {"stream_timeout": call_timeout,
                                        "connect_timeout": call_timeout})  # fmt: skip


def _rediss_context(ca_file: Path | None) -> ssl.SSLContext:
    # What coredis makes of a rediss:// URL (with ?ssl_ca_certs=), so that redis_tls = true
    # is the same TLS as the URL path: the system's CAs and `ca_file`, no hostname check.
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class _Sentinel(coredis.Sentinel[str]):
    """coredis's Sentinel, saying why no sentinel named a primary (coredis says only that
    none did: a refused TLS certificate or a dead sentinel would read as a wrong name)."""

    async def discover_primary(self, service_name: str) -> tuple[str, int]:
        reasons: list[str] = []
        for index, sentinel in enumerate(self.sentinels):
            where = sentinel.connection_pool.location
            try:
                address = await sentinel.sentinel_get_master_addr_by_name(service_name)
            except (ConnectionError, TimeoutError) as exc:
                reasons.append(f"{where}: {_why(exc)}")
                continue
            if not address:
                reasons.append(f"{where}: monitors no {service_name!r}")
                continue
            # The one that answered is asked first next time (as coredis does).
            self.sentinels.insert(0, self.sentinels.pop(index))
            return str(address[0]), int(address[1])
        raise PrimaryNotFoundError(f"no sentinel named a primary ({'; '.join(reasons)})")


def _why(exc: BaseException) -> str:
    # coredis's "Unable to establish a connection" hides the cause (refused, TLS, ...).
    cause = exc.__cause__ or exc.__context__
    return str(cause or exc) or type(exc).__name__


@asynccontextmanager
async def _sentinel_primary(
    settings: FleetSettings, common: dict[str, Any]
) -> AsyncIterator[Client]:
    assert settings.redis_sentinel_service is not None
    if settings.redis_tls:
        common["ssl_context"] = _rediss_context(settings.redis_tls_ca_file)
    sentinel: coredis.Sentinel[str] = _Sentinel(
        [TCPLocation(s.host, s.port) for s in settings.redis_sentinels],
        sentinel_kwargs={**common, "password": settings.redis_sentinel_password},
        decode_responses=True,
        retry_policy=NoRetryPolicy(),
        **common,
    )
    primary = sentinel.primary_for(
        settings.redis_sentinel_service,
        password=settings.redis_password,
        db=settings.redis_database,
    )
    async with sentinel, primary:
        yield primary
