"""Throttling: a token bucket for the overall rate, and one per recipient domain.

The arithmetic takes the time as an argument (`now`, seconds on a monotonic clock), so it
can be tested exactly, without sleeping; the sending loop passes `time.monotonic()`.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up; rate 0 means unlimited.

    A full bucket lets a burst of `capacity` go at once, then one token every 1/rate s.
    """

    def __init__(self, rate: float, capacity: float | None = None, *, now: float = 0.0) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.rate = rate
        # Default burst: a tenth of a second's worth, at least one message.
        self.capacity = max(1.0, capacity if capacity is not None else rate / 10)
        self.tokens = self.capacity
        self.updated = now

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, wanted: int, now: float) -> int:
        """Take up to `wanted` whole tokens available now; returns how many were taken."""
        if self.unlimited:
            return wanted
        self._refill(now)
        got = min(wanted, int(self.tokens + 1e-9))
        self.tokens -= got
        return got

    def wait_time(self, now: float, tokens: float = 1.0) -> float:
        """Seconds until `tokens` are available (0 if they are now)."""
        if self.unlimited:
            return 0.0
        self._refill(now)
        missing = min(tokens, self.capacity) - self.tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate


class DomainThrottle(Generic[T]):
    """At most `rate` messages a second to any one recipient domain, without holding up
    the others: a message for a domain that is over its rate is parked, in order, and
    released when that domain's bucket has a token again.

    Large providers defer bursts from one sender; spreading each domain's share keeps
    them from doing so, while small domains go at full speed.
    """

    def __init__(self, rate: float, *, burst: float = 1.0) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._parked: dict[str, deque[T]] = {}
        self._ready: list[tuple[float, str]] = []  # (time a token is due, domain)
        self.parked_count = 0

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def _bucket(self, domain: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(domain)
        if bucket is None:
            bucket = self._buckets[domain] = TokenBucket(self.rate, self.burst, now=now)
        return bucket

    def offer(self, domain: str, item: T, now: float) -> T | None:
        """The item back if it may go now; otherwise None (it is parked for later)."""
        if self.unlimited:
            return item
        queue = self._parked.get(domain)
        bucket = self._bucket(domain, now)
        if not queue and bucket.take(1, now):
            return item
        if queue is None:
            queue = self._parked[domain] = deque()
        if not queue:
            heapq.heappush(self._ready, (now + bucket.wait_time(now), domain))
        queue.append(item)
        self.parked_count += 1
        return None

    def release(self, now: float) -> list[T]:
        """Parked items whose domain has a token now, oldest first per domain."""
        released: list[T] = []
        while self._ready and self._ready[0][0] <= now + 1e-9:
            _due, domain = heapq.heappop(self._ready)
            queue = self._parked[domain]
            bucket = self._bucket(domain, now)
            while queue and bucket.take(1, now):
                released.append(queue.popleft())
                self.parked_count -= 1
            if queue:
                heapq.heappush(self._ready, (now + bucket.wait_time(now), domain))
        return released

    def next_release(self) -> float | None:
        """When the earliest parked item can go (monotonic time), or None if none wait."""
        return self._ready[0][0] if self._ready else None
