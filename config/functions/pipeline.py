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
