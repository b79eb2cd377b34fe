"""``limits.messages_per_second`` for one connection (SPEC §9), apart from autobahn.

Every inbound message spends a token of a bucket that holds two seconds' worth
(burst 2x). A message without one is refused and the connection stays open; a
connection that is still being refused 10 s into a spell of refusals is closed (1008).
A spell ends once the client has gone :data:`QUIET` seconds without a refusal: a
script that bursts now and then is never closed, one that keeps pushing is.
"""

from __future__ import annotations

import attrs

from pocket_agent.core.ratelimit import TokenBucket, retry_after_ms

BURST_FACTOR = 2
# Refused for this long without a pause: the client is not backing off.
CLOSE_AFTER = 10.0
# A pause this long ends a spell of refusals: what an empty bucket takes to refill.
QUIET = float(BURST_FACTOR)


@attrs.frozen
class Refusal:
    """A message refused: wait ``retry_after_ms``; ``close`` when it is time to give up."""

    retry_after_ms: int
    close: bool


@attrs.define
class MessageRate:
    """One connection's bucket and its current spell of refusals."""

    bucket: TokenBucket = attrs.Factory(TokenBucket)
    refusing_since: float | None = None
    last_refusal: float = 0.0

    def admit(self, now: float, per_second: int) -> Refusal | None:
        """None: handle the message. The limit is read by the caller at each message."""
        wait = self.bucket.take(now, per_second, per_second * BURST_FACTOR)
        if wait == 0.0:
            return None
        if self.refusing_since is None or now - self.last_refusal >= QUIET:
            self.refusing_since = now
        self.last_refusal = now
        return Refusal(retry_after_ms(wait), now - self.refusing_since >= CLOSE_AFTER)
