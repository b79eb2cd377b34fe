"""``limits.executions_per_minute`` per project (SPEC §3): a domain rule.

A bucket per project holds a minute's worth of runs and refills continuously, so with
2 per minute a third run within the minute is refused and one is allowed again 30 s
after the first. Only runs that start spend a token: a refused ``execute`` (busy,
bad options, a full disk) costs nothing.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from pocket_agent.core.errors import LimitReached
from pocket_agent.core.ratelimit import TokenBucket, retry_after_ms

RESOURCE = "executions_per_minute"


class ExecutionRate:
    """The projects' buckets; the limit is passed at each call (SIGHUP may change it)."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, project_id: str, per_minute: int) -> None:
        """LimitReached (with ``retry_after_ms``) when the project has no run left."""
        bucket = self._buckets.get(project_id)
        if bucket is None:
            return
        wait = bucket.wait(self._clock.seconds(), per_minute / 60, per_minute)
        if wait > 0:
            raise LimitReached(
                f"this project may start at most {per_minute} executions a minute",
                RESOURCE,
                per_minute,
                retry_after_ms(wait),
            )

    def spend(self, project_id: str, per_minute: int) -> None:
        """A run of the project starts (after :meth:`check` let it)."""
        now, rate = self._clock.seconds(), per_minute / 60
        # A full bucket is a new one: forget those, so deleted projects leave nothing.
        for pid in [p for p, b in self._buckets.items() if b.full(now, rate, per_minute)]:
            del self._buckets[pid]
        self._buckets.setdefault(project_id, TokenBucket()).take(now, rate, per_minute)
