"""Messages between the daemon and a handler process: msgpack maps over a Unix stream socket.

msgpack is self-delimiting, so frames need no length prefix: each side feeds bytes to an Unpacker.
Imported by the bootstrap too, so it uses nothing but the standard library and msgpack.

daemon -> process   {"t": "invoke", "id", "payload": bytes, "deadline_ms", "arn", "client_context", "trace_id",
                     "sqs": [source_arn, region, [[id, receipt, body, receive_count, sent_ms, first_ms]...]]}
                    {"t": "stop"}

"sqs", when present, is the event instead of "payload" (which is then empty): an SQS batch of plain
messages as their fields, which the process makes into the event with `sqs_event`. The daemon then
neither encodes the event as JSON nor hashes the bodies, and the process does not parse JSON: the
daemon's event loop is the queue path's scarcest resource (it shares one GIL with the store's writer),
and a handler process has a core's share of its own.
process -> daemon   {"t": "ready", "init_ms"}            init finished, waiting for work
                    {"t": "init_error", "error", "init_ms"} init failed; the process exits next
                    {"t": "log", "d": str}                  handler output (whole lines)
                    {"t": "result", "payload": bytes, "rss_kb"}
                    {"t": "error", "error": {...}, "rss_kb", "fatal": bool}
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

try:
    # CPython's own MD5: for bodies of a few hundred bytes it takes 0.5 us against OpenSSL's 1.3 (the
    # EVP set-up dominates), and every SQS record carries one
    from _md5 import md5 as new_md5
except ImportError:  # a Python built without it; hashlib loads OpenSSL, which a handler's start need not
    import hashlib

    new_md5 = functools.partial(hashlib.md5, usedforsecurity=False)

#: Environment variable naming the inherited socket's file descriptor in the handler process.
IPC_FD_ENV = "EVENTD_IPC_FD"
#: Environment variable with the memory limit, MB, that the bootstrap applies to itself.
MEMORY_ENV = "EVENTD_MEMORY_MB"
#: Lambda's response cap: 6 MiB + 100 bytes (lambda-semantics.md §1.3).
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100


@dataclass(slots=True)
class SqsFields:
    """An SQS batch event to send as an invoke frame's "sqs" fields rather than as JSON (see above)."""

    source_arn: str
    region: str
    #: per message: id, receipt handle, body, receive count, sent and first-received times (ms)
    rows: list[tuple[str, str, bytes, int, int, int]]


def sqs_event(source_arn: str, region: str, rows: list[list[Any]]) -> dict[str, Any]:
    """The SQS batch event of an invoke frame's "sqs" fields: equal to json.loads of what
    `eventd.events.SqsEvents.event` (the `sqs_record`s) encodes for the same messages
    (tests/test_sqs_events.py checks)."""
    return {"Records": [
        {
            "messageId": message_id,
            "receiptHandle": receipt,
            "body": body.decode(errors="replace"),
            "attributes": {
                "ApproximateReceiveCount": str(receive_count),
                "SentTimestamp": str(sent_ms),
                "SenderId": "eventd",
                "ApproximateFirstReceiveTimestamp": str(first_ms),
            },
            "messageAttributes": {},
            "md5OfBody": new_md5(body).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": source_arn,
            "awsRegion": region,
        }
        for message_id, receipt, body, receive_count, sent_ms, first_ms in rows
    ]}
