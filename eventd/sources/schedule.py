"""Schedules: cron and rate expressions fire EventBridge Scheduled Events, invoked asynchronously.

Each fire and the record of its slot are one transaction, so no slot fires twice across a restart.
Slots missed while eventd was down (or while the loop was held up) follow `catch_up`; a slot whose
previous run is still going follows `overlap`. `tick(now)` does one round of that and is what tests
drive with an injected clock; the loop only decides when to call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson

from eventd.asyncevents import async_queue, new_event
from eventd.config.model import ScheduleRouteSpec
from eventd.metrics import Metrics
from eventd.schedules import Schedule, parse_schedule, scheduled_event
from eventd.store.engine import Operation
from eventd.store.queues import QueueStore, op_send, read_message

log = logging.getLogger(__name__)

#: Longest sleep between looks at the clock, so a clock jump or a suspended machine is noticed.
_MAX_SLEEP_S = 30.0
#: How often a slot held back by `overlap: queue` checks whether the previous run has finished.
_QUEUE_POLL_S = 1.0
#: A slot this much older than now was missed (eventd was down or held up): `catch_up` decides.
GRACE_S = 60.0
#: How far before a held slot the recorded state stays (so that slot is due again after a restart).
_BEFORE_S = 0.001
#: Most due slots looked at in one round (a schedule every minute, down for about 10 weeks).
_MAX_DUE = 100_000


def _op_state(schedule: str, last_fire: float, event_id: str | None) -> Operation[None]:
    def run(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO schedule_state (schedule, last_fire, last_event_id) VALUES (?,?,?) "
            "ON CONFLICT (schedule) DO UPDATE SET last_fire = excluded.last_fire, "
            "last_event_id = coalesce(excluded.last_event_id, last_event_id)",
            (schedule, last_fire, event_id),
        )

    return run


def _read_state(schedule: str) -> Callable[[sqlite3.Connection], tuple[float, str | None] | None]:
    def run(conn: sqlite3.Connection) -> tuple[float, str | None] | None:
        row = conn.execute("SELECT last_fire, last_event_id FROM schedule_state WHERE schedule = ?",
                           (schedule,)).fetchone()
        return (row[0], row[1]) if row else None

    return run


class ScheduleSource:
    def __init__(self, route: ScheduleRouteSpec, name: str, queues: QueueStore, metrics: Metrics,
                 wake_function: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        self.route = route
        self.name = name
        self.schedule: Schedule = parse_schedule(route.schedule)
        self.tz = ZoneInfo(route.timezone)
        self._queues = queues
        self._metrics = metrics
        self._wake_function = wake_function
        self._clock = clock
        self._last_fire: float | None = None
        self._last_event_id: str | None = None
        #: a slot held back by `overlap: queue` until the previous run finishes
        self._held: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        state = await self._queues.store.read(_read_state(self.name))
        if state is None:
            # a new schedule starts now: it owes nothing for the time before it existed
            self._last_fire = self._clock()
            await self._queues.store.write(_op_state(self.name, self._last_fire, None))
        else:
            self._last_fire, self._last_event_id = state
        await self.tick()
        self._task = asyncio.create_task(self._loop(), name=f"schedule-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def next_fire(self) -> float | None:
        """When the next slot comes (Unix seconds), for status."""
        if self._held is not None:
            return self._held
        after = datetime.fromtimestamp(self._last_fire or self._clock(), UTC)
        nxt = self.schedule.next_after(after, self.tz)
        return nxt.timestamp() if nxt else None

    async def tick(self) -> list[float]:
        """Fire whatever is due now; returns the slots fired (Unix seconds)."""
        now = self._clock()
        assert self._last_fire is not None
        if self._held is not None:
            if await self._previous_running():
                return []
            slot, self._held = self._held, None
            await self._fire(slot, now)
            # the slots that came while it waited were folded into it
            later = self.schedule.fires_between(datetime.fromtimestamp(slot, UTC), datetime.fromtimestamp(now, UTC),
                                                self.tz, limit=_MAX_DUE)
            if later:
                self._metrics.schedule_missed.labels(self.name, "overlap").inc(len(later))
                await self._queues.store.write(_op_state(self.name, later[-1].timestamp(), None))
                self._last_fire = later[-1].timestamp()
            return [slot]
        start = datetime.fromtimestamp(self._last_fire, UTC)
        due = [d.timestamp() for d in self.schedule.fires_between(start, datetime.fromtimestamp(now, UTC), self.tz,
                                                                  limit=_MAX_DUE)]
        if not due:
            return []
        fired: list[float] = []
        chosen = self._apply_catch_up(due, now)
        for index, slot in enumerate(chosen):
            if await self._previous_running():
                later = len(chosen) - index - 1
                if self.route.overlap == "queue":
                    # runs when the previous run is done; later slots fold into it. The state stays just
                    # before the held slot, so a restart finds it due again rather than losing it.
                    self._held = slot
                    await self._queues.store.write(_op_state(self.name, slot - _BEFORE_S, None))
                    self._last_fire = slot - _BEFORE_S
                    return fired
                self._metrics.schedule_missed.labels(self.name, "overlap").inc()
                continue
            await self._fire(slot, now)
            fired.append(slot)
        if self._last_fire < due[-1]:
            # every due slot is now handled (fired, skipped or held): remember that, so none comes back
            await self._queues.store.write(_op_state(self.name, due[-1], None))
            self._last_fire = due[-1]
        return fired

    def _apply_catch_up(self, due: list[float], now: float) -> list[float]:
        """The due slots that run. A slot more than GRACE_S old was missed (eventd was down or held
        up); the route's catch_up policy decides which of those run. On-time slots always run."""
        missed = [slot for slot in due if now - slot > GRACE_S]
        on_time = due[len(missed):]
        if not missed:
            return on_time
        policy = self.route.catch_up
        if policy == "none":
            chosen: list[float] = []
        elif policy == "latest":
            chosen = [] if on_time else missed[-1:]
        else:
            chosen = missed[-self.route.max_catch_up:]
        if len(chosen) < len(missed):
            self._metrics.schedule_missed.labels(self.name, policy).inc(len(missed) - len(chosen))
            log.info("Schedule %s: %d slots were missed; catch_up %s runs %d of them.", self.name, len(missed),
                     policy, len(chosen))
        return chosen + on_time

    async def _previous_running(self) -> bool:
        """Whether the event of the previous fire is still waiting or running."""
        if self.route.overlap == "allow" or self._last_event_id is None:
            return False
        queue = async_queue(self.route.function)
        return await self._queues.store.read(read_message(queue, self._last_event_id, tracked=True)) is not None

    async def _fire(self, slot: float, now: float) -> None:
        """Send the slot's event and record the slot, in one transaction."""
        event_id = str(uuid.uuid4())
        event = scheduled_event(self.name, datetime.fromtimestamp(slot, UTC), event_id)
        message = new_event(orjson.dumps(event), self.route.function, request_id=event_id)
        last = max(slot, self._last_fire or slot)
        await self._queues.transact(
            op_send(async_queue(self.route.function), [message], now),
            _op_state(self.name, last, event_id),
        )
        self._last_fire, self._last_event_id = last, event_id
        self._metrics.schedule_fires.labels(self.name).inc()
        self._metrics.schedule_lag.labels(self.name).observe(max(0.0, now - slot))
        self._metrics.async_received.labels(self.route.function).inc()
        self._wake_function(self.route.function)

    async def _loop(self) -> None:
        while True:
            nxt = self._clock() + _QUEUE_POLL_S if self._held is not None else self.next_fire()
            delay = _MAX_SLEEP_S if nxt is None else min(_MAX_SLEEP_S, max(0.0, nxt - self._clock()))
            await asyncio.sleep(delay)
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - one bad round must not end the schedule
                log.error("Schedule %s: %s.", self.name, exc)

