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
range, its own sockets). Over UDP the kernel spreads 5-tuples across `--workers` by
hash, so with more than one worker an Allocate with the token from another client
port reaches the issuing worker one time in N (the others answer 508, as for an
unknown token).
"""

from __future__ import annotations

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
