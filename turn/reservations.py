"""Port reservations: the next port an EVEN-PORT R=1 Allocate holds for later (RFC 8656
§7.2, §14.6, §14.9).

Owns what one reservation is. An Allocate with EVEN-PORT and the R bit gets an even
relayed port N, and the server holds N+1 (the runtime keeps it bound, a socket nobody
reads, so no other process or allocation takes it) for `RESERVATION_SECONDS` under a
RESERVATION-TOKEN of 8 random bytes. An Allocate carrying the token, from any 5-tuple
(§7.2: "the reservation is a server-wide reservation"), gets exactly that relayed
address; a token unknown or expired gets 508 (§7.2 step 5). When the 30 s run out the
runtime closes the held socket (`CloseRelay`) and the port goes back to the pool.

Bounds: a reservation counts toward the quotas (the reserving identity's, its source's
and the server total) like an allocation, from the moment its Allocate is held, so no
client holds more reserved ports than it could hold allocations.

Per worker: a token names a port of the worker that issued it (its slice of the relay
range, its own sockets), and with `--workers N` its first byte names that worker
(`new_token(worker, ...)`, `token_worker`); the other 7 bytes are random from `secrets`
(56 bits, for a token that lives 30 s: still unguessable). The kernel spreads UDP
clients across the workers by source (`trelay.process.reuseport_steering`), so an
Allocate with the token from another client port (the RTCP one) usually reaches another
worker: that worker hands it to the named one (`trelay.node.mobility_steering`), which
redeems it and captures the client's datagrams; over TCP/TLS the worker that accepted
the connection proxies it to the named one (`trelay.node.bind_proxy`). A token whose
first byte names a worker that issued no such token is unknown there: 508, as
anywhere. In a single process (`worker` None) all 8 bytes are random.
"""

from __future__ import annotations

import secrets
from collections.abc import Container
from dataclasses import dataclass

from trelay.turn.addressing import Address

# RFC 8656 §7.2: "the server SHOULD hold the reservation for approximately 30 seconds".
RESERVATION_SECONDS = 30.0
TOKEN_BYTES = 8  # RESERVATION-TOKEN's length (§14.9)


@dataclass(eq=False, slots=True)
class Reservation:
    """One reserved relayed address, held by the runtime until redeemed or expired.

    `identity` and `source` are the reserving client's: the quota slots it holds.
    Compared by identity (it keys the timer queue).
    """

    token: bytes
    relayed: Address  # the bound address (host, N+1)
    identity: str
    source: str
    expires_at: float


def new_token(worker: int | None, taken: Container[bytes]) -> bytes:
    """A RESERVATION-TOKEN not in `taken` (§14.9: unguessable, so only the client it was
    given to can redeem it): 8 bytes from `secrets`, the first naming `worker` if any."""
    if worker is not None and not 0 <= worker <= 0xFF:
        raise ValueError(f"worker index {worker} outside 0..255")
    while True:
        token = secrets.token_bytes(TOKEN_BYTES)
        if worker is not None:
            token = bytes((worker,)) + token[1:]
        if token not in taken:
            return token


def token_worker(token: bytes) -> int | None:
    """The worker a token of `new_token(worker, ...)` names; None for a token of another
    length (no worker's: the receiving worker's core answers it)."""
    return token[0] if len(token) == TOKEN_BYTES else None
