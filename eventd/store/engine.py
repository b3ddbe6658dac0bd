"""The SQLite engine: one writer thread that commits operations in groups, and one reader thread.

The event loop never touches the database. `write(op)` hands a function to the writer thread, which
runs every queued operation in one transaction (each inside its own savepoint, so one failing
operation does not undo the others), commits once, and only then resolves the callers' futures:
a caller that sees its result knows it is on disk (to the chosen durability).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eventd.store.schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]

#: How often the WAL is checkpointed into the main database file.
CHECKPOINT_INTERVAL_S = 1.0
#: Most operations committed together; bounds the latency one commit adds to the first of them.
MAX_GROUP = 2048
_STOP = object()


@dataclass
class _Pending:
    op: Operation[Any]
    future: asyncio.Future[Any]


def all_of(ops: list[Operation[Any]]) -> Operation[list[Any]]:
    """One operation that runs `ops` in order: written as one, they commit or fail together."""

    def run(conn: sqlite3.Connection) -> list[Any]:
        return [op(conn) for op in ops]

    return run


class StoreClosed(RuntimeError):
    pass


class Store:
    """The database at `path`. `durability` is "normal" (WAL, synchronous=NORMAL: a power cut may lose
    the last commits, a process crash loses nothing) or "full" (fsync at every group commit)."""

    def __init__(self, path: Path, durability: str = "normal") -> None:
        self.path = path
        self.durability = durability
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventd-store-read")
        self._reader_local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._closed = False
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        #: observers of each group commit: (operations, seconds) — for metrics
        self.on_commit: Callable[[int, float], None] = lambda size, seconds: None

    # --- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = threading.Thread(target=self._write_loop, name="eventd-store-write", daemon=True)
        self._writer.start()
        await asyncio.to_thread(self._ready.wait)
        if self._open_error is not None:
            raise self._open_error
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="eventd-store-checkpoint",
                                              daemon=True)
        self._checkpointer.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_checkpoints.set()
        self._queue.put(_STOP)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join)
        await asyncio.to_thread(self._reader.shutdown)

    # --- operations -------------------------------------------------------------------------------

    def write(self, op: Operation[T]) -> asyncio.Future[T]:
        """Run `op(connection)` in the writer thread; the future resolves after its group commits."""
        if self._closed:
            raise StoreClosed("the store is closed")
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Pending(op, future))
        return future

    async def read(self, op: Operation[T]) -> T:
        """Run `op(connection)` on the reader thread's own connection (WAL: readers never block the writer)."""
        assert self._loop is not None
        return await self._loop.run_in_executor(self._reader, self._read, op)

    def _read(self, op: Operation[T]) -> T:
        conn = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._reader_local.conn = self._connect()
        return op(conn)

    def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database every second (PASSIVE: never blocks the writer)."""
        conn = self._connect()
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("Store checkpoint failed: %s.", exc)
        finally:
            conn.close()

    # --- the writer thread ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # checkpoints run in their own thread (below), not inside a commit a caller waits for
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _write_loop(self) -> None:
        try:
            conn = self._connect()
            migrate(conn)
        except BaseException as exc:  # noqa: BLE001 - reported to open()'s caller
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            first = self._queue.get()
            batch: list[_Pending] = []
            stop = first is _STOP
            if not stop:
                batch.append(first)  # type: ignore[arg-type]
            while len(batch) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            if batch:
                self._commit(conn, batch)
            if stop:
                conn.close()
                return

    def _commit_one(self, conn: sqlite3.Connection, pending: _Pending, started: float) -> None:
        outcome: tuple[_Pending, Any, BaseException | None]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = pending.op(conn)
            except Exception as exc:  # noqa: BLE001 - reported to its caller
                conn.execute("ROLLBACK")
                outcome = (pending, None, exc)
            else:
                conn.execute("COMMIT")
                outcome = (pending, result, None)
        except sqlite3.Error as exc:
            log.error("Store commit failed: %s.", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcome = (pending, None, exc)
        self.on_commit(1, time.perf_counter() - started)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody waits any more
            self._loop.call_soon_threadsafe(_resolve, [outcome])

    def _commit(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        if len(batch) == 1:
            # alone in its commit, an operation needs no savepoint: a failure rolls back the commit
            self._commit_one(conn, batch[0], started)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = pending.op(conn)
                except Exception as exc:  # noqa: BLE001 - one bad operation fails alone
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((pending, None, exc))
                else:
                    outcomes.append((pending, result, None))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("Store commit of %d operations failed: %s.", len(batch), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(pending, None, exc) for pending in batch]
        self.on_commit(len(batch), time.perf_counter() - started)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody waits any more
            self._loop.call_soon_threadsafe(_resolve, outcomes)


def _resolve(outcomes: list[tuple[_Pending, Any, BaseException | None]]) -> None:
    for pending, result, error in outcomes:
        if pending.future.done():
            continue
        if error is None:
            pending.future.set_result(result)
        else:
            pending.future.set_exception(error)
