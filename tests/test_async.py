"""Async invocation through a real daemon: retries, backoff, max age, destinations, DLQ tools."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.harness import Daemon, Gate, free_port, http, metric_value, read_jsonl, wait_until

HANDLERS = '''
import json, os, time

def _record(event, context):
    with open(os.environ["EVENT_LOG"], "a") as log:
        log.write(json.dumps({"fn": context.function_name, "rid": context.aws_request_id, "event": event,
                              "t": time.time()}) + "\\n")

def ok(event, context):
    _record(event, context)
    return {"done": event}

def fail(event, context):
    _record(event, context)
    raise RuntimeError("always fails")

def crash(event, context):
    _record(event, context)
    os._exit(3)
'''

FAST = {"initial": "50ms", "max": "100ms", "jitter": 0}


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self, fn: str | None = None) -> list[dict[str, Any]]:
        return [entry for entry in read_jsonl(self.path) if fn is None or entry["fn"] == fn]


@pytest.fixture
def events(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "events.jsonl")


def make(daemon_factory, events: EventLog, functions: dict[str, dict[str, Any]], **top: Any) -> Daemon:  # type: ignore[no-untyped-def]
    for spec in functions.values():
        spec.setdefault("environment", {})["EVENT_LOG"] = str(events.path)
    code = {"h.py": HANDLERS, "gated.py": Gate.HANDLER}
    return daemon_factory(functions, code, **top).start()


def send(daemon: Daemon, function: str, payload: Any) -> str:
    reply = daemon.invoke(function, payload, headers={"X-Amz-Invocation-Type": "Event"})
    assert reply.status == 202, reply.body
    return reply.headers["x-amzn-requestid"]


def queue_messages(daemon: Daemon, queue: str) -> list[dict[str, Any]]:
    listing = http("GET", f"{daemon.url}/admin/queues/{queue}/messages?limit=1000").json()
    return [http("GET", f"{daemon.url}/admin/queues/{queue}/messages/{m['id']}").json() for m in listing["messages"]]


def wait_messages(daemon: Daemon, queue: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    return wait_until(lambda: (m := queue_messages(daemon, queue)) and len(m) >= count and m, timeout,
                      what=f"{count} messages in {queue}")


def test_event_runs_once_with_its_request_id(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {"ok": {"handler": "h.ok"}})
    request_id = send(daemon, "ok", {"n": 1})
    entry = wait_until(lambda: events.entries("ok"), what="the event to run")[0]
    assert entry == {"fn": "ok", "rid": request_id, "event": {"n": 1}, "t": entry["t"]}
    text = daemon.metrics()
    assert metric_value(text, "eventd_async_events_received_total", function="ok") == 1
    assert metric_value(text, "eventd_invocations_total", function="ok", outcome="success") == 1


def test_retries_are_counted_exactly_then_dead_lettered(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {
        "fail": {"handler": "h.fail",
                 "async": {"max_retries": 2, "retry_backoff": FAST, "on_failure": {"queue": "failures"},
                           "dead_letter": "dlq"}},
    }, queues={"failures": {}, "dlq": {}})
    request_id = send(daemon, "fail", {"order": 7})
    [dead] = wait_messages(daemon, "dlq", 1)
    [record_message] = wait_messages(daemon, "failures", 1)
    attempts = events.entries("fail")
    assert len(attempts) == 3 and {a["rid"] for a in attempts} == {request_id}  # one request id, 3 attempts
    # the DLQ gets the original event with Lambda's attributes
    assert json.loads(dead["body"]) == {"order": 7}
    assert dead["attributes"] == {
        "RequestID": {"DataType": "String", "StringValue": request_id},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": "always fails"},
    }
    record = json.loads(record_message["body"])
    assert record["version"] == "1.0" and record["timestamp"].endswith("Z")
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:fail:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,
    }
    assert record["requestPayload"] == {"order": 7}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"] == "always fails"
    text = daemon.metrics()
    assert metric_value(text, "eventd_async_retries_total", function="fail", cause="error") == 2
    assert metric_value(text, "eventd_async_events_dropped_total", function="fail", reason="RetriesExhausted",
                        destination="dlq+on_failure") == 1
    assert metric_value(text, "eventd_dlq_writes_total", function="fail", queue="dlq") == 1
    assert metric_value(text, "eventd_destination_deliveries_total", function="fail", type="queue") == 1


def test_no_retries_and_backoff_is_honoured(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {
        "once": {"handler": "h.fail", "async": {"max_retries": 0, "dead_letter": "dlq"}},
        "spaced": {"handler": "h.fail", "async": {
            "max_retries": 2, "dead_letter": "dlq",
            "retry_backoff": {"initial": "300ms", "max": "10s", "multiplier": 2, "jitter": 0}}},
    }, queues={"dlq": {}})
    send(daemon, "once", {})
    send(daemon, "spaced", {})
    wait_messages(daemon, "dlq", 2)
    assert len(events.entries("once")) == 1
    times = [entry["t"] for entry in events.entries("spaced")]
    assert len(times) == 3
    # only lower bounds: a slow machine may wait longer, never shorter
    assert times[1] - times[0] >= 0.3 - 0.02
    assert times[2] - times[1] >= 0.6 - 0.02


def test_max_event_age_looks_ahead(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    # the next retry would come after the event's max age, so the first failure ends it (as Lambda does)
    daemon = make(daemon_factory, events, {
        "old": {"handler": "h.fail", "async": {
            "max_event_age": "60s", "retry_backoff": {"initial": "2m", "max": "5m"},
            "on_failure": {"queue": "failures"}}},
    }, queues={"failures": {}})
    send(daemon, "old", {"x": 1})
    [message] = wait_messages(daemon, "failures", 1)
    record = json.loads(message["body"])
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert len(events.entries("old")) == 1


def test_on_success_to_a_queue_and_to_a_function(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {
        "first": {"handler": "h.ok", "async": {"on_success": {"function": "second"}}},
        "second": {"handler": "h.ok", "async": {"on_success": {"queue": "results"}}},
    }, queues={"results": {}})
    request_id = send(daemon, "first", {"step": 1})
    [message] = wait_messages(daemon, "results", 1)
    chained = wait_until(lambda: events.entries("second"), what="the chained function")[0]
    first_record = chained["event"]
    assert first_record["requestContext"]["condition"] == "Success"
    assert first_record["requestContext"]["requestId"] == request_id
    assert first_record["requestPayload"] == {"step": 1}
    assert first_record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert first_record["responsePayload"] == {"done": {"step": 1}}
    second_record = json.loads(message["body"])
    assert second_record["requestPayload"] == first_record
    assert second_record["requestContext"]["approximateInvokeCount"] == 1


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        type(self).received.append(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_down_then_up(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    daemon = make(daemon_factory, events, {
        "fail": {"handler": "h.fail", "async": {
            "max_retries": 0, "on_failure": {"webhook": {"url": f"http://127.0.0.1:{port}/hook", "timeout": "2s"}}}},
    })
    request_id = send(daemon, "fail", {"w": 1})
    # nobody listens yet: delivery fails, is counted and retried
    wait_until(lambda: metric_value(daemon.metrics(), "eventd_destination_failures_total",
                                    function="fail", type="webhook") >= 1, what="a failed webhook delivery")
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: _Receiver.received, timeout=30, what="the webhook to be delivered once it is up")
    finally:
        server.shutdown()
    record = json.loads(_Receiver.received[0])
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    wait_until(lambda: metric_value(daemon.metrics(), "eventd_destination_deliveries_total",
                                    function="fail", type="webhook") == 1, what="the delivery metric")


def test_a_busy_function_makes_events_wait_then_run(daemon_factory, events: EventLog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {"one": {"handler": "gated.handler", "concurrency": 1}})
    gate = Gate(tmp_path / "gate.sock")
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(daemon.invoke, "one", {"gate": gate.path})
        gate.wait_arrivals(1)
        send(daemon, "one", {"gate": gate.path})
        # the async event waits for the slot instead of failing: it is visible, not dropped
        wait_until(lambda: metric_value(daemon.metrics(), "eventd_async_queue_depth", function="one",
                                        state="visible") == 1, what="the waiting event in the gauges")
        assert gate.waiting == 1
        gate.open()
        gate.wait_arrivals(1)  # the async event got the slot and is running now
        gate.open()
        assert held.result(timeout=20).status == 200
    text = daemon.metrics()
    assert metric_value(text, "eventd_async_events_dropped_total", function="one", reason="EventAgeExceeded",
                        destination="none") == 0
    wait_until(lambda: metric_value(daemon.metrics(), "eventd_invocations_total", function="one",
                                    outcome="success") == 2, what="both invocations to finish")
    gate.close()


def test_zero_concurrency_goes_straight_to_the_dlq(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {
        "off": {"handler": "h.ok", "concurrency": 0, "async": {"dead_letter": "dlq", "on_failure": {"queue": "f"}}},
    }, queues={"dlq": {}, "f": {}})
    send(daemon, "off", {"z": 1})
    [record_message] = wait_messages(daemon, "f", 1)
    record = json.loads(record_message["body"])
    assert record["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in record
    assert events.entries() == []


def test_crashes_are_function_errors_and_retried(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {
        "crash": {"handler": "h.crash", "async": {"max_retries": 1, "retry_backoff": FAST, "dead_letter": "dlq"}},
    }, queues={"dlq": {}})
    request_id = send(daemon, "crash", {})
    [dead] = wait_messages(daemon, "dlq", 1)
    assert len(events.entries("crash")) == 2
    assert dead["attributes"]["ErrorMessage"]["StringValue"] == (
        f"RequestId: {request_id} Error: Runtime exited with error: exit status 3"
    )


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventd", *args, "--url", daemon.url], capture_output=True,
                          text=True, timeout=60)


def test_dlq_list_show_redrive_purge(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {
        "fail": {"handler": "h.fail", "async": {"max_retries": 0, "dead_letter": "dlq"}},
        "ok": {"handler": "h.ok"},
    }, queues={"dlq": {}})
    ids = [send(daemon, "fail", {"n": n}) for n in range(3)]
    wait_messages(daemon, "dlq", 3)

    listed = cli(daemon, "dlq", "list", "dlq")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == "dlq: 3 messages"
    assert all(request_id in listed.stdout for request_id in ids) and "always fails" in listed.stdout

    first = queue_messages(daemon, "dlq")[0]  # events fail concurrently: the DLQ's order is theirs
    shown = cli(daemon, "dlq", "show", "dlq", first["id"])
    assert shown.returncode == 0
    shown_body = json.loads(json.loads(shown.stdout)["body"])
    assert shown_body == {"n": ids.index(first["request_id"])}

    # redrive one back to its own function: it fails again and comes back with its redrive trail
    one = cli(daemon, "dlq", "redrive", "dlq", "--limit", "1")
    assert one.stdout.strip() == "redriven 1 from dlq (1 to fail)"
    wait_until(lambda: len(events.entries("fail")) == 4, what="the redriven event to run")
    again = wait_until(lambda: [m for m in queue_messages(daemon, "dlq") if m["eventd"].get("redriven")],
                       what="the redriven event back in the DLQ")[0]
    assert json.loads(again["body"]) == shown_body  # redrive takes the oldest first
    assert again["eventd"]["redriven"]["from"] == "dlq" and again["eventd"]["redriven"]["count"] == 1

    # redrive the rest to another function: the original payloads arrive unchanged
    rest = cli(daemon, "dlq", "redrive", "dlq", "--to", "ok")
    assert rest.stdout.strip() == "redriven 3 from dlq (3 to ok)"
    wait_until(lambda: len(events.entries("ok")) == 3, what="the redriven events")
    assert sorted(e["event"]["n"] for e in events.entries("ok")) == [0, 1, 2]
    assert queue_messages(daemon, "dlq") == []

    send(daemon, "fail", {"n": 9})
    wait_messages(daemon, "dlq", 1)
    purged = cli(daemon, "dlq", "purge", "dlq")
    assert purged.stdout.strip() == "purged 1 messages from dlq"
    assert queue_messages(daemon, "dlq") == []

    missing = cli(daemon, "dlq", "list", "nope")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "QueueDoesNotExist" in missing.stderr


def test_cli_invoke_async(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {"ok": {"handler": "h.ok"}})
    done = cli(daemon, "invoke", "ok", "--async", "--payload", '{"via": "cli"}')
    assert done.returncode == 0, done.stderr
    request_id = done.stdout.strip()
    entry = wait_until(lambda: events.entries("ok"), what="the event")[0]
    assert entry["rid"] == request_id and entry["event"] == {"via": "cli"}


def test_two_functions_sharing_the_unreserved_pool_are_never_throttled(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    # Regression: each function's runner used to count the same free shared slots, fetch too many
    # events, and see some of them throttled (and wait a throttle backoff) for nothing.
    daemon = make(daemon_factory, events, {"a": {"handler": "h.ok"}, "b": {"handler": "h.ok"}}, max_concurrency=2)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: send(daemon, "a" if n % 2 else "b", {"n": n}), range(60)))
    wait_until(lambda: len(events.entries()) == 60, timeout=30, what="all events to run")
    text = daemon.metrics()
    for function in ("a", "b"):
        assert metric_value(text, "eventd_async_retries_total", function=function, cause="throttle") == 0
        assert metric_value(text, "eventd_throttles_total", function=function,
                            reason="ConcurrentInvocationLimitExceeded") == 0


def test_redriving_destination_records_keeps_the_payload_and_request_id(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, events, {
        "fail": {"handler": "h.fail", "async": {"max_retries": 0, "on_failure": {"queue": "failures"}}},
        "ok": {"handler": "h.ok"},
    }, queues={"failures": {}})
    request_id = send(daemon, "fail", {"keep": "me"})
    wait_messages(daemon, "failures", 1)
    listed = http("GET", f"{daemon.url}/admin/queues/failures/messages").json()["messages"]
    assert listed[0]["function"] == "fail"
    reply = http("POST", f"{daemon.url}/admin/queues/failures/redrive", b'{"to": "ok"}')
    assert reply.json()["redriven"] == 1
    entry = wait_until(lambda: events.entries("ok"), what="the redriven record's payload")[0]
    assert entry["event"] == {"keep": "me"}  # the original payload, not the record around it
    assert entry["rid"] != request_id
    # bad redrive requests get a clear 400, not a server error
    for body in (b"[]", b'{"limit": true}', b'{"limit": 0}', b"{nope"):
        bad = http("POST", f"{daemon.url}/admin/queues/failures/redrive", body)
        assert bad.status == 400, (body, bad.status)
    assert http("POST", f"{daemon.url}/admin/queues/failures/redrive", b'{"to": "nope"}').status == 404


KINDS = '''
import time

def slow(event, context):
    time.sleep(30)

def hog(event, context):
    return len(bytearray(400 * 1024 * 1024))
'''


def test_every_failure_kind_is_retried_then_dead_lettered(daemon_factory, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    retry = {"max_retries": 1, "retry_backoff": FAST, "dead_letter": "dlq"}
    daemon = daemon_factory(
        {"slow": {"handler": "kinds.slow", "timeout": "300ms", "async": retry},
         "hog": {"handler": "kinds.hog", "async": retry},
         "broken": {"handler": "missing_module.handler", "async": retry}},
        {"kinds.py": KINDS}, queues={"dlq": {}},
    ).start()
    ids = {name: send(daemon, name, {"kind": name}) for name in ("slow", "hog", "broken")}
    dead = wait_messages(daemon, "dlq", 3, timeout=30)
    by_request = {m["attributes"]["RequestID"]["StringValue"]: m for m in dead}
    assert by_request[ids["slow"]]["attributes"]["ErrorMessage"]["StringValue"].endswith(
        "Task timed out after 0.30 seconds")
    assert "out of memory" in by_request[ids["hog"]]["attributes"]["ErrorMessage"]["StringValue"]
    assert by_request[ids["broken"]]["attributes"]["ErrorMessage"]["StringValue"].startswith(
        "Unable to import module 'missing_module'")
    text = daemon.metrics()
    for name in ("slow", "hog", "broken"):
        assert metric_value(text, "eventd_async_retries_total", function=name, cause="error") == 1
    # the daemon and the functions are still fine
    assert daemon.invoke("slow", {}).status == 200


async def test_every_caller_of_a_shared_accept_commit_hears_its_outcome() -> None:
    from eventd.asyncq import _settle

    loop = asyncio.get_running_loop()
    for outcome in ("done", "failed", "cancelled"):
        stored: asyncio.Future[None] = loop.create_future()
        callers: list[asyncio.Future[None]] = [loop.create_future() for _ in range(3)]
        if outcome == "done":
            stored.set_result(None)
        elif outcome == "failed":
            stored.set_exception(OSError("disk full"))
        else:
            stored.cancel()
        _settle(callers, stored)
        for caller in callers:
            assert caller.done()
            if outcome == "done":
                assert caller.result() is None
            elif outcome == "failed":
                assert isinstance(caller.exception(), OSError)
            else:
                assert caller.cancelled()
