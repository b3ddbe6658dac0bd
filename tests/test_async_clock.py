"""Async retry and age rules driven by an injected clock, in-process: a real store, a real invoker with
real handler processes, and the clock the async engine reads moved by the test instead of waited for."""

from __future__ import annotations

import random
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventd.asyncevents import async_queue
from eventd.asyncq import AsyncInvocations
from eventd.config import load_text
from eventd.invoke import Invoker
from eventd.logs import DaemonLogging
from eventd.metrics import Metrics
from eventd.store.engine import Store
from eventd.store.queues import QueueStore


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[AsyncInvocations, Invoker, QueueStore, Clock]]:
    (tmp_path / "fns").mkdir()
    (tmp_path / "fns" / "h.py").write_text("def ok(event, context):\n    return event\n")
    config = load_text(textwrap.dedent("""
        state_dir: state
        queues: {failures: {}}
        functions:
          capped:
            handler: h.ok
            code: fns
            concurrency: 1
            async:
              max_event_age: 60s
              throttle_backoff: {initial: 1s, max: 5m, jitter: 0}
              on_failure: {queue: failures}
    """), file="test.yaml", base_dir=tmp_path)
    clock = Clock()
    store = Store(tmp_path / "store.db")
    await store.open()
    queues = QueueStore(store, clock)
    with DaemonLogging("warning", None) as logs:
        metrics = Metrics()
        invoker = Invoker(config, metrics, logs)
        asyncq = AsyncInvocations(config, invoker, queues, metrics, rng=random.Random(1))
        yield asyncq, invoker, queues, clock
        await invoker.stop()
    await store.close()


async def receive_one(queues: QueueStore) -> Any:
    [message] = await queues.receive(async_queue("capped"), 1, 60)
    return message


async def test_throttles_back_off_without_counting_attempts_until_the_age_runs_out(engine: Any) -> None:
    asyncq, invoker, queues, clock = engine
    await asyncq.accept("capped", b'{"k": 1}')
    invoker.dispatcher.acquire("capped")  # a sync invocation holds the only slot

    delays = []
    for _ in range(5):
        message = await receive_one(queues)
        await asyncq.process("capped", message)
        rescheduled = (await queues.peek(async_queue("capped")))[0]
        delays.append(rescheduled.visible_at - clock.now)
        assert rescheduled.meta["attempts"] == 0  # a throttle is not a failed attempt
        clock.now = rescheduled.visible_at
    assert delays == [1, 2, 4, 8, 16]
    assert (await queues.peek(async_queue("capped")))[0].meta["throttles"] == 5

    # 31 s old now: the next throttle wait (32 s) would pass the 60 s max age, so the event ends here
    message = await receive_one(queues)
    await asyncq.process("capped", message)
    assert await queues.peek(async_queue("capped")) == []
    [failure] = await queues.peek("failures")
    record = orjson.loads(failure.body)
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0


async def test_an_event_older_than_its_max_age_is_not_run(engine: Any) -> None:
    asyncq, invoker, queues, clock = engine
    await asyncq.accept("capped", b"{}")
    clock.now += 61  # eventd was down for a minute
    await asyncq.process("capped", await receive_one(queues))
    [failure] = await queues.peek("failures")
    assert orjson.loads(failure.body)["requestContext"]["condition"] == "EventAgeExceeded"
    assert invoker.pools["capped"].counts() == {"starting": 0, "idle": 0, "busy": 0}  # nothing was started


async def test_a_free_slot_runs_the_event(engine: Any) -> None:
    asyncq, _invoker, queues, _clock = engine
    await asyncq.accept("capped", b'{"fine": true}')
    await asyncq.process("capped", await receive_one(queues))
    assert await queues.peek(async_queue("capped")) == []
    assert await queues.peek("failures") == []
