"""Builders for the Lambda event shapes eventd sends: SQS and Kinesis batches (lambda-semantics.md
§4.7, §5.8). One place defines each shape; every source that needs one calls it."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from eventd.runtimes.pool import ACCOUNT, REGION
from eventd.store.queues import Message
from eventd.store.streams import StreamRecord, sequence_number, shard_id


def queue_arn(queue: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"


def stream_arn(stream: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


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
