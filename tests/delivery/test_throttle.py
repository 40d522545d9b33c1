"""The token bucket and the per-domain throttle, checked by their arithmetic (no sleeping)."""

from __future__ import annotations

import pytest

from notifier.throttle import DomainThrottle, TokenBucket


def test_throttle_bucket_starts_full_then_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=3, now=100.0)
    assert bucket.take(5, now=100.0) == 3  # the burst
    assert bucket.take(1, now=100.0) == 0
    assert bucket.wait_time(now=100.0) == pytest.approx(0.1)
    assert bucket.take(1, now=100.05) == 0  # half a token
    assert bucket.take(1, now=100.1) == 1
    assert bucket.take(10, now=101.0) == 3  # a long pause saves up no more than capacity


def test_throttle_bucket_rate_over_a_long_run() -> None:
    bucket = TokenBucket(rate=50, capacity=5, now=0.0)
    taken = sum(bucket.take(1, now=t / 1000) for t in range(10_001))  # every ms, 0-10 s
    assert taken == 5 + 50 * 10  # the burst, then exactly the rate


def test_throttle_bucket_default_capacity_and_unlimited() -> None:
    assert TokenBucket(rate=100).capacity == 10  # a tenth of a second's worth
    assert TokenBucket(rate=2).capacity == 1  # never less than one message
    unlimited = TokenBucket(rate=0)
    assert unlimited.take(1000, now=0.0) == 1000
    assert unlimited.wait_time(now=0.0) == 0.0
    with pytest.raises(ValueError):
        TokenBucket(rate=-1)


def test_throttle_domain_parks_only_the_busy_domain() -> None:
    throttle: DomainThrottle[str] = DomainThrottle(rate=2)  # 2 a second, burst 1
    assert throttle.offer("big.example", "b1", now=0.0) == "b1"
    assert throttle.offer("big.example", "b2", now=0.0) is None  # parked
    assert throttle.offer("big.example", "b3", now=0.1) is None  # parked behind b2
    assert throttle.offer("small.example", "s1", now=0.1) == "s1"  # not held up
    assert throttle.parked_count == 2
    assert throttle.next_release() == pytest.approx(0.5)
    assert throttle.release(now=0.4) == []
    assert throttle.release(now=0.5) == ["b2"]
    assert throttle.release(now=1.0) == ["b3"]
    assert throttle.parked_count == 0
    assert throttle.next_release() is None


def test_throttle_domain_keeps_order_within_a_domain() -> None:
    throttle: DomainThrottle[int] = DomainThrottle(rate=1)
    first = [throttle.offer("d.example", i, now=0.0) for i in range(4)]
    assert first == [0, None, None, None]
    released = [x for t in range(1, 5) for x in throttle.release(now=float(t))]
    assert released == [1, 2, 3]


def test_throttle_domain_unlimited_passes_everything() -> None:
    throttle: DomainThrottle[int] = DomainThrottle(rate=0)
    assert [throttle.offer("d.example", i, now=0.0) for i in range(3)] == [0, 1, 2]
