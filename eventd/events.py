"""Builders for the Lambda event shapes eventd sends: SQS and Kinesis batches (lambda-semantics.md
§4.7, §5.8). One place defines each shape; every source that needs one calls it."""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import quote_plus

import orjson

from eventd.runtimes.pool import ACCOUNT, REGION
from eventd.runtimes.protocol import SqsFields
from eventd.runtimes.protocol import new_md5 as _new_md5
from eventd.store.queues import Message
from eventd.store.streams import StreamRecord, sequence_number, shard_id


def queue_arn(queue: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"


def stream_arn(stream: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}"


def _md5(data: bytes) -> str:
    return _new_md5(data).hexdigest()


def sqs_record(queue: str, message: Message) -> dict[str, Any]:
    body = message.body.decode(errors="replace")
    attributes = {
        "ApproximateReceiveCount": str(message.receive_count),
        "SentTimestamp": str(int(message.sent_at * 1000)),
        "SenderId": "eventd",
        "ApproximateFirstReceiveTimestamp": str(int((message.first_received_at or message.sent_at) * 1000)),
    }
    if message.group_id is not None:
        attributes["SequenceNumber"] = f"{message.seq:020d}"
        attributes["MessageGroupId"] = message.group_id
        attributes["MessageDeduplicationId"] = str(message.meta.get("dedup", ""))
    message_attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType", "String"),
        }
        for name, value in message.attributes.items()
    }
    record: dict[str, Any] = {
        "messageId": message.id,
        "receiptHandle": message.receipt,
        "body": body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": _md5(message.body),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn(queue),
        "awsRegion": REGION,
    }
    if message_attributes:
        # SQS hashes a binary encoding of the attributes; eventd hashes their JSON: stable, not byte-identical
        record["md5OfMessageAttributes"] = _md5(orjson.dumps(message.attributes, option=orjson.OPT_SORT_KEYS))
    return record


class SqsEvents:
    """The SQS batch events of one queue. A mapping builds one per batch on the event loop, so this is on
    its hot path: a batch of plain messages (no message attributes, not FIFO) goes to the handler process
    as its records' fields (`fields`), which the process makes into the event itself; any other batch
    goes as the JSON of `sqs_record`s (`event`)."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._arn = queue_arn(queue)

    def event(self, messages: list[Message]) -> bytes:
        return batch_event([sqs_record(self.queue, m) for m in messages])

    def fields(self, messages: list[Message]) -> SqsFields | bytes:
        """The event of `messages` for a handler process to build itself (runtimes/protocol.py): about a
        fifth of the JSON event's cost on the event loop. A batch with message attributes or FIFO fields
        goes as JSON (`event`)."""
        rows = []
        for m in messages:
            if m.attributes or m.group_id is not None:
                return self.event(messages)
            rows.append((m.id, m.receipt, m.body, m.receive_count, int(m.sent_at * 1000),
                         int((m.first_received_at or m.sent_at) * 1000)))
        return SqsFields(self._arn, REGION, rows)


def kinesis_record(stream: str, record: StreamRecord) -> dict[str, Any]:
    sequence = sequence_number(record.seq)
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record.partition_key,
            "sequenceNumber": sequence,
            "data": base64.b64encode(record.data).decode(),
            "approximateArrivalTimestamp": record.arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id(record.shard)}:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/eventd",
        "awsRegion": REGION,
        "eventSourceARN": stream_arn(stream),
    }


def batch_event(records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"Records": records})


def s3_record(bucket: str, configuration: str, key: str, event_name: str, event_time: float, sequencer: str,
              size: int | None = None, etag: str | None = None) -> dict[str, Any]:
    """One S3 notification record (lambda-semantics.md §10.1). Keys are URL-encoded form style, as S3's;
    removal events carry no size or eTag."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(event_time)) + f".{int(event_time % 1 * 1000):03d}Z"
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/")}
    if size is not None:
        obj["size"] = size
    if etag is not None:
        obj["eTag"] = etag
    obj["sequencer"] = sequencer
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": stamp,
        "eventName": event_name,
        "userIdentity": {"principalId": "eventd"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": sequencer[-16:], "x-amz-id-2": "eventd"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration,
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "eventd"}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }
