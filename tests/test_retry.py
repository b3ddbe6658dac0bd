"""Backoff is pure, so it is property-tested."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from eventd.retry import FUNCTION_ERROR_BACKOFF, THROTTLE_BACKOFF, Backoff

policies = st.builds(
    Backoff,
    initial=st.floats(0.001, 100),
    maximum=st.floats(100, 10_000),
    multiplier=st.floats(1, 10),
    jitter=st.floats(0, 0.5),
)


@given(policies, st.integers(1, 10_000), st.integers(0, 2**32))
def test_delay_stays_within_bounds(policy: Backoff, attempt: int, seed: int) -> None:
    delay = policy.delay(attempt, random.Random(seed))
    assert 0 <= delay <= policy.maximum
    low = min(policy.maximum, policy.initial * policy.multiplier ** min(attempt - 1, 64)) * (1 - policy.jitter)
    assert delay >= min(low, policy.maximum * (1 - policy.jitter)) - 1e-9


@given(policies, st.integers(1, 50))
def test_without_jitter_delays_never_shrink(policy: Backoff, attempt: int) -> None:
    exact = Backoff(policy.initial, policy.maximum, policy.multiplier, jitter=0)
    assert exact.delay(attempt + 1) >= exact.delay(attempt)


def test_lambda_defaults() -> None:
    exact = Backoff(FUNCTION_ERROR_BACKOFF.initial, FUNCTION_ERROR_BACKOFF.maximum, jitter=0)
    assert [exact.delay(n) for n in (1, 2)] == [60, 120]
    throttle = Backoff(THROTTLE_BACKOFF.initial, THROTTLE_BACKOFF.maximum, jitter=0)
    assert [throttle.delay(n) for n in (1, 2, 3, 9, 10, 500)] == [1, 2, 4, 256, 300, 300]
