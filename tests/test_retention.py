"""Retention sweeps on a real store with an injected clock: old queue messages and stream records go."""

from __future__ import annotations

from pathlib import Path

from eventd.config import load_text
from eventd.retention import Retention
from eventd.store.engine import Store
from eventd.store.queues import NewMessage, QueueStore
from eventd.store.streams import NewRecord, StreamStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_sweep_deletes_what_outlived_its_retention(tmp_path: Path) -> None:
    config = load_text("queues: {q: {retention: 1h}, keep: {}}\nstreams: {s: {retention: 2h}}\n",
                       file="t.yaml", base_dir=tmp_path)
    clock = Clock()
    store = Store(tmp_path / "s.db")
    await store.open()
    queues, streams = QueueStore(store, clock), StreamStore(store, clock)
    await queues.send("q", [NewMessage(b"old")])
    await queues.send("keep", [NewMessage(b"old but kept for 4 days")])
    await streams.put("s", 1, [NewRecord("k", b"old")])
    clock.now += 90 * 60
    await queues.send("q", [NewMessage(b"new")])
    await streams.put("s", 1, [NewRecord("k", b"new")])
    clock.now += 60 * 60  # the first message is 2.5 h old, the first record 2.5 h old
    await Retention(config, queues, streams).sweep()
    assert [m.body for m in await queues.peek("q")] == [b"new"]
    assert len(await queues.peek("keep")) == 1
    records = await streams.read("s", 0, 0, 10)
    assert [r.data for r in records] == [b"new"]
    # trimming never brings a sequence number back
    [put] = await streams.put("s", 1, [NewRecord("k", b"next")])
    assert put.seq == 3
    await store.close()


async def test_a_sweep_with_nothing_expired_does_not_write(tmp_path: Path) -> None:
    # Regression: the sweep ran its search for expired messages as a DELETE on the writer thread, which
    # held up every send and receive while it read the whole queue (0.37 s per million messages).
    config = load_text("queues: {q: {retention: 1h}}\n", file="t.yaml", base_dir=tmp_path)
    clock = Clock()
    store = Store(tmp_path / "s.db")
    await store.open()
    queues, streams = QueueStore(store, clock), StreamStore(store, clock)
    await queues.send("q", [NewMessage(b"young") for _ in range(100)])
    commits: list[int] = []
    store.on_commit = lambda size, seconds: commits.append(size)
    await Retention(config, queues, streams).sweep()
    assert commits == []
    assert len(await queues.peek("q", limit=1000)) == 100
    await store.close()


async def test_expiry_goes_through_a_backlog_in_chunks_and_spares_younger_and_other_messages(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "s.db")
    await store.open()
    queues = QueueStore(store, clock)
    for _ in range(3):  # old and young messages of two queues, interleaved in the table
        await queues.send("q", [NewMessage(b"old") for _ in range(9)])
        await queues.send("other", [NewMessage(b"old") for _ in range(4)])
    clock.now += 100
    await queues.send("q", [NewMessage(b"young")])
    for _ in range(2):
        await queues.send("q", [NewMessage(b"later")])
    clock.now += 100  # the 27 "old" messages of q are 200 s old, "young" and "later" 100 s
    deleted = await queues.expire("q", clock.now - 150, chunk=4)
    assert deleted == 27
    assert [m.body for m in await queues.peek("q")] == [b"young", b"later", b"later"]
    assert len(await queues.peek("other", limit=100)) == 12
    await store.close()
