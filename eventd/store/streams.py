"""Stream semantics on the store (Kinesis-like): put records to shards chosen by partition key, read a
shard in order from a position, keep per-mapping checkpoints, trim by age.

Sequence numbers are per shard and only grow; they are shown as 20-digit strings so that text order
and number order agree, as Kinesis' own (longer) ones do.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventd.store.engine import Operation, Store

#: Kinesis splits the 128-bit MD5 key space of partition keys evenly over the shards.
_HASH_SPACE = 1 << 128


def shard_for(partition_key: str, shards: int) -> int:
    digest = int.from_bytes(hashlib.md5(partition_key.encode(), usedforsecurity=False).digest(), "big")
    return digest * shards // _HASH_SPACE


def shard_id(shard: int) -> str:
    return f"shardId-{shard:012d}"


def sequence_number(seq: int) -> str:
    return f"{seq:020d}"


@dataclass(frozen=True)
class NewRecord:
    partition_key: str
    data: bytes


@dataclass(frozen=True)
class PutResult:
    shard: int
    seq: int


@dataclass(frozen=True)
class StreamRecord:
    shard: int
    seq: int
    partition_key: str
    data: bytes
    arrival: float


def op_put(stream: str, shards: int, records: Sequence[NewRecord], now: float) -> Operation[list[PutResult]]:
    def run(conn: sqlite3.Connection) -> list[PutResult]:
        next_seq: dict[int, int] = {}
        results: list[PutResult] = []
        rows = []
        for record in records:
            shard = shard_for(record.partition_key, shards)
            if shard not in next_seq:
                row = conn.execute("SELECT next_seq FROM stream_shards WHERE stream = ? AND shard = ?",
                                   (stream, shard)).fetchone()
                next_seq[shard] = row[0] if row else 1
            seq = next_seq[shard]
            next_seq[shard] = seq + 1
            # bytearray, not bytes: sqlite3 binds it without its adaptation protocol (see queues.op_send)
            rows.append((stream, shard, seq, record.partition_key, bytearray(record.data), now))
            results.append(PutResult(shard, seq))
        conn.executemany("INSERT INTO stream_records (stream, shard, seq, partition_key, data, arrival) "
                         "VALUES (?,?,?,?,?,?)", rows)
        conn.executemany(
            "INSERT INTO stream_shards (stream, shard, next_seq) VALUES (?,?,?) "
            "ON CONFLICT (stream, shard) DO UPDATE SET next_seq = excluded.next_seq",
            [(stream, shard, seq) for shard, seq in next_seq.items()],
        )
        return results

    return run


def read_after(stream: str, shard: int, after_seq: int, limit: int) -> Operation[list[StreamRecord]]:
    def run(conn: sqlite3.Connection) -> list[StreamRecord]:
        rows = conn.execute(
            "SELECT shard, seq, partition_key, data, arrival FROM stream_records "
            "WHERE stream = ? AND shard = ? AND seq > ? ORDER BY seq LIMIT ?",
            (stream, shard, after_seq, limit),
        ).fetchall()
        return [StreamRecord(s, q, k, bytes(d), a) for s, q, k, d, a in rows]

    return run


def read_position(stream: str, shard: int, position: str, timestamp: float | None) -> Operation[int]:
    """The sequence number a new reader starts after: trim_horizon (before the oldest record), latest
    (after the newest) or at_timestamp (before the first record that arrived at or after it)."""

    def run(conn: sqlite3.Connection) -> int:
        if position == "latest":
            row = conn.execute("SELECT next_seq FROM stream_shards WHERE stream = ? AND shard = ?",
                               (stream, shard)).fetchone()
            return (row[0] - 1) if row else 0
        if position == "at_timestamp":
            row = conn.execute("SELECT min(seq) FROM stream_records WHERE stream = ? AND shard = ? AND arrival >= ?",
                               (stream, shard, timestamp or 0.0)).fetchone()
            if row and row[0] is not None:
                return int(row[0]) - 1
            latest = conn.execute("SELECT next_seq FROM stream_shards WHERE stream = ? AND shard = ?",
                                  (stream, shard)).fetchone()
            return (latest[0] - 1) if latest else 0
        return 0

    return run


def read_checkpoints(mapping: str) -> Operation[dict[tuple[int, int], int]]:
    def run(conn: sqlite3.Connection) -> dict[tuple[int, int], int]:
        rows = conn.execute("SELECT shard, lane, seq FROM checkpoints WHERE mapping = ?", (mapping,)).fetchall()
        return {(shard, lane): seq for shard, lane, seq in rows}

    return run


def op_checkpoint(mapping: str, shard: int, lane: int, seq: int) -> Operation[None]:
    def run(conn: sqlite3.Connection) -> None:
        # never move backwards: a late, smaller checkpoint must not undo a larger one
        conn.execute(
            "INSERT INTO checkpoints (mapping, shard, lane, seq) VALUES (?,?,?,?) "
            "ON CONFLICT (mapping, shard, lane) DO UPDATE SET seq = max(seq, excluded.seq)",
            (mapping, shard, lane, seq),
        )

    return run


def op_trim(stream: str, older_than: float) -> Operation[int]:
    def run(conn: sqlite3.Connection) -> int:
        return conn.execute("DELETE FROM stream_records WHERE stream = ? AND arrival < ?",
                            (stream, older_than)).rowcount

    return run


class StreamStore:
    """The async interface to streams, beside QueueStore; narrow enough for another engine to implement."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def put(self, stream: str, shards: int, records: Sequence[NewRecord]) -> list[PutResult]:
        """Commit `records`; the returned sequence numbers mean they are durable."""
        return await self.store.write(op_put(stream, shards, records, self.clock()))

    async def read(self, stream: str, shard: int, after_seq: int, limit: int) -> list[StreamRecord]:
        return await self.store.read(read_after(stream, shard, after_seq, limit))

    async def start_position(self, stream: str, shard: int, position: str, timestamp: float | None) -> int:
        return await self.store.read(read_position(stream, shard, position, timestamp))

    async def checkpoints(self, mapping: str) -> dict[tuple[int, int], int]:
        return await self.store.read(read_checkpoints(mapping))

    async def checkpoint(self, mapping: str, shard: int, lane: int, seq: int) -> None:
        await self.store.write(op_checkpoint(mapping, shard, lane, seq))

    async def trim(self, stream: str, older_than: float) -> int:
        return await self.store.write(op_trim(stream, older_than))
