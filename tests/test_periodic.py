"""Housekeeping jobs run in the background, at most a given share of the time."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from eventd.periodic import Periodic


async def _nothing() -> None:
    return None


def test_the_pause_stretches_only_when_a_round_would_exceed_its_share() -> None:
    capped = Periodic("capped", 2.0, _nothing, max_share=0.05)
    assert capped.pause_after(0.01) == 2.0
    assert capped.pause_after(1.0) == pytest.approx(19.0)  # busy 1 s in every 20
    assert Periodic("uncapped", 2.0, _nothing).pause_after(1.0) == 2.0


async def test_a_slow_job_is_paused_for_longer_than_its_interval() -> None:
    # A gauge refresh reading a million queued messages took 1 s and ran every 2 s: half a core.
    rounds: list[tuple[float, float]] = []
    third = asyncio.Event()

    async def slow() -> None:
        started = time.monotonic()
        await asyncio.sleep(0.05)  # stands for a slow scan
        rounds.append((started, time.monotonic()))
        if len(rounds) == 3:
            third.set()

    job = Periodic("slow", 0.001, slow, max_share=0.5)
    job.start()
    try:
        await asyncio.wait_for(third.wait(), timeout=10)
    finally:
        await job.stop()
    for (_, ended), (started, _) in itertools.pairwise(rounds):
        # busy at most half the time: the pause after a 50 ms round is at least as long as the round
        assert started - ended >= 0.045, rounds
