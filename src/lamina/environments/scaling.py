"""How fast a function may add execution environments: a token bucket per function.

Lambda lets each function scale by 1,000 environments every 10 seconds, refilled
continuously rather than in steps; a cold start past that is throttled (429), not
queued. Warm reuse never takes a token.
"""

from __future__ import annotations

import time


class TokenBucket:
    def __init__(self, capacity: int, window_s: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / window_s if window_s > 0 else float("inf")
        self.tokens = float(capacity)
        self.updated = time.monotonic()

    def take(self) -> bool:
        """Take one token if there is one."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ScalingRate:
    """One bucket per function, created on its first cold start."""

    def __init__(self, environments: int, window_s: float) -> None:
        self.environments = environments
        self.window_s = window_s
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, function_name: str) -> bool:
        bucket = self._buckets.get(function_name)
        if bucket is None:
            bucket = self._buckets[function_name] = TokenBucket(self.environments, self.window_s)
        return bucket.take()
