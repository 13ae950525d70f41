"""Per-advertiser rate limits: a token bucket each, refilled at a steady rate.

The limit is the advertiser's across the deployment. Each collector replica holds its
share of it (`share`): the rate and the burst divided by the number of replicas, as the
collector learns it from `PIPELINE_COLLECTOR_PEERS`. Calls a load balancer spreads over the
replicas then meet the whole limit, and never more; a client that sends every call over
one kept-alive connection reaches one replica, and meets that replica's share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` calls per second on average per key, up to `burst` at once.

    Keys are advertiser ids from the registry, so the number of buckets is bounded by it.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._limit = (rate, float(burst))
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.replicas = 1

    def share(self, replicas: int) -> None:
        """Hold this replica's share of the limit when `replicas` enforce it together: the
        rate and the burst divided among them (a burst of at least one call)."""
        replicas = max(1, replicas)
        if replicas == self.replicas:
            return
        self.replicas = replicas
        rate, burst = self._limit
        self._rate = rate / replicas
        self._burst = max(1.0, burst / replicas)
        for bucket in self._buckets.values():
            bucket.tokens = min(bucket.tokens, self._burst)

    def acquire(self, key: str) -> float | None:
        """Take one call for `key`: None when allowed, else the seconds until one is."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self._rate

    def forget(self, keep: set[str]) -> None:
        """Drop the buckets of keys no longer in `keep` (advertisers removed)."""
        for key in [k for k in self._buckets if k not in keep]:
            del self._buckets[key]


def retry_after(seconds: float) -> int:
    """A `Retry-After` value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
