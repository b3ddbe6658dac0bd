"""Handlers of config/pipeline.yaml: an order pipeline fed by a queue, a stream and async invokes."""

from __future__ import annotations

import base64
import json
from typing import Any


def take_orders(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reads a batch of SQS-shaped records; reports the ones it could not handle (partial failure)."""
    failed = []
    for record in event["Records"]:
        try:
            order = json.loads(record["body"])
            print(f"order {order['id']} for {order.get('total', 0)}")
        except (ValueError, KeyError):
            failed.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failed}


def count_clicks(event: dict[str, Any], context: Any) -> None:
    """Reads Kinesis-shaped records in order per partition key."""
    for record in event["Records"]:
        click = base64.b64decode(record["kinesis"]["data"]).decode()
        print(f"click {record['kinesis']['partitionKey']} {click}")


def notify(event: dict[str, Any], context: Any) -> str:
    """Invoked asynchronously; failures are retried, then dead-lettered."""
    if event.get("fail"):
        raise RuntimeError("could not notify")
    return "sent"


def web(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An HTTP route: API Gateway v2 event in, v2 response out."""
    name = (event.get("pathParameters") or {}).get("name", "world")
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": f"Hello, {name}!\n"}


def ingest(event: dict[str, Any], context: Any) -> None:
    """A file watch: S3-style records, one per file that arrived."""
    for record in event["Records"]:
        obj = record["s3"]["object"]
        print(f"{record['eventName']} {record['s3']['bucket']['name']}/{obj['key']} ({obj.get('size')} bytes)")


def report(event: dict[str, Any], context: Any) -> None:
    """A schedule: EventBridge's Scheduled Event, `time` being the slot it fired for."""
    print(f"report for the slot at {event['time']}")
