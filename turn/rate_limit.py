"""Limits on requests that do not authenticate (design §6, issue 15 "a neighbour can
lock out a shared address").

Owns `RateLimiter` (a bounded table of GCRA buckets, one float per key) and
`UnauthenticatedLimits`, the two bounds the core (`trelay.turn.server`) applies to the
requests anybody can send for free: unsigned requests (answered 401 with a nonce,
RFC 8489 §9.2.4 step 1), Binding requests (RFC 8489 §6.3), requests answered 400 before
authentication, and signed requests that fail authentication (400, 438, 401 for a
wrong MAC, which cost the server an HMAC per candidate key, §9.2.4 steps 2-5).
Authenticated traffic is never limited here.

Why not one bucket per source IP (the first design): users behind one NAT or
carrier-grade NAT share a source IP, and RFC 8656 §7.2 warns against per-address
quotas for that reason. One neighbour sending 200 unsigned requests a second kept the
IP's bucket (20/s, burst 40) empty, and the first Allocate of every other user behind
that IP was dropped at each retransmission: 4 of 6 failed. Whatever a limit per IP
refuses, a neighbour can make it refuse for everybody behind the IP. So:

1. **Per client transport address** (IP and port: one socket of one client; over TCP
   or TLS, one connection), `unauthenticated_rate` (20/s) with bursts of
   `unauthenticated_burst` (40). Every unsigned request, Binding or 400 spends one
   token before any work is done for it; a signed request spends one only when it
   fails, so authenticating clients spend nothing (and the challenge that took a
   source's last token does not block the signed request after it), while a source
   whose failures went beyond its burst is refused before any HMAC is computed, until
   it has paid them back at `unauthenticated_rate` (`Drop.RATE_LIMITED`). A neighbour
   flooding from its own sockets empties only its own buckets. A legitimate client
   needs one or two unsigned requests per allocation, and a Binding every few seconds
   at most. The nonce is bound to the client's address and port (`trelay.turn.nonces`),
   so a signed request reaches the MAC check only from a port that was challenged
   there: MAC checks that fail are bounded by `unauthenticated_rate` per challenged
   port, and the challenges an IP gets over UDP by 2.

2. **Per destination IP, in bytes**: the answers to those requests over UDP spend
   their size from the destination IP's bucket, `reflection_rate` (128 KiB/s) with
   bursts of `reflection_burst` (256 KiB); an answer that does not fit is not sent
   (`Drop.REFLECTION_LIMITED`), and an unsigned request or Binding whose destination
   has nothing left is refused before the nonce is minted. This is the bound on
   reflection: with a forged source anybody can make us send the 401 (at most 5x the
   request, as coturn's; `tests/turn/test_amplification.py`) or a Binding success
   (2.6x) to a victim, and 1. does not help, since a forger picks a new port for each
   request. It is per IP because that is what a victim is, and it is the one bound a
   neighbour shares with the others behind its IP, so it is set for a NAT of thousands
   of users: 128 KiB/s is about 1,300 challenges or 2,000 Binding answers a second
   (a few thousand WebRTC users each starting a call a minute and refreshing a
   server-reflexive binding every 10 s need a few hundred), about 1 Mbit/s at most to
   any victim per node. A neighbour must send over a thousand requests a second, from
   as many sockets, to reach it, and even then: signed requests are not refused by it
   before their MAC is checked (only their failures' answers are), so a user with a
   nonce still allocates; TCP and TLS answers are exempt (the handshake proves the
   source: no reflection); and the counter tells the operator.

Memory: each table holds at most `MAX_SOURCES` (65,536) keys, one float each: 22 MB
for both tables full, keys (address tuples, IP strings) included, measured with
tracemalloc under a flood of random forged sources; a key's bucket is forgotten once it has
refilled (`prune`, at most once a second) and the least recently used is evicted at
the bound. A flood of forged sources only evicts: an evicted key starts again full,
which is what a new user gets anyway, and a victim hit constantly stays the most
recently used.

GCRA (the generic cell rate algorithm) is a token bucket kept as one number, the
"theoretical arrival time" `tat`: spending `cost` moves it `cost / rate` seconds on, and
a spend is refused when that would put it more than `burst / rate` seconds ahead of now.

Operators set the four values (`[quotas]` in the settings file: `trelay.config.settings`),
and a reload changes them live (`UnauthenticatedLimits.retune`, through
`TurnServer.use_config`): the buckets are kept, since a `tat` means the same under any
rate ("this key's bucket is full again at `tat`"): a source in debt stays in debt for
the time it owed (its refusals neither forgotten nor multiplied), and from then on it
spends and refills at the new rate up to the new burst.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from trelay.turn.addressing import FiveTuple
from trelay.turn.stats import Drop

MAX_SOURCES = 65536
PRUNE_INTERVAL = 1.0  # seconds between two scans for refilled buckets
MIN_ANSWER = 20  # bytes: a STUN header, the least any answer costs (the pre-check)


class RateLimiter:
    """`rate` per second with bursts of `burst`, per key; at most `max_sources` keys."""

    __slots__ = ("_pruned", "_tat", "_tolerance", "burst", "max_sources", "rate")

    def __init__(self, rate: float, burst: float, max_sources: int = MAX_SOURCES) -> None:
        if not (rate > 0 and burst >= 1):  # NaN fails too
            raise ValueError("rate must be > 0 and burst >= 1")
        if max_sources < 1:
            raise ValueError("max_sources must be >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._tolerance = burst / rate
        # key -> when its bucket is full again, least recently used first. An OrderedDict:
        # a full table drops its first key at every new one, and a dict's first key lies
        # past every slot deleted before it (7.6 us a new source in a flood of them
        # instead of 0.24; issue 13 part 4).
        self._tat: OrderedDict[Hashable, float] = OrderedDict()
        self._pruned = float("-inf")

    def retune(self, rate: float, burst: float) -> None:
        """Use `rate` and `burst` from now on, keeping every key's bucket (its `tat`)."""
        if not (rate > 0 and burst >= 1):  # NaN fails too
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tolerance = burst / rate

    def _take(self, key: Hashable, now: float) -> float:
        """The key's tat (now for a new key), removed: the caller re-inserts it, so that
        dict order is least recently used first."""
        tat = self._tat.pop(key, now)
        return now if tat < now else tat

    def _put(self, key: Hashable, tat: float) -> None:
        if len(self._tat) >= self.max_sources:
            self._tat.popitem(last=False)  # the least recently used
        self._tat[key] = tat

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` for `key` if it fits; False means refuse (nothing spent)."""
        tat = self._take(key, now)
        after = tat + cost / self.rate
        allowed = after - now <= self._tolerance
        self._put(key, after if allowed else tat)
        return allowed

    def admits(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Whether `allow(key, now, cost)` would succeed; spends nothing."""
        tat = self._tat.get(key, now)
        return max(tat, now) + cost / self.rate - now <= self._tolerance

    def charge(self, key: Hashable, now: float, cost: float = 1.0) -> None:
        """Spend `cost` for `key` whether it fits or not: work already done (a failed
        MAC check). The debt is repaid at `rate` before `key` is admitted again."""
        self._put(key, self._take(key, now) + cost / self.rate)

    def prune(self, now: float) -> None:
        """Forget keys whose bucket has refilled (they would start full anyway); scans
        the table at most once every `PRUNE_INTERVAL` seconds."""
        if now - self._pruned < PRUNE_INTERVAL:
            return
        self._pruned = now
        for key in [key for key, tat in self._tat.items() if tat <= now]:
            del self._tat[key]

    def __len__(self) -> int:
        return len(self._tat)


class UnauthenticatedLimits:
    """The two bounds of the module docstring, as the core asks them."""

    __slots__ = ("per_destination", "per_source")

    def __init__(
        self,
        rate: float,
        burst: float,
        reflection_rate: float,
        reflection_burst: float,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.per_source = RateLimiter(rate, burst, max_sources)  # (IP, port) -> requests
        self.per_destination = RateLimiter(reflection_rate, reflection_burst, max_sources)

    def retune(
        self, rate: float, burst: float, reflection_rate: float, reflection_burst: float
    ) -> None:
        """New rates and bursts for both tables (a reload); their buckets are kept.
        ValueError, with neither table changed, if a pair is not a rate > 0 and a
        burst >= 1."""
        if not (rate > 0 and burst >= 1 and reflection_rate > 0 and reflection_burst >= 1):
            raise ValueError("rates must be > 0 and bursts >= 1")
        self.per_source.retune(rate, burst)
        self.per_destination.retune(reflection_rate, reflection_burst)

    def request(self, five_tuple: FiveTuple, now: float) -> Drop | None:
        """Before answering a request that cannot authenticate (unsigned, Binding, 400):
        spend the source's token; None to go on, else why to drop it."""
        if not self.per_source.allow(five_tuple.client, now):
            return Drop.RATE_LIMITED
        if _reflects(five_tuple) and not self.per_destination.admits(
            five_tuple.client[0], now, MIN_ANSWER
        ):
            return Drop.REFLECTION_LIMITED
        return None

    def signed(self, five_tuple: FiveTuple, now: float) -> Drop | None:
        """Before checking a signed request's MAC: refused only while its own source
        (address and port) is in debt, from failures beyond its burst; spends nothing
        (`failed` does). Not a token: the challenge before it may have spent the last."""
        admitted = self.per_source.admits(five_tuple.client, now, cost=0.0)
        return None if admitted else Drop.RATE_LIMITED

    def failed(self, five_tuple: FiveTuple, now: float) -> None:
        """A signed request did not authenticate: its source pays one token."""
        self.per_source.charge(five_tuple.client, now)

    def answer(self, five_tuple: FiveTuple, size: int, now: float) -> Drop | None:
        """Before sending an answer of `size` bytes to a request that did not
        authenticate: None to send it (spent), else why not."""
        if not _reflects(five_tuple) or self.per_destination.allow(five_tuple.client[0], now, size):
            return None
        return Drop.REFLECTION_LIMITED

    def prune(self, now: float) -> None:
        self.per_source.prune(now)
        self.per_destination.prune(now)

    def __len__(self) -> int:
        """Keys held in both tables."""
        return len(self.per_source) + len(self.per_destination)


def _reflects(five_tuple: FiveTuple) -> bool:
    """Over TCP, TLS and DTLS the handshake proved the source: what we send is no reflection."""
    return not five_tuple.transport.source_proven
