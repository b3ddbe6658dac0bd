"""The store and its queue semantics, on real SQLite files in a temp dir, with an injected clock."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from eventd.store.engine import Store
from eventd.store.queues import (
    NewMessage,
    QueueStore,
    Redrive,
    op_delete,
    op_delete_by_id,
    op_delete_many,
    op_delete_peeked,
    op_receive,
    op_receive_batch,
    op_receive_fifo,
    op_send,
    read_message,
    read_messages,
)
from eventd.store.schema import MIGRATIONS, migrate


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


def _vm_steps(conn: sqlite3.Connection, op) -> tuple[object, int]:  # type: ignore[no-untyped-def]
    """Run `op(conn)` and count the SQLite VM instructions it took (in hundreds): a measure of work done
    that does not depend on the machine's speed or load."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        result = op(conn)
    finally:
        conn.set_progress_handler(None, 100)
    return result, steps[0]


def test_a_receive_under_a_redrive_policy_does_not_scan_the_backlog() -> None:
    # Regression: moving exhausted messages to the dead-letter queue looked at every visible message of
    # the queue before each receive, so draining a backlog under a redrive policy was quadratic.
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    redrive = Redrive("dlq", max_receive_count=3)
    work = []
    for backlog in (1_000, 10_000):
        conn.execute("DELETE FROM messages")
        op_send("q", [NewMessage(b"m") for _ in range(backlog)], 0)(conn)
        (messages, moved), steps = _vm_steps(conn, op_receive_batch("q", 10, 30, 1.0, redrive))
        assert len(messages) == 10 and moved == 0
        work.append(steps)
    assert work[1] < 2 * work[0] + 10, work  # ten times the backlog: about the same work


def test_exhausted_messages_go_to_the_dead_letter_queue_instead_of_being_received() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    redrive = Redrive("dlq", max_receive_count=2)
    op_send("q", [NewMessage(str(i).encode()) for i in range(30)], 0)(conn)
    # every even message has been received twice already and is visible again
    conn.execute("UPDATE messages SET receive_count = 2 WHERE CAST(body AS TEXT) % 2 = 0")
    received: list[bytes] = []
    moved_total = 0
    for now in range(1, 20):
        messages, moved = op_receive_batch("q", 4, 30, float(now), redrive)(conn)
        moved_total += moved
        received += [m.body for m in messages]
        if not messages and not moved:
            break
    assert sorted(received, key=int) == [str(i).encode() for i in range(1, 30, 2)]
    assert all(int(b) % 2 for b in received)
    assert moved_total == 15
    assert conn.execute("SELECT count(*) FROM messages WHERE queue = 'dlq' AND receive_count = 0").fetchone()[0] == 15


def test_delete_many_deletes_only_messages_whose_receipt_is_current() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    op_send("q", [NewMessage(str(i).encode()) for i in range(1_200)], 0)(conn)
    op_send("other", [NewMessage(b"x")], 0)(conn)
    first = op_receive("q", 1_200, 30, 1.0)(conn)
    again = op_receive("q", 10, 30, 100.0)(conn)  # the first ten timed out and were received again
    [other] = op_receive("other", 1, 30, 1.0)(conn)
    # stale receipts of the first ten, a receipt of another queue's message, and 1,190 current ones
    receipts = [m.receipt for m in first] + [other.receipt]
    assert op_delete_many("q", receipts)(conn) == 1_190
    assert op_delete_many("q", [m.receipt for m in again])(conn) == 10
    assert conn.execute("SELECT queue FROM messages").fetchall() == [("other",)]


def store_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A store file as a release with schema `version` left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    for step in MIGRATIONS[:version]:
        step(db)
    conn.execute(f"PRAGMA user_version={version}")
    return conn


def test_a_version_4_store_moves_to_the_partial_group_index(tmp_path: Path) -> None:
    conn = store_at_version(tmp_path / "s.db", 4)
    op_send("f", [NewMessage(b"a", group_id="g"), NewMessage(b"b", group_id="g")], 0)(conn)
    op_send("q", [NewMessage(b"c")], 0)(conn)
    assert migrate(conn) == len(MIGRATIONS)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_group'").fetchone()[0]
    assert sql.endswith("WHERE group_id IS NOT NULL")
    # FIFO order still holds: the second message of the group waits for the first
    [first] = op_receive_fifo("f", 1, 30, 1.0)(conn)
    assert first.body == b"a" and op_receive_fifo("f", 10, 30, 1.0)(conn) == []
    assert [m.body for m in op_receive("q", 10, 30, 1.0)(conn)] == [b"c"]


def test_a_version_5_store_moves_to_the_partial_id_index_and_finds_every_message_by_id(tmp_path: Path) -> None:
    conn = store_at_version(tmp_path / "s.db", 5)
    [plain] = op_send("q", [NewMessage(b"plain")], 0)(conn)
    [tracked] = op_send("q", [NewMessage(b"tracked", meta={"rid": "r-1"}, id="r-1")], 0)(conn)
    assert migrate(conn) == len(MIGRATIONS)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_id'").fetchone()[0]
    assert sql.endswith("WHERE meta IS NOT NULL")
    # a message with eventd's bookkeeping is found through the index; a producer's, by a scan
    [index_lookup] = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM messages "
                                  "WHERE queue = 'q' AND id = 'r-1' AND meta IS NOT NULL").fetchall()
    assert "INDEX messages_id" in index_lookup[3]
    found = [read_message("q", id_)(conn) for id_ in (plain, tracked, "nope")]
    assert [m.body if m else None for m in found] == [b"plain", b"tracked", None]
    assert read_message("other", plain)(conn) is None
    # ids with bookkeeping stay unique
    with pytest.raises(sqlite3.IntegrityError):
        op_send("q", [NewMessage(b"again", meta={"rid": "r-1"}, id="r-1")], 0)(conn)
    assert op_delete_by_id("q", plain)(conn) and op_delete_by_id("q", tracked)(conn)
    assert not op_delete_by_id("q", plain)(conn)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_a_peeked_message_is_deleted_by_its_place_whatever_its_receipt() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    op_send("q", [NewMessage(str(i).encode()) for i in range(3)], 0)(conn)
    peeked = read_messages("q", 10)(conn)
    op_receive("q", 10, 30, 1.0)(conn)  # received since it was peeked: its receipt changed
    assert op_delete_peeked("q", peeked[1])(conn)
    assert not op_delete_peeked("q", peeked[1])(conn)  # gone
    assert not op_delete_peeked("other", peeked[0])(conn)  # not that queue's
    assert [m.body for m in read_messages("q", 10)(conn)] == [b"0", b"2"]


def test_looking_up_one_of_eventds_own_messages_by_id_never_scans_the_queue() -> None:
    # the schedule source asks whether its last event is still queued, and usually it is not
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    op_send("async:fn", [NewMessage(b"{}", meta={"rid": f"r-{i}"}, id=f"r-{i}") for i in range(2_000)], 0)(conn)
    op_send("async:fn", [NewMessage(b"plain")], 0)(conn)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def steps_of(op) -> int:  # type: ignore[no-untyped-def]
        nonlocal steps
        steps = 0
        conn.set_progress_handler(count, 100)  # one call per 100 SQLite VM instructions
        try:
            op(conn)
        finally:
            conn.set_progress_handler(None, 0)
        return steps

    assert read_message("async:fn", "r-7", tracked=True)(conn).body == b"{}"  # type: ignore[union-attr]
    assert steps_of(read_message("async:fn", "gone", tracked=True)) < 5
    assert steps_of(read_message("async:fn", "gone")) > 50  # the untracked form scans the queue
