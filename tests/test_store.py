"""The store and its queue semantics, on real SQLite files in a temp dir, with an injected clock."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from eventd.store.engine import Store
from eventd.store.queues import NewMessage, QueueStore, op_delete, op_send


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def queues(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "store.db")
    await store.open()
    yield QueueStore(store, Clock())
    await store.close()


async def test_send_receive_delete(queues: QueueStore) -> None:
    ids = await queues.send("q", [NewMessage(b"one", {"k": "v"}), NewMessage(b"two")])
    assert len(set(ids)) == 2
    got = await queues.receive("q", 10, 30)
    assert [m.body for m in got] == [b"one", b"two"]
    assert got[0].attributes == {"k": "v"} and got[0].receive_count == 1
    assert await queues.receive("q", 10, 30) == []  # invisible while in flight
    assert await queues.delete("q", got[0].receipt)
    assert not await queues.delete("q", got[0].receipt)  # already gone
    stats = (await queues.stats())["q"]
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 1, 0)


async def test_visibility_timeout_and_stale_receipts(queues: QueueStore) -> None:
    clock = queues.clock
    assert isinstance(clock, Clock)
    await queues.send("q", [NewMessage(b"x")])
    first = (await queues.receive("q", 1, 30))[0]
    clock.now += 31
    second = (await queues.receive("q", 1, 30))[0]
    assert second.receive_count == 2 and second.first_received_at == first.first_received_at
    # the first receiver is too late: its receipt no longer deletes the message
    assert not await queues.delete("q", first.receipt)
    assert await queues.delete("q", second.receipt)


async def test_delay_and_change_visibility(queues: QueueStore) -> None:
    clock = queues.clock
    assert isinstance(clock, Clock)
    await queues.send("q", [NewMessage(b"later", delay=10)])
    assert await queues.receive("q", 1, 30) == []
    assert (await queues.stats())["q"].delayed == 1
    clock.now += 10
    message = (await queues.receive("q", 1, 30))[0]
    assert await queues.change_visibility("q", message.receipt, 5, meta={"attempts": 1})
    assert await queues.receive("q", 1, 30) == []
    clock.now += 5
    again = (await queues.receive("q", 1, 30))[0]
    assert again.meta == {"attempts": 1} and again.receive_count == 2


async def test_transaction_is_all_or_nothing(queues: QueueStore) -> None:
    await queues.send("a", [NewMessage(b"m")])
    message = (await queues.receive("a", 1, 30))[0]

    def explode(conn: sqlite3.Connection) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await queues.transact(op_delete("a", message.receipt), op_send("b", [NewMessage(b"m")], 0), explode)
    stats = await queues.stats()
    assert "b" not in stats and stats["a"].in_flight == 1
    await queues.transact(op_delete("a", message.receipt), op_send("b", [NewMessage(b"m")], 0))
    stats = await queues.stats()
    assert "a" not in stats and stats["b"].visible == 1


async def test_group_commit_and_failure_isolation(queues: QueueStore) -> None:
    sizes: list[int] = []
    queues.store.on_commit = lambda size, seconds: sizes.append(size)

    def bad(conn: sqlite3.Connection) -> None:
        raise RuntimeError("only me")

    futures = [queues.store.write(op_send("q", [NewMessage(str(i).encode())], 0)) for i in range(500)]
    futures.insert(250, queues.store.write(bad))
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert (await queues.stats())["q"].visible == 500
    assert len(sizes) < 500  # operations shared commits


async def test_data_survives_reopen_and_full_durability(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", durability="full")
    await store.open()
    await QueueStore(store).send("q", [NewMessage(b"kept")])
    await store.close()
    store = Store(tmp_path / "s.db")
    await store.open()
    assert [m.body for m in await QueueStore(store).peek("q")] == [b"kept"]
    await store.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("PRAGMA user_version=999")
    conn.close()
    store = Store(tmp_path / "s.db")
    with pytest.raises(RuntimeError, match="newer eventd"):
        await store.open()


async def test_a_message_whose_lease_ran_out_counts_as_visible(queues: QueueStore) -> None:
    # Regression: stats kept counting it in flight after its visibility timeout had passed.
    clock = queues.clock
    assert isinstance(clock, Clock)
    await queues.send("q", [NewMessage(b"x")])
    await queues.receive("q", 1, 5)
    assert (await queues.stats())["q"].in_flight == 1
    clock.now += 6
    stats = (await queues.stats())["q"]
    assert (stats.visible, stats.in_flight) == (1, 0)
