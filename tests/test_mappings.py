"""Queue mapping internals on a real store: how finished batches share their store operations."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from eventd.mappings import _Settler
from eventd.store.engine import Store
from eventd.store.queues import NewMessage, QueueStore, Redrive


@pytest.fixture
async def queues(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "store.db")
    await store.open()
    yield QueueStore(store, lambda: 1_000.0)
    await store.close()


async def _hold_writer(queues: QueueStore) -> tuple[threading.Event, asyncio.Future[None]]:
    """Occupy the writer thread until the returned event is set, so later operations queue up."""
    started, release = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    held = queues.store.write(block)
    await asyncio.to_thread(started.wait, 10)
    return release, held


async def test_settles_made_while_the_writer_is_busy_share_one_operation(queues: QueueStore) -> None:
    await queues.send("q", [NewMessage(str(n).encode()) for n in range(30)])
    first, _ = await queues.receive_batch("q", 6, 30, None)
    settler = _Settler(queues, "q", batch_size=4, visibility_timeout=30, redrive=None)
    sizes: list[int] = []
    queues.store.on_commit = lambda size, seconds: sizes.append(size)
    release, held = await _hold_writer(queues)
    # Given three batches that finish while the writer is busy: two ask for a next batch, one does not
    settles = [
        asyncio.ensure_future(settler.settle([m.receipt for m in first[:2]], wants=1)),
        asyncio.ensure_future(settler.settle([m.receipt for m in first[2:4]], wants=0)),
        asyncio.ensure_future(settler.settle([m.receipt for m in first[4:]], wants=1)),
    ]
    # When the writer is freed, after all three have joined (their first steps run before this callback)
    asyncio.get_running_loop().call_soon(release.set)
    await held
    (a, dead_a), (b, dead_b), (c, dead_c) = await asyncio.gather(*settles)
    # Then one operation in one commit deleted all six and received two batches, one for each asker
    assert sizes == [1, 1]  # the blocking operation's commit, then the shared one
    assert b == [] and [len(a), len(c)] == [4, 4] and (dead_a, dead_b, dead_c) == (0, 0, 0)
    assert {m.body for m in a}.isdisjoint({m.body for m in c})
    assert [m.body for m in a + c] == [str(n).encode() for n in range(6, 14)]  # oldest first
    stats = (await queues.stats())["q"]
    assert (stats.visible, stats.in_flight) == (16, 8)


async def test_a_settle_after_the_writer_started_the_round_opens_a_new_one(queues: QueueStore) -> None:
    await queues.send("q", [NewMessage(b"m") for _ in range(4)])
    settler = _Settler(queues, "q", batch_size=2, visibility_timeout=30, redrive=None)
    one = await settler.settle([], wants=1)
    two = await settler.settle([], wants=1)
    three = await settler.settle([m.receipt for m in one[0] + two[0]], wants=1)
    assert [len(one[0]), len(two[0]), len(three[0])] == [2, 2, 0]
    assert "q" not in await queues.stats()


async def test_a_settle_reports_dead_lettered_messages_once(queues: QueueStore) -> None:
    await queues.send("q", [NewMessage(b"m") for _ in range(3)])
    await queues.receive_batch("q", 3, 0, None)  # a zero timeout: visible again at once, received once
    settler = _Settler(queues, "q", batch_size=3, visibility_timeout=30, redrive=Redrive("dlq", 1))
    messages, dead_lettered = await settler.settle([], wants=1)
    assert (messages, dead_lettered) == ([], 3)
    assert (await queues.stats())["dlq"].visible == 3


async def test_a_round_whose_commit_failed_does_not_swallow_later_settles(queues: QueueStore) -> None:
    await queues.send("q", [NewMessage(b"m") for _ in range(2)])
    settler = _Settler(queues, "q", batch_size=1, visibility_timeout=30, redrive=None)
    await queues.store.close()
    with pytest.raises(RuntimeError):
        await settler.settle([], wants=1)
    assert settler._open is None


class _Dispatcher:
    def __init__(self, free: int) -> None:
        self._free = free

    def free(self, function: str) -> int:
        return self._free


class _Invoker:
    def __init__(self, free: int) -> None:
        self.dispatcher = _Dispatcher(free)


async def test_a_dispatched_batch_waiting_for_its_slot_leaves_no_free_batch(queues: QueueStore) -> None:
    # Regression: the poller counted the function's free slots, dispatched a batch, and before that
    # batch had taken its slot counted the same slot again: it received a second batch, which then
    # waited in memory for the slot with its visibility timeout running.
    from eventd.config.model import Config
    from eventd.mappings import QueueMapping
    from eventd.metrics import Metrics

    config = Config.model_validate({
        "functions": {"fn": {"handler": "h.handler", "concurrency": 1}},
        "queues": {"q": {}},
        "routes": [{"queue": "q", "function": "fn", "batch_size": 10}],
    })
    mapping = QueueMapping(config.routes[0], config, _Invoker(free=1), queues, Metrics())  # type: ignore[arg-type]
    assert mapping._free_batches() == 1
    mapping._spawn_batch = lambda coro: coro.close()  # type: ignore[method-assign]  # never runs: never takes its slot
    mapping._dispatch([])
    assert mapping._free_batches() == 0
