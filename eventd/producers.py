"""The producer API: put messages on queues and records on streams. Every id or sequence number it
returns is committed first (acknowledge after commit)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from eventd.api import Api, ApiError, queue_not_found
from eventd.config.model import QueueSpec
from eventd.httpserver import Request, Response, json_response
from eventd.store.queues import Fifo, NewMessage
from eventd.store.streams import NewRecord, sequence_number, shard_id
from eventd.units import parse_duration

#: Most messages or records in one request (Kinesis PutRecords takes 500; eventd allows the same for queues).
MAX_BATCH = 500
#: Kinesis limits: partition keys of 1-256 characters, records up to 1 MiB.
MAX_PARTITION_KEY = 256
MAX_RECORD_BYTES = 1024 * 1024


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidParameterValue", message)


def _json_body(request: Request) -> Any:
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "InvalidRequestContentException", f"the request body is not JSON: {exc}") from None


def _entries(body: Any, many: str) -> tuple[list[Any], bool]:
    if isinstance(body, dict) and many in body:
        entries = body[many]
        if not isinstance(entries, list) or not entries:
            raise _invalid(f"`{many}` must be a non-empty list")
        if len(entries) > MAX_BATCH:
            raise _invalid(f"at most {MAX_BATCH} {many} per request, found {len(entries)}")
        return entries, True
    return [body], False


def _text(value: Any) -> bytes:
    """Bodies and data are text; anything else JSON is sent as its JSON text."""
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def _attributes(raw: Any, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _invalid(f"{where}.attributes must be an object")
    attributes: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, dict) and "StringValue" in value:
            data_type = str(value.get("DataType", "String"))
            attributes[name] = {"DataType": data_type, "StringValue": str(value["StringValue"])}
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _invalid(f"{where}.attributes.{name} must be a string or a number")
        else:
            data_type = "String" if isinstance(value, str) else "Number"
            attributes[name] = {"DataType": data_type, "StringValue": str(value)}
    return attributes


def _new_message(entry: Any, where: str, name: str, spec: QueueSpec) -> NewMessage:
    """One entry of a send, checked: a clear error for anything a queue cannot take."""
    if not isinstance(entry, dict) or "body" not in entry:
        raise _invalid(f"{where} must be an object with a `body`")
    body = _text(entry["body"])
    attributes = _attributes(entry.get("attributes"), where)
    size = len(body) + len(orjson.dumps(attributes or {}))
    if size > spec.max_message_size:
        raise _invalid(f"{where} is {size} bytes; queue {name} takes at most {spec.max_message_size}")
    delay = spec.delay
    if "delay" in entry:
        try:
            delay = parse_duration(entry["delay"])
        except ValueError as exc:
            raise _invalid(f"{where}.delay: {exc}") from None
        if delay > 900:
            raise _invalid(f"{where}.delay: at most 15m")
    group_id = dedup_id = None
    meta = None
    if spec.fifo:
        group_id = entry.get("group_id")
        if not isinstance(group_id, str) or not 1 <= len(group_id) <= 128:
            raise _invalid(f"{where}.group_id: a FIFO queue needs a message group id of 1-128 characters")
        dedup_id = entry.get("deduplication_id")
        if dedup_id is None and spec.content_based_deduplication:
            dedup_id = hashlib.sha256(body).hexdigest()
        if not isinstance(dedup_id, str) or not 1 <= len(dedup_id) <= 128:
            raise _invalid(f"{where}.deduplication_id: queue {name} needs one (or content_based_deduplication)")
        meta = {"dedup": dedup_id}
    elif "group_id" in entry or "deduplication_id" in entry:
        raise _invalid(f"{where}: group_id and deduplication_id are for FIFO queues; {name} is not one")
    return NewMessage(body, attributes, meta=meta, delay=delay, group_id=group_id, dedup_id=dedup_id)


def _plain_bodies(entries: list[Any], spec: QueueSpec) -> list[bytes] | None:
    """The bodies of a standard queue's usual batch, where every entry is `{"body": "text"}` within the
    size limit, without the general checks of `_new_message` or a NewMessage per entry; None for any
    other batch, which takes the general path (and its errors)."""
    if spec.fifo:
        return None
    fits = spec.max_message_size - 2  # a body alone: its attributes count as `{}`
    bodies = []
    for entry in entries:
        if type(entry) is not dict or len(entry) != 1 or type(text := entry.get("body")) is not str:
            return None
        body = text.encode()
        if len(body) > fits:
            return None
        bodies.append(body)
    return bodies


async def send_messages(request: Request) -> Response:
    name = request.match_info["queue"]
    config = request.app.invoker.config
    spec = config.queues.get(name)
    if spec is None:
        raise queue_not_found(name)
    entries, many = _entries(_json_body(request), "messages")
    bodies = _plain_bodies(entries, spec)
    if bodies is not None:
        ids = await request.app.queues.send_bodies(name, bodies, spec.delay)
    else:
        messages = [_new_message(entry, f"messages[{index}]" if many else "message", name, spec)
                    for index, entry in enumerate(entries)]
        fifo = Fifo(spec.deduplication_window) if spec.fifo else None
        ids = await request.app.queues.send(name, messages, fifo)
    request.app.metrics.queue_sent.labels(name).inc(len(ids))
    request.app.queues.notify(name)
    if many:
        return json_response({"messages": [{"id": i} for i in ids]})
    return json_response({"id": ids[0]})


async def put_records(request: Request) -> Response:
    name = request.match_info["stream"]
    config = request.app.invoker.config
    spec = config.streams.get(name)
    if spec is None:
        raise ApiError(404, "ResourceNotFoundException", f"Stream not found: {name}", message_key="Message")
    entries, many = _entries(_json_body(request), "records")
    records = []
    for index, entry in enumerate(entries):
        where = f"records[{index}]" if many else "record"
        if not isinstance(entry, dict) or "data" not in entry or "partition_key" not in entry:
            raise _invalid(f"{where} must be an object with `partition_key` and `data`")
        key = entry["partition_key"]
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_PARTITION_KEY:
            raise _invalid(f"{where}.partition_key must be a string of 1-{MAX_PARTITION_KEY} characters")
        data = _text(entry["data"])
        if len(data) > MAX_RECORD_BYTES:
            raise _invalid(f"{where}.data is {len(data)} bytes; records take at most {MAX_RECORD_BYTES}")
        records.append(NewRecord(key, data))
    results = await request.app.streams.put(name, spec.shards, records)
    request.app.metrics.stream_records.labels(name).inc(len(results))
    request.app.mappings.wake_stream(name)
    out = [{"shard_id": shard_id(r.shard), "sequence_number": sequence_number(r.seq)} for r in results]
    return json_response({"records": out} if many else out[0])


async def queue_stats(request: Request) -> Response:
    config = request.app.invoker.config
    stats = await request.app.queues.stats()
    now = request.app.queues.clock()
    queues = []
    for name in sorted(config.queues):
        s = stats.get(name)
        queues.append({
            "queue": name,
            "visible": s.visible if s else 0,
            "in_flight": s.in_flight if s else 0,
            "delayed": s.delayed if s else 0,
            "oldest_age_seconds": round(now - s.oldest_sent_at, 3) if s and s.oldest_sent_at else 0.0,
            "dead_letter": config.queues[name].dead_letter,
        })
    return json_response({"queues": queues})


def add_routes(api: Api) -> None:
    api.add("POST", "/queues/{queue}/messages", send_messages)
    api.add("POST", "/streams/{stream}/records", put_records)
    api.add("GET", "/admin/queues", queue_stats)
