"""The store's schema and its migrations, applied in order by `PRAGMA user_version`.

A new migration is appended to MIGRATIONS; existing ones never change, so every database moves
forward through the same steps whatever version it started at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    # One table holds every queue's messages: embedded queues, function async queues, DLQs and the
    # webhook outbox. `meta` is eventd's own bookkeeping (attempts, request id, origin), kept apart
    # from `attributes`, which are the message attributes a consumer sees.
    db["messages"].create(
        {
            "seq": int,
            "queue": str,
            "id": str,
            "body": bytes,
            "attributes": str,
            "meta": str,
            "sent_at": float,
            "visible_at": float,
            "receive_count": int,
            "first_received_at": float,
            "in_flight": int,
        },
        pk="seq",
        not_null={"queue", "id", "body", "sent_at", "visible_at", "receive_count", "in_flight"},
        defaults={"receive_count": 0, "in_flight": 0},
    )
    db["messages"].create_index(["queue", "visible_at", "seq"], index_name="messages_ready")
    db["messages"].create_index(["queue", "id"], index_name="messages_id", unique=True)


def _v2(db: sqlite_utils.Database) -> None:
    # Streams: records ordered per shard by a sequence number that only grows. The counter lives in
    # its own table so that trimming old records can never make a number come back.
    db["stream_records"].create(
        {"stream": str, "shard": int, "seq": int, "partition_key": str, "data": bytes, "arrival": float},
        pk=("stream", "shard", "seq"),
        not_null={"partition_key", "data", "arrival"},
    )
    db["stream_records"].create_index(["stream", "arrival"], index_name="stream_records_arrival")
    db["stream_shards"].create({"stream": str, "shard": int, "next_seq": int}, pk=("stream", "shard"),
                               not_null={"next_seq"})
    # A mapping's progress through one shard (and lane, when batches of a shard run in parallel):
    # the last sequence number it has finished with.
    db["checkpoints"].create({"mapping": str, "shard": int, "lane": int, "seq": int},
                             pk=("mapping", "shard", "lane"), not_null={"seq"})


def _v3(db: sqlite_utils.Database) -> None:
    # FIFO queues: a message group orders its messages; a deduplication id is remembered for a window
    db["messages"].add_column("group_id", str)
    db["messages"].create_index(["queue", "group_id", "seq"], index_name="messages_group")
    db["dedup"].create({"queue": str, "dedup_id": str, "message_id": str, "expires_at": float},
                       pk=("queue", "dedup_id"), not_null={"message_id", "expires_at"})


def _v4(db: sqlite_utils.Database) -> None:
    # What a file watch has seen, so a restart can tell new and changed files from old ones
    db["file_index"].create({"source": str, "key": str, "size": int, "mtime_ns": int},
                            pk=("source", "key"), not_null={"size", "mtime_ns"})
    # The last slot each schedule fired for, written in the same transaction as the fired event
    db["schedule_state"].create({"schedule": str, "last_fire": float, "last_event_id": str}, pk="schedule",
                                not_null={"last_fire"})


def _v5(db: sqlite_utils.Database) -> None:
    # Only FIFO messages have a group: index those alone, so that sending, receiving and deleting on a
    # standard queue (most messages) maintain one index fewer. The FIFO receive's `group_id = ?` implies
    # `group_id IS NOT NULL`, so SQLite still uses this index there.
    db.execute("DROP INDEX messages_group")
    db.execute("CREATE INDEX messages_group ON messages (queue, group_id, seq) WHERE group_id IS NOT NULL")


def _v6(db: sqlite_utils.Database) -> None:
    # Producers' messages (a body and attributes, no eventd bookkeeping in `meta`) are sent, received and
    # deleted by the thousand per second, and nothing on their path looks them up by id: keeping them in
    # the id index cost 5-7% of the store writer's time per message (the INSERT and the DELETE each
    # maintained it). Their ids are unique by construction (ids.py). Messages with meta (async
    # invocations, found by request id; their dead-letter copies; destination records) stay indexed and
    # unique. Lookups by id try the index first, then scan the queue (queues.py, _BY_ID).
    db.execute("DROP INDEX messages_id")
    db.execute("CREATE UNIQUE INDEX messages_id ON messages (queue, id) WHERE meta IS NOT NULL")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database at `conn` to the newest schema; returns the version it is at."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"the store was written by a newer eventd (schema {version}, this one knows {len(MIGRATIONS)})"
        )
    db = sqlite_utils.Database(conn)
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        step(db)
        conn.execute(f"PRAGMA user_version={number}")
        conn.execute("COMMIT")
    return len(MIGRATIONS)
