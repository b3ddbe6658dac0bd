"""Schedules driven by an injected clock, in-process, on a real store: catch-up policies across a
simulated downtime, no slot firing twice across a restart, overlap policies, the event shape."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventd.asyncevents import async_queue
from eventd.config import load_text
from eventd.config.model import ScheduleRouteSpec
from eventd.metrics import Metrics
from eventd.sources.schedule import ScheduleSource
from eventd.store.engine import Store
from eventd.store.queues import QueueStore, op_delete_by_id


class Clock:
    def __init__(self, start: str) -> None:
        self.now = datetime.fromisoformat(start).timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: str) -> None:
        self.now = datetime.fromisoformat(when).timestamp()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "store.db")
    await store.open()
    yield store
    await store.close()


def route(tmp_path: Path, **options: Any) -> ScheduleRouteSpec:
    (tmp_path / "fns").mkdir(exist_ok=True)
    lines = "\n".join(f"    {k}: {v}" for k, v in options.items())
    config = load_text(textwrap.dedent("""
        functions:
          job: {handler: h.job, code: fns}
        routes:
          - schedule: "cron(0 * * * ? *)"
            function: job
            name: hourly
        """) + lines + "\n", file="t.yaml", base_dir=tmp_path)
    spec = config.routes[0]
    assert isinstance(spec, ScheduleRouteSpec)
    return spec


async def fired_events(queues: QueueStore) -> list[dict[str, Any]]:
    return [orjson.loads(m.body) for m in await queues.peek(async_queue("job"), 1000)]


def source(spec: ScheduleRouteSpec, queues: QueueStore, clock: Callable[[], float]) -> ScheduleSource:
    return ScheduleSource(spec, "hourly", queues, Metrics(), lambda function: None, clock=clock)


async def test_fires_each_slot_once_with_the_scheduled_event_shape(store: Store, tmp_path: Path) -> None:
    clock = Clock("2026-05-01T09:30:00+00:00")
    queues = QueueStore(store, clock)
    hourly = source(route(tmp_path), queues, clock)
    await hourly.start()
    await hourly.stop()  # the test drives tick() itself
    assert await hourly.tick() == []
    assert hourly.next_fire() == datetime(2026, 5, 1, 10, tzinfo=UTC).timestamp()
    clock.set("2026-05-01T10:00:00.250+00:00")
    assert len(await hourly.tick()) == 1
    assert await hourly.tick() == []  # the same slot never fires twice
    [event] = await fired_events(queues)
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["time"] == "2026-05-01T10:00:00Z"  # the slot's time, not the moment it ran
    assert event["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/hourly"]
    assert event["detail"] == {} and event["version"] == "0"


@pytest.mark.parametrize(("policy", "expected"), [
    ("none", []),
    ("latest", ["2026-05-01T14:00:00Z"]),
    ("all", ["2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z", "2026-05-01T14:00:00Z"]),
])
async def test_catch_up_after_downtime(store: Store, tmp_path: Path, policy: str, expected: list[str]) -> None:
    clock = Clock("2026-05-01T09:30:00+00:00")
    queues = QueueStore(store, clock)
    spec = route(tmp_path, catch_up=policy, max_catch_up=3)
    first = source(spec, queues, clock)
    await first.start()
    await first.stop()
    # eventd is down from 09:30 to 14:20: five slots (10:00 ... 14:00) are missed
    clock.set("2026-05-01T14:20:00+00:00")
    restarted = source(spec, queues, clock)
    await restarted.start()  # start() catches up
    await restarted.stop()
    assert [e["time"] for e in await fired_events(queues)] == expected
    # and a later restart owes nothing more
    again = source(spec, queues, clock)
    await again.start()
    await again.stop()
    assert [e["time"] for e in await fired_events(queues)] == expected


async def test_no_slot_fires_twice_across_a_restart(store: Store, tmp_path: Path) -> None:
    clock = Clock("2026-05-01T09:59:00+00:00")
    queues = QueueStore(store, clock)
    spec = route(tmp_path)
    first = source(spec, queues, clock)
    await first.start()
    await first.stop()
    clock.set("2026-05-01T10:00:01+00:00")
    await first.tick()
    restarted = source(spec, queues, clock)  # a restart within the same minute
    await restarted.start()
    await restarted.stop()
    assert len(await fired_events(queues)) == 1


@pytest.mark.parametrize("policy", ["allow", "skip", "queue"])
async def test_overlap_policies(store: Store, tmp_path: Path, policy: str) -> None:
    clock = Clock("2026-05-01T09:59:00+00:00")
    queues = QueueStore(store, clock)
    hourly = source(route(tmp_path, overlap=policy), queues, clock)
    await hourly.start()
    await hourly.stop()
    clock.set("2026-05-01T10:00:00+00:00")
    await hourly.tick()
    # no runner runs in this test, so the 10:00 event is still waiting: its run is "still going"
    clock.set("2026-05-01T11:00:00+00:00")
    fired = await hourly.tick()
    events = await fired_events(queues)
    if policy == "allow":
        assert len(fired) == 1 and len(events) == 2
        return
    assert fired == [] and len(events) == 1
    # the 10:00 run finishes
    await queues.store.write(op_delete_by_id(async_queue("job"), events[0]["id"]))
    clock.set("2026-05-01T11:00:30+00:00")
    fired = await hourly.tick()
    if policy == "skip":
        assert fired == []  # the 11:00 slot was skipped for good
        clock.set("2026-05-01T12:00:00+00:00")
        assert len(await hourly.tick()) == 1
    else:
        # queued: the 11:00 slot runs now that the previous run is done, late but not lost
        assert len(fired) == 1
        [event] = await fired_events(queues)
        assert event["time"] == "2026-05-01T11:00:00Z"


async def test_timezone_and_dst(store: Store, tmp_path: Path) -> None:
    clock = Clock("2026-03-07T12:00:00+00:00")
    queues = QueueStore(store, clock)
    spec = route(tmp_path, timezone="America/New_York")
    spec = spec.model_copy(update={"schedule": "cron(0 9 * * ? *)"})
    daily = source(spec, queues, clock)
    await daily.start()
    await daily.stop()
    # 9:00 New York is 14:00 UTC before the DST change (Mar 8) and 13:00 UTC after it
    assert daily.next_fire() == datetime(2026, 3, 7, 14, tzinfo=UTC).timestamp()
    clock.set("2026-03-07T14:00:01+00:00")
    assert len(await daily.tick()) == 1
    assert daily.next_fire() == datetime(2026, 3, 8, 13, tzinfo=UTC).timestamp()


async def test_a_held_slot_survives_a_restart(store: Store, tmp_path: Path) -> None:
    # Regression: with overlap queue, the held slot lived only in memory and a restart dropped it.
    clock = Clock("2026-05-01T09:59:00+00:00")
    queues = QueueStore(store, clock)
    spec = route(tmp_path, overlap="queue")
    hourly = source(spec, queues, clock)
    await hourly.start()
    await hourly.stop()
    clock.set("2026-05-01T10:00:00+00:00")
    await hourly.tick()
    clock.set("2026-05-01T11:00:00+00:00")
    assert await hourly.tick() == []  # held: the 10:00 run is still waiting
    events = await fired_events(queues)
    await queues.store.write(op_delete_by_id(async_queue("job"), events[0]["id"]))
    clock.set("2026-05-01T11:00:20+00:00")
    restarted = source(spec, queues, clock)
    await restarted.start()  # the held 11:00 slot is due again, and on time
    await restarted.stop()
    assert [e["time"] for e in await fired_events(queues)] == ["2026-05-01T11:00:00Z"]
