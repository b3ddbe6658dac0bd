"""Operator tools for dead-letter and destination queues: list, show, redrive, purge.

Redrive keeps the original payload: a dead-letter message is the event itself; a destination record
carries it as `requestPayload`. The redriven event records where it came from in its bookkeeping,
and later dead-letter copies of it keep that trail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventd.asyncevents import async_queue, new_event
from eventd.store.engine import Operation
from eventd.store.queues import Message, QueueStore, op_delete_peeked, op_send

#: Messages redriven in one transaction.
_REDRIVE_CHUNK = 200


@dataclass
class RedriveReport:
    redriven: int = 0
    to: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)


def original_event(message: Message) -> tuple[bytes, str | None]:
    """The payload a message stands for and its request id: the body of a dead-letter copy, or a
    destination record's requestPayload and requestContext.requestId."""
    if message.meta.get("kind") == "record":
        record = orjson.loads(message.body)
        request_id = (record.get("requestContext") or {}).get("requestId")
        return orjson.dumps(record.get("requestPayload", {})), request_id
    return message.body, message.meta.get("rid")


async def redrive(
    queues: QueueStore, queue: str, functions: set[str], to: str | None = None, limit: int | None = None,
) -> RedriveReport:
    """Move up to `limit` messages of `queue` back to their function's async queue (or to `to`)."""
    report = RedriveReport()
    after = 0
    remaining = limit if limit is not None else float("inf")
    while remaining > 0:
        page = await queues.peek(queue, int(min(_REDRIVE_CHUNK, remaining)), after)
        if not page:
            break
        after = page[-1].seq
        ops: list[Operation[Any]] = []
        targets: list[str] = []
        now = queues.clock()
        for message in page:
            target = to or message.meta.get("fn")
            if message.meta.get("kind") == "record" and b'"KinesisBatchInfo"' in message.body:
                report.skipped.append({"id": message.id, "reason": "a stream batch pointer, not an event: "
                                       "read the records from the stream"})
                continue
            if not target or target not in functions:
                reason = "no function recorded; use --to" if not target else f"function {target!r} does not exist"
                report.skipped.append({"id": message.id, "reason": reason})
                continue
            payload, request_id = original_event(message)
            trail = {"from": queue, "message_id": message.id, "at": now, "original_request_id": request_id,
                     "count": int(message.meta.get("redriven", {}).get("count", 0)) + 1}
            ops.append(op_delete_peeked(queue, message))
            ops.append(op_send(async_queue(target), [new_event(payload, target, redriven=trail)], now))
            targets.append(target)
            remaining -= 1
        if ops:
            await queues.transact(*ops)
        for target in targets:
            report.to[target] = report.to.get(target, 0) + 1
        report.redriven += len(targets)
    return report


def describe(message: Message, *, full: bool) -> dict[str, Any]:
    """A message as the admin API shows it."""
    body: Any
    try:
        body = message.body.decode()
        encoding = "text"
    except UnicodeDecodeError:
        import base64

        body, encoding = base64.b64encode(message.body).decode(), "base64"
    meta = message.meta
    entry: dict[str, Any] = {
        "id": message.id,
        "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(message.sent_at)),
        "receive_count": message.receive_count,
        "size": len(message.body),
        "function": meta.get("fn"),
        "condition": meta.get("condition"),
        "request_id": meta.get("rid"),
        "error_message": (message.attributes.get("ErrorMessage") or {}).get("StringValue"),
    }
    if full:
        entry.update({"attributes": message.attributes, "eventd": meta, "body": body, "body_encoding": encoding})
    return entry
