"""Embedded queues and queue mappings through a real daemon: producer API, SQS event shape, batching
windows and byte caps, filters, partial batch failures, redrive to the DLQ."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon, http, metric_value, read_jsonl, wait_until

HANDLERS = '''
import json, os, time

def _log(kind, event, context):
    with open(os.environ["BATCH_LOG"], "a") as log:
        log.write(json.dumps({"fn": context.function_name, "t": time.time(), "kind": kind,
                              "records": event.get("Records", [])}) + "\\n")

def record(event, context):
    _log("ok", event, context)
    return None

def partial(event, context):
    # fail every message whose body says so; report them as batch item failures
    _log("partial", event, context)
    failed = [r["messageId"] for r in event["Records"] if "fail" in r["body"]]
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

def fail_once(event, context):
    # fail a message that asks for it on its first receive only
    _log("fail_once", event, context)
    failed = [r["messageId"] for r in event["Records"]
              if "fail" in r["body"] and r["attributes"]["ApproximateReceiveCount"] == "1"]
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

def bad_answer(event, context):
    _log("bad", event, context)
    return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}

def explode(event, context):
    _log("explode", event, context)
    raise ValueError("poison")
'''


class BatchLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def batches(self, fn: str | None = None) -> list[dict[str, Any]]:
        return [entry for entry in read_jsonl(self.path) if fn is None or entry["fn"] == fn]

    def bodies(self, fn: str | None = None) -> list[str]:
        return [r["body"] for b in self.batches(fn) for r in b["records"]]


@pytest.fixture
def log(tmp_path: Path) -> BatchLog:
    return BatchLog(tmp_path / "batches.jsonl")


def make(daemon_factory, log: BatchLog, functions: dict[str, dict[str, Any]], **top: Any) -> Daemon:  # type: ignore[no-untyped-def]
    for spec in functions.values():
        spec.setdefault("environment", {})["BATCH_LOG"] = str(log.path)
    return daemon_factory(functions, {"h.py": HANDLERS}, **top).start()


def send(daemon: Daemon, queue: str, *bodies: Any, **extra: Any) -> list[str]:
    messages = [{"body": b, **extra} for b in bodies]
    reply = http("POST", f"{daemon.url}/queues/{queue}/messages", json.dumps({"messages": messages}).encode())
    assert reply.status == 200, reply.body
    return [m["id"] for m in reply.json()["messages"]]


def stats(daemon: Daemon, queue: str) -> dict[str, Any]:
    for entry in http("GET", f"{daemon.url}/admin/queues").json()["queues"]:
        if entry["queue"] == queue:
            return entry  # type: ignore[no-any-return]
    raise KeyError(queue)


def test_messages_arrive_in_the_sqs_shape_and_are_deleted(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record"}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn", "batch_size": 10}])
    reply = http("POST", f"{daemon.url}/queues/q/messages",
                 json.dumps({"body": "hello", "attributes": {"Author": "Ann", "n": 3}}).encode())
    assert reply.status == 200
    message_id = reply.json()["id"]
    batch = wait_until(lambda: log.batches("fn"), what="the batch")[0]
    [record] = batch["records"]
    assert record["messageId"] == message_id
    assert record["body"] == "hello"
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:aws:sqs:us-east-1:000000000000:q"
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["attributes"]["SentTimestamp"].isdigit()
    assert record["messageAttributes"] == {
        "Author": {"stringValue": "Ann", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "n": {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"},
    }
    assert len(record["md5OfBody"]) == 32 and "md5OfMessageAttributes" in record
    wait_until(lambda: stats(daemon, "q")["in_flight"] == 0 and stats(daemon, "q")["visible"] == 0,
               what="the message to be deleted")
    text = daemon.metrics()
    assert metric_value(text, "eventd_mapping_batches_total", mapping="q->fn", outcome="success") == 1
    assert metric_value(text, "eventd_queue_messages_sent_total", queue="q") == 1


def test_window_flushes_on_time_without_more_traffic(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record"}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn", "batch_size": 100, "batching_window": "700ms"}])
    sent = time.time()
    send(daemon, "q", "a", "b", "c")
    batch = wait_until(lambda: log.batches("fn"), timeout=15, what="the window to flush")[0]
    # the batch waited for its window (more could have come), then went with what it had
    assert batch["t"] - sent >= 0.7 - 0.05
    assert sorted(r["body"] for r in batch["records"]) == ["a", "b", "c"]


def test_batches_respect_size_and_byte_caps(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record", "concurrency": 1}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn", "batch_size": 4, "batching_window": "2s",
                           "max_batch_bytes": 3000}])
    send(daemon, "q", *[f"m{i}" for i in range(8)])
    send(daemon, "q", *["x" * 1500 for _ in range(3)])
    wait_until(lambda: len(log.bodies("fn")) == 11, timeout=20, what="all messages")
    sizes = [len(b["records"]) for b in log.batches("fn")]
    assert max(sizes) <= 4
    for batch in log.batches("fn"):
        # 512 bytes of envelope per record count too: two 1500-byte bodies already pass 3000
        big = [r for r in batch["records"] if len(r["body"]) == 1500]
        assert len(big) <= 1


def test_filters_drop_and_delete_what_does_not_match(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record"}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn", "batching_window": "300ms",
                           "filters": [{"body": {"kind": ["order"], "total": [{"numeric": [">", 100]}]}}]}])
    send(daemon, "q", json.dumps({"kind": "order", "total": 250}), json.dumps({"kind": "order", "total": 5}),
         json.dumps({"kind": "refund", "total": 900}), "not json")
    wait_until(lambda: metric_value(daemon.metrics(), "eventd_mapping_records_filtered_total", mapping="q->fn") == 3,
               what="three messages filtered out")
    wait_until(lambda: log.bodies("fn"), what="the matching message")
    assert [json.loads(b) for b in log.bodies("fn")] == [{"kind": "order", "total": 250}]
    wait_until(lambda: stats(daemon, "q")["visible"] + stats(daemon, "q")["in_flight"] == 0,
               what="filtered messages to be deleted")


def test_partial_batch_failure_returns_only_the_listed_messages(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.partial", "timeout": "500ms"}},
                  queues={"q": {"visibility_timeout": "1s"}},
                  routes=[{"queue": "q", "function": "fn", "batching_window": "300ms",
                           "report_batch_item_failures": True}])
    send(daemon, "q", "ok-1", "fail-2", "ok-3")
    # the failed one comes back after the visibility timeout, with its receive count up
    wait_until(lambda: log.bodies("fn").count("fail-2") >= 2, timeout=15, what="the failed message to return")
    assert log.bodies("fn").count("ok-1") == 1 and log.bodies("fn").count("ok-3") == 1
    again = next(r for b in log.batches("fn")[1:] for r in b["records"] if r["body"] == "fail-2")
    assert int(again["attributes"]["ApproximateReceiveCount"]) >= 2
    text = daemon.metrics()
    assert metric_value(text, "eventd_mapping_batches_total", mapping="q->fn", outcome="partial") >= 1


def test_an_invalid_failure_report_fails_the_whole_batch(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.bad_answer", "timeout": "1s"}},
                  queues={"q": {"visibility_timeout": "1s"}},
                  routes=[{"queue": "q", "function": "fn", "report_batch_item_failures": True}])
    send(daemon, "q", "one")
    wait_until(lambda: log.bodies("fn").count("one") >= 2, timeout=15, what="the whole batch to be retried")


def test_poison_message_goes_to_the_dlq_after_max_receive_count(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.explode", "timeout": "1s"}},
                  queues={"q": {"visibility_timeout": "1s", "dead_letter": "dlq", "max_receive_count": 2},
                          "dlq": {}},
                  routes=[{"queue": "q", "function": "fn"}])
    [message_id] = send(daemon, "q", "poison")
    wait_until(lambda: stats(daemon, "dlq")["visible"] == 1, timeout=20, what="the poison message in the DLQ")
    assert log.bodies("fn") == ["poison", "poison"]  # received max_receive_count times, then moved
    moved = http("GET", f"{daemon.url}/admin/queues/dlq/messages/{message_id}").json()
    assert moved["body"] == "poison" and moved["id"] == message_id
    assert metric_value(daemon.metrics(), "eventd_queue_dead_lettered_total", queue="q", dead_letter="dlq") == 1


def test_producer_errors_are_clear(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record"}},
                  queues={"small": {"max_message_size": 10}})
    reply = http("POST", f"{daemon.url}/queues/nope/messages", b'{"body": "x"}')
    assert reply.status == 404 and reply.headers["x-amzn-errortype"] == "QueueDoesNotExist"
    reply = http("POST", f"{daemon.url}/queues/small/messages", b'{"body": "far too long for this"}')
    assert reply.status == 400 and "at most 10" in reply.json()["message"]
    reply = http("POST", f"{daemon.url}/queues/small/messages", b"{nope")
    assert reply.status == 400 and reply.headers["x-amzn-errortype"] == "InvalidRequestContentException"
    reply = http("POST", f"{daemon.url}/queues/small/messages", b'{"body": "x", "delay": "soon"}')
    assert reply.status == 400 and "delay" in reply.json()["message"]
    reply = http("POST", f"{daemon.url}/queues/small/messages", b'{"messages": []}')
    assert reply.status == 400


def test_delay_keeps_a_message_invisible(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record"}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn"}])
    sent = time.time()
    send(daemon, "q", "later", delay="800ms")
    batch = wait_until(lambda: log.batches("fn"), timeout=15, what="the delayed message")[0]
    assert batch["t"] - sent >= 0.8 - 0.05


def test_a_queues_delay_holds_back_a_batch_of_plain_bodies(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    # plain batches (a body alone per entry) take their own path to the store: the queue's delay holds too
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record"}}, queues={"q": {"delay": "800ms"}},
                  routes=[{"queue": "q", "function": "fn"}])
    sent = time.time()
    reply = http("POST", f"{daemon.url}/queues/q/messages", b'{"messages": [{"body": "a"}, {"body": "b"}]}')
    assert reply.status == 200 and len(reply.json()["messages"]) == 2
    wait_until(lambda: len(log.bodies("fn")) == 2, timeout=15, what="the delayed messages")
    assert min(batch["t"] for batch in log.batches("fn")) - sent >= 0.8 - 0.05


def cli(daemon: Daemon, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventd", *args, "--url", daemon.url], capture_output=True,
                          text=True, timeout=60, input=stdin)


def test_cli_send_stats_peek_purge(daemon_factory, log: BatchLog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record"}}, queues={"q": {}})
    one = cli(daemon, "send", "q", "--body", "hi")
    assert one.returncode == 0, one.stderr
    assert len(one.stdout.strip()) == 36
    lines = tmp_path / "lines.txt"
    lines.write_text("a\nb\n\nc\n")
    many = cli(daemon, "send", "q", "--file", str(lines), "--lines")
    assert many.returncode == 0 and len(many.stdout.split()) == 3  # blank lines are skipped
    whole = cli(daemon, "send", "q", "--file", str(lines))
    assert whole.returncode == 0 and len(whole.stdout.split()) == 1
    stats_out = cli(daemon, "queue", "stats")
    assert stats_out.returncode == 0
    assert any(line.split()[:2] == ["q", "5"] for line in stats_out.stdout.splitlines()), stats_out.stdout
    peek = cli(daemon, "queue", "peek", "q", "--limit", "2")
    assert peek.returncode == 0 and "hi" in peek.stdout
    purge = cli(daemon, "queue", "purge", "q")
    assert purge.stdout.strip() == "purged 5 messages from q"
    missing = cli(daemon, "send", "nope", "--body", "x")
    assert missing.returncode == 1 and "QueueDoesNotExist" in missing.stderr and missing.stderr.count("\n") == 1


def test_kill_9_mid_batch_loses_no_committed_message(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    import signal

    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record", "timeout": "1s"}},
                  queues={"q": {"visibility_timeout": "2s"}},
                  routes=[{"queue": "q", "function": "fn", "batch_size": 10}])
    bodies = [f"m{n}" for n in range(2000)]
    for start in range(0, len(bodies), 500):
        send(daemon, "q", *bodies[start:start + 500])
    wait_until(lambda: len(log.bodies()) >= 400, timeout=60, what="processing to be under way")
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)
    daemon.start()
    # messages that were in flight at the kill come back once their visibility timeout passes
    wait_until(lambda: set(log.bodies()) >= set(bodies), timeout=90, what="every committed message to run")
    repeated = len(log.bodies()) - len(set(log.bodies()))
    print(f"\nqueue kill -9: 2000 messages, {repeated} ran twice (received but not deleted at the kill)")
    wait_until(lambda: stats(daemon, "q")["visible"] + stats(daemon, "q")["in_flight"] == 0,
               what="the queue to drain")


def test_fifo_keeps_group_order_across_failures_and_deduplicates(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.fail_once", "timeout": "1s"}},
                  queues={"orders.fifo": {"fifo": True, "visibility_timeout": "1s",
                                          "content_based_deduplication": True}},
                  routes=[{"queue": "orders.fifo", "function": "fn", "batch_size": 10,
                           "report_batch_item_failures": True}])
    messages = []
    for n in range(30):
        group = f"g{n % 3}"
        body = f"{group}-{n}" + ("-fail" if n == 4 else "")
        messages.append({"body": body, "group_id": group})
    reply = http("POST", f"{daemon.url}/queues/orders.fifo/messages", json.dumps({"messages": messages}).encode())
    assert reply.status == 200, reply.body
    # a duplicate body within the window is accepted but not enqueued again, and gets the first id
    again = http("POST", f"{daemon.url}/queues/orders.fifo/messages",
                 json.dumps({"body": "g0-0", "group_id": "g0"}).encode())
    assert again.json()["id"] == reply.json()["messages"][0]["id"]
    wait_until(lambda: stats(daemon, "orders.fifo")["visible"] + stats(daemon, "orders.fifo")["in_flight"] == 0,
               timeout=60, what="the FIFO queue to drain")
    # every group saw its messages in order (first deliveries), through a failure and its retry
    for group in ("g0", "g1", "g2"):
        seen = [b for b in log.bodies() if b.startswith(group + "-")]
        first_time = []
        for body in seen:
            if body not in first_time:
                first_time.append(body)
        numbers = [int(b.split("-")[1]) for b in first_time]
        assert numbers == sorted(numbers), f"{group} out of order: {seen}"
    assert log.bodies().count("g0-0") == 1  # the duplicate never ran
    batches = log.batches("fn")
    record = batches[0]["records"][0]
    assert record["attributes"]["MessageGroupId"] in {"g0", "g1", "g2"}
    assert len(record["attributes"]["SequenceNumber"]) == 20 and record["attributes"]["MessageDeduplicationId"]
    missing_group = http("POST", f"{daemon.url}/queues/orders.fifo/messages", b'{"body": "x"}')
    assert missing_group.status == 400 and "group_id" in missing_group.json()["message"]


def test_filters_see_message_attributes_as_the_record_shows_them(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    # Regression: filters saw eventd's stored attribute shape, not the record's lower-case one.
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record"}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn", "batching_window": "300ms",
                           "filters": [{"messageAttributes": {"kind": {"stringValue": ["wanted"]}}}]}])
    http("POST", f"{daemon.url}/queues/q/messages", json.dumps({"messages": [
        {"body": "yes", "attributes": {"kind": "wanted"}}, {"body": "no", "attributes": {"kind": "other"}}]}).encode())
    wait_until(lambda: log.bodies("fn"), what="the matching message")
    wait_until(lambda: metric_value(daemon.metrics(), "eventd_mapping_records_filtered_total", mapping="q->fn") == 1,
               what="the other message filtered out")
    assert log.bodies("fn") == ["yes"]


def test_dead_letter_copies_wake_the_dlq_mapping_at_once(daemon_factory, log: BatchLog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Regression: only producer sends woke a queue's mapping; a DLQ copy waited up to a minute.
    daemon = make(daemon_factory, log, {
        "fails": {"handler": "h.explode", "async": {"max_retries": 0, "dead_letter": "dlq"}},
        "fn": {"handler": "h.record"},
    }, queues={"dlq": {}}, routes=[{"queue": "dlq", "function": "fn"}])
    wait_until(lambda: stats(daemon, "dlq") is not None, what="the daemon")
    # the mapping has polled and is idle now; the DLQ copy must wake it
    reply = daemon.invoke("fails", {"n": 1}, headers={"X-Amz-Invocation-Type": "Event"})
    assert reply.status == 202
    wait_until(lambda: log.bodies("fn"), timeout=10, what="the DLQ mapping to run without waiting out its poll")
    assert json.loads(log.bodies("fn")[0]) == {"n": 1}


def test_a_mapping_never_throttles_itself(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    # Regression: the poller counted free slots, then its earlier batch took the last one, and the new
    # batch was throttled (and the whole mapping backed off for a second).
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record", "concurrency": 2}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn", "batch_size": 1}])
    bodies = [f"m{n}" for n in range(300)]
    send(daemon, "q", *bodies)
    wait_until(lambda: len(log.bodies()) >= 300, timeout=60, what="every message")
    text = daemon.metrics()
    assert metric_value(text, "eventd_mapping_batches_total", mapping="q->fn", outcome="throttled") == 0
    assert metric_value(text, "eventd_throttles_total", function="fn",
                        reason="ReservedFunctionConcurrentInvocationLimitExceeded") == 0


def test_a_mapping_at_its_max_concurrency_does_not_starve_the_daemon(daemon_factory, log: BatchLog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Regression: at max_concurrency the poller waited on a wake-up that a send had already set, so it
    # looped without yielding and the daemon stopped answering.
    from tests.harness import Gate

    gate = Gate(tmp_path / "gate.sock")
    held = Gate.HANDLER + """
def batch(event, context):
    for record in event["Records"]:
        if record["body"].startswith("{"):
            handler(json.loads(record["body"]), context)
"""
    daemon = daemon_factory({"fn": {"handler": "gated.batch"}}, {"gated.py": "import json\n" + held},
                            queues={"q": {}}, routes=[{"queue": "q", "function": "fn", "max_concurrency": 1}]).start()
    send(daemon, "q", json.dumps({"gate": gate.path}))
    gate.wait_arrivals(1)  # the mapping's only batch is running
    send(daemon, "q", "more", "and more")  # these sends wake the poller, which can start nothing
    assert http("GET", daemon.url + "/healthz", timeout=5).status == 200
    gate.close()
    wait_until(lambda: stats(daemon, "q")["visible"] + stats(daemon, "q")["in_flight"] == 0, what="the queue to drain")


def test_without_a_window_a_batch_settles_and_receives_the_next_in_one_commit(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    # 200 messages, batches of 10, one slot: 20 batches. Deleting a batch and receiving the next one
    # are one store operation, so the drain takes about 20 operations, not 40.
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record", "concurrency": 1}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn", "batch_size": 10}])
    before = metric_value(daemon.metrics(), "eventd_store_commit_operations_sum")
    bodies = [f"m{n}" for n in range(200)]
    send(daemon, "q", *bodies)
    wait_until(lambda: stats(daemon, "q")["visible"] + stats(daemon, "q")["in_flight"] == 0, timeout=30,
               what="the queue to drain")
    assert sorted(log.bodies("fn")) == sorted(bodies)  # each exactly once
    assert [len(b["records"]) for b in log.batches("fn")] == [10] * 20
    operations = metric_value(daemon.metrics(), "eventd_store_commit_operations_sum") - before
    assert operations <= 30, operations


def test_without_a_window_byte_caps_still_cut_batches(daemon_factory, log: BatchLog) -> None:  # type: ignore[no-untyped-def]
    daemon = make(daemon_factory, log, {"fn": {"handler": "h.record", "concurrency": 1}}, queues={"q": {}},
                  routes=[{"queue": "q", "function": "fn", "batch_size": 4, "max_batch_bytes": 3000}])
    bodies = [("x" * 1500 if n % 3 == 0 else "s") + str(n) for n in range(60)]
    send(daemon, "q", *bodies)
    wait_until(lambda: stats(daemon, "q")["visible"] + stats(daemon, "q")["in_flight"] == 0, timeout=30,
               what="the queue to drain")
    assert sorted(log.bodies("fn")) == sorted(bodies)  # each exactly once
    for batch in log.batches("fn"):
        assert len(batch["records"]) <= 4
        # 512 bytes of envelope per record count too: two 1500-byte bodies already pass 3000
        assert sum(len(r["body"]) > 1000 for r in batch["records"]) <= 1


GATED = '''
import json, socket
from h import _log

def batch(event, context):
    _log("gated", event, context)
    for record in event["Records"]:
        if record["body"].startswith("{"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(json.loads(record["body"])["gate"])
                sock.recv(1)
'''


def test_a_batch_received_ahead_goes_back_uncounted_when_the_mapping_stops(daemon_factory, log: BatchLog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.harness import Gate

    gate = Gate(tmp_path / "gate.sock")
    functions = {"fn": {"handler": "gated.batch", "concurrency": 1, "environment": {"BATCH_LOG": str(log.path)}}}
    daemon = daemon_factory(functions, {"h.py": HANDLERS, "gated.py": GATED}, queues={"q": {}},
                            routes=[{"queue": "q", "function": "fn", "batch_size": 10}]).start()
    bodies = [json.dumps({"gate": gate.path})] + [f"m{n}" for n in range(25)]
    send(daemon, "q", *bodies)
    # Given the first batch held in its handler, and the next ones (all the rest: up to 8 batches of
    # 10 fit) received ahead of it
    gate.wait_arrivals(1)
    wait_until(lambda: stats(daemon, "q")["in_flight"] == 26, what="the next batches to be received ahead")
    # When the daemon is asked to stop (its listener closes), and only then the first batch finishes
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)

    def closed() -> bool:
        try:
            http("GET", daemon.url + "/healthz", timeout=2)
        except OSError:
            return True
        return False

    wait_until(closed, what="the daemon to stop listening")
    gate.close()
    assert daemon.process.wait(20) == 0
    # Then the batch received ahead never ran and went back to the queue with its receive uncounted
    assert len(log.batches("fn")) == 1
    daemon.start()
    wait_until(lambda: len(log.bodies("fn")) == 26, timeout=30, what="the rest to run after the restart")
    assert sorted(log.bodies("fn")) == sorted(bodies)
    later = [r for b in log.batches("fn")[1:] for r in b["records"]]
    assert {r["attributes"]["ApproximateReceiveCount"] for r in later} == {"1"}


def test_batches_received_ahead_stay_within_the_visibility_timeout(daemon_factory, log: BatchLog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.harness import Gate

    gate = Gate(tmp_path / "gate.sock")
    # a batch ahead waits one function timeout per batch before it: 10 s of visibility over a 3 s
    # timeout leaves room for two batches ahead, not the usual eight
    functions = {"fn": {"handler": "gated.batch", "concurrency": 1, "timeout": "3s",
                        "environment": {"BATCH_LOG": str(log.path)}}}
    daemon = daemon_factory(functions, {"h.py": HANDLERS, "gated.py": GATED},
                            queues={"q": {"visibility_timeout": "10s"}},
                            routes=[{"queue": "q", "function": "fn", "batch_size": 10}]).start()
    bodies = [json.dumps({"gate": gate.path})] + [f"m{n}" for n in range(59)]
    send(daemon, "q", *bodies)
    gate.wait_arrivals(1)
    wait_until(lambda: stats(daemon, "q")["in_flight"] == 30, what="two batches to be received ahead")
    assert stats(daemon, "q")["in_flight"] == 30  # and no more
    gate.close()
    wait_until(lambda: len(log.bodies("fn")) == 60, timeout=30, what="every message to run")
    assert sorted(log.bodies("fn")) == sorted(bodies)
