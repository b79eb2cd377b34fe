"""A token bucket on whatever clock the caller reads, for the rate limits of SPEC §9.

A value with two numbers and no timer: the caller passes the time (its injected
``IReactorTime``'s ``seconds()``) and the rate and burst *at use time*, so a limit that
SIGHUP changes applies to the next check, and tests drive it with ``task.Clock``.
Both limits use it: messages per connection (``net``) and executions per project
(``runs``), which is why it lives below both.
"""

from __future__ import annotations

import math

import attrs

# Floating-point slack: a bucket refilled for exactly the time it asked for must admit.
_EPSILON = 1e-9


def retry_after_ms(wait: float) -> int:
    """A wait in seconds as the whole milliseconds a client must wait (at least 1)."""
    return max(1, math.ceil(wait * 1000 - 1e-6))


@attrs.define
class TokenBucket:
    """``tokens`` earned at ``rate`` per second up to ``burst``; each admission spends one.

    A new bucket is full. Time that runs backwards (a wall clock stepped back) earns
    nothing, and earns nothing twice."""

    tokens: float | None = None  # None: full, whatever the burst turns out to be
    stamp: float = -math.inf

    def refill(self, now: float, rate: float, burst: float) -> float:
        """Credit the time since the last look; the tokens now available."""
        if self.tokens is None:
            self.tokens = burst
        elif now > self.stamp:
            self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        else:
            self.tokens = min(burst, self.tokens)  # a burst lowered live
        self.stamp = max(self.stamp, now)
        return self.tokens

    def wait(self, now: float, rate: float, burst: float) -> float:
        """Seconds until a token is there (0.0: one is there now); spends nothing."""
        tokens = self.refill(now, rate, burst)
        return 0.0 if tokens >= 1 - _EPSILON else (1 - tokens) / rate

    def take(self, now: float, rate: float, burst: float) -> float:
        """Spend a token and answer 0.0, or spend nothing and answer the wait."""
        wait = self.wait(now, rate, burst)
        if wait == 0.0:
            assert self.tokens is not None
            self.tokens -= 1
        return wait

    def full(self, now: float, rate: float, burst: float) -> bool:
        """True when the bucket is as good as new (and may be forgotten)."""
        return self.refill(now, rate, burst) >= burst - _EPSILON
