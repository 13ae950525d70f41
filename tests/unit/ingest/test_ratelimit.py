"""Per-advertiser rate limits: a burst at once, then the average rate, per key."""

from __future__ import annotations

import pytest

from pipeline.ingest.ratelimit import RateLimiter, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_then_a_wait_to_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)

    assert [limiter.acquire("shop-1") for _ in range(3)] == [None, None, None]
    wait = limiter.acquire("shop-1")
    assert wait == pytest.approx(0.5)
    assert retry_after(wait or 0) == 1
    clock.now += 0.5
    assert limiter.acquire("shop-1") is None
    assert limiter.acquire("shop-1") is not None


def test_each_advertiser_has_its_own_bucket_and_removed_ones_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.1, burst=1, clock=clock)

    assert limiter.acquire("shop-1") is None
    assert limiter.acquire("shop-1") is not None
    assert limiter.acquire("shop-2") is None
    limiter.forget({"shop-2"})
    assert limiter.acquire("shop-1") is None, "a forgotten bucket starts full again"


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=100.0, burst=2, clock=clock)
    limiter.acquire("shop-1")
    clock.now += 3600

    assert [limiter.acquire("shop-1") is None for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (1.0, 0)])
def test_a_limit_must_allow_something(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimiter(rate=rate, burst=burst, clock=Clock())


@pytest.mark.parametrize(("seconds", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (30.0, 30)])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: int) -> None:
    assert retry_after(seconds) == header


def test_replicas_share_the_limit_so_that_together_they_allow_it_once() -> None:
    clock = Clock()
    replicas = [RateLimiter(rate=6.0, burst=6, clock=clock) for _ in range(3)]
    for limiter in replicas:
        limiter.share(3)

    # Calls spread over the three replicas: the burst of 6, then 6 per second, in all.
    allowed = sum(limiter.acquire("shop-1") is None for limiter in replicas for _ in range(5))
    assert allowed == 6
    clock.now += 1.0
    allowed = sum(limiter.acquire("shop-1") is None for limiter in replicas for _ in range(5))
    assert allowed == 6


def test_a_replica_alone_again_holds_the_whole_limit() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=4.0, burst=4, clock=clock)
    limiter.share(4)
    assert [limiter.acquire("shop-1") is None for _ in range(2)] == [True, False]

    limiter.share(1)
    clock.now += 1.0
    assert sum(limiter.acquire("shop-1") is None for _ in range(6)) == 4
