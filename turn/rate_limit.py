"""Per-source rate limit on unauthenticated requests (design §6).

Owns a token bucket per client IP. Only requests without MESSAGE-INTEGRITY spend tokens
(those are the ones an attacker can send for free and that make us compute a nonce);
authenticated traffic is never limited here. The table is bounded: idle buckets that
have refilled are dropped by `prune`, and past `max_sources` the oldest are evicted.
"""

from __future__ import annotations


class SourceRateLimiter:
    """`rate` requests per second with bursts of `burst`, per source IP."""

    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(self, rate: float = 20.0, burst: float = 40.0, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, last update)

    def allow(self, ip: str, now: float) -> bool:
        """Spend one token for `ip`; False means drop the request."""
        tokens, last = self._buckets.pop(ip, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self.max_sources:
            del self._buckets[next(iter(self._buckets))]  # oldest touched
        self._buckets[ip] = (tokens, now)  # re-insert: dict order is recency order
        return allowed

    def prune(self, now: float) -> None:
        """Forget sources whose bucket has refilled; they would start full anyway."""
        refill = self.burst / self.rate
        for ip in [ip for ip, (_, last) in self._buckets.items() if now - last >= refill]:
            del self._buckets[ip]

    def __len__(self) -> int:
        return len(self._buckets)
