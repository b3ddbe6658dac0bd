"""Backoff: the one definition of how long to wait before a retry. Pure: no asyncio, no clock.

Used by async invocation (function errors: Lambda waits 1 min then 2 min; throttles: 1 s growing to
5 min) and by every delivery that retries (webhook destinations).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter. Delay n (1-based) = initial * multiplier**(n-1), capped at
    `maximum`, then spread by +/- `jitter` (a fraction) so retries of many events do not arrive together."""

    initial: float
    maximum: float
    multiplier: float = 2.0
    jitter: float = 0.1

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1 = the first retry)."""
        exponent = max(0, attempt - 1)
        # cap the exponent before the power: a long-throttled event reaches attempt numbers in the hundreds
        base = self.maximum if exponent > 64 else min(self.maximum, self.initial * self.multiplier**exponent)
        if self.jitter <= 0:
            return base
        spread = base * self.jitter
        return max(0.0, min(self.maximum, base + (rng or random).uniform(-spread, spread)))


#: Lambda's waits after a function error: 1 minute, then 2 minutes (lambda-semantics.md §2.2).
FUNCTION_ERROR_BACKOFF = Backoff(initial=60.0, maximum=300.0, multiplier=2.0, jitter=0.1)
#: Lambda's waits after a throttle: exponential from 1 second up to 5 minutes.
THROTTLE_BACKOFF = Backoff(initial=1.0, maximum=300.0, multiplier=2.0, jitter=0.1)
