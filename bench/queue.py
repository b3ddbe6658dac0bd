"""Benchmark eventd's queue and stream mappings (pre-loaded drain and live end to end) beside Huey.

    python bench/queue.py                        # about 3 minutes on 2 cores
    python bench/queue.py --json out.json        # also write every figure as JSON
    python bench/queue.py --messages 5000 --batch-sizes 10 --also-full-at 0   # a quick look, ~40 s

What runs, each in its own process, all on loopback or local files:

* eventd:  `python -m eventd run -c <tmp>/eventd.yaml` on a fresh state dir per case: a no-op
           function `noop` (`return None`; reserved `concurrency` = `warm` = --workers), a queue `q`
           with the route `{queue: q, function: noop, batch_size: B, max_concurrency: --workers}`
           (B = each of --batch-sizes; the route's max_concurrency works around the mapping taking
           more batches than the function has slots, see docs/benchmarks.md), or a stream `s` of
           --shards shards with `{stream: s, function: noop, batch_size: --stream-batch-size,
           starting_position: trim_horizon}`. `log_level: info`; `durability: normal` (eventd's default)
           and, at batch size --also-full-at, `durability: full` too. At --also-uncapped-at, the queue
           route once more without max_concurrency (drain only), to show what that costs.
* Huey:    `huey_consumer bench_huey_tasks.huey -w <--workers> -k <--huey-worker-type>` on a
           SqliteHuey whose storage settings are Huey's defaults (WAL journal; `fsync` unset, so
           SQLite's default synchronous=FULL: an fsync at every commit), and a task `noop(body)` that
           returns None.
* this file: the producer (HTTP/1.1 keep-alive client for eventd, 500 messages per request; Huey's
           own `noop(body)` call, one message per call, for Huey) and the probes.

Every case sends the same --messages bodies (--body-bytes each) and is measured twice:

* pre-loaded drain: messages are committed while nothing consumes them (eventd: the route is
  `enabled: false`; Huey: no consumer), timed as *enqueue*. Then the consumer starts (eventd:
  stop, flip `enabled: true`, start again; Huey: start the consumer) and the *drain* is timed from
  the first receive (eventd: the oldest message's `first_received_at`, or when it is gone; Huey:
  when the oldest task is dequeued) until the queue is empty (eventd: the last message deleted,
  after its batch succeeded; Huey: the last task dequeued; Huey deletes at dequeue, so up to
  --workers no-op tasks may still be finishing). Streams: from the mapping's first checkpoint write
  (done when it starts, right before its first read) until every shard's checkpoint is at its last
  record.
* live end to end: the consumer is already running (eventd: the route enabled, ready; Huey: the
  consumer started) and the same messages are sent; timed from the first send until all have been
  processed (as above).

The probes read the SQLite files directly, read-only, with O(1) queries (the oldest row of the
queue by rowid; the mapping's checkpoints), every --poll-ms: cheap enough not to disturb what they
watch (GET /admin/queues counts every row of the queue per call). At the end of each eventd case
/admin/queues must say the queue is empty and /metrics must count every record in successful (or
throttled, then retried) batches; Huey's log must show every task executed.
"""

# ruff: noqa: E402 - the imports below come after _common.py is loaded, on purpose
from __future__ import annotations

import importlib.util
import os
import sys

# This file is bench/queue.py and `python bench/queue.py` puts bench/ first on sys.path, where it (and
# any other bench/*.py) would shadow the standard library's module of the same name (`queue`, used by
# logging, concurrent.futures, ...). bench/ is not a package: load _common.py by its path (loading it
# takes bench/ off sys.path) before importing anything else.
_spec = importlib.util.spec_from_file_location(
    "_bench_common", os.path.join(os.path.dirname(os.path.realpath(__file__)), "_common.py"))
common = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(common)  # type: ignore[union-attr]

import argparse
import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

NOOP_SOURCE = """\
def handler(event, context):
    return None
"""

HUEY_TASKS = """\
import os

from huey import SqliteHuey

# Huey's own defaults for storage: WAL, fsync unset (SQLite's synchronous=FULL), 8 MB cache
huey = SqliteHuey("bench", filename=os.environ["BENCH_HUEY_DB"])


@huey.task()
def noop(body):
    return None
"""

MAX_PER_REQUEST = 500  # eventd's producer API limit
TARGET_BATCH = 10
TARGET_DRAIN_RATIO = 5.0  # eventd drain rate >= 5x Huey's at batch size 10
TARGET_END_TO_END = 20_000.0  # records/s end to end at batch size 10


# --------------------------------------------------------------------------------------------------
# messages, probes, samples
# --------------------------------------------------------------------------------------------------


def make_bodies(count: int, size: int) -> list[str]:
    """`count` distinct JSON texts of exactly `size` bytes (ASCII)."""
    bodies = []
    for n in range(count):
        head = f'{{"n": {n}, "kind": "bench", "pad": "'
        pad = max(0, size - len(head) - 2)
        bodies.append(head + "x" * pad + '"}')
    return bodies


def connect_ro(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    """A read-only connection to another process's WAL database (it must exist)."""
    common.wait_until(path.exists, timeout, f"{path} to exist")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Sample:
    """Wall time, CPU of some processes (with their children at the time), and the machine's CPU."""

    def __init__(self, pids: list[int]) -> None:
        self.wall = time.time()
        self.cpu = common.cpu_seconds(pids)
        self.machine, _ = common.machine_cpu()
        self.bench = time.process_time()


def cpu_between(a: Sample, b: Sample, seconds: float) -> dict[str, float]:
    wall = max(b.wall - a.wall, 1e-9)
    own = b.cpu - a.cpu
    bench = b.bench - a.bench
    return {
        "consumer_cpu_s": round(own, 3),
        "consumer_cpu_cores": round(own / wall, 2),
        "bench_cpu_cores": round(bench / wall, 2),
        "other_cpu_cores": round(max(0.0, (b.machine - a.machine) - own - bench) / wall, 2),
        "cpu_us_per_record": round(own / seconds * 1e6, 1) if seconds else 0.0,
    }


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for kid in common.children_of(pid):
        pids.extend(process_tree(kid))
    return pids


def poll(predicate: Any, timeout: float, what: str, interval: float) -> Any:
    return common.wait_until(predicate, timeout, what, interval=interval)


# --------------------------------------------------------------------------------------------------
# eventd
# --------------------------------------------------------------------------------------------------


def eventd_config(root: Path, port: int, args: argparse.Namespace, route: dict[str, Any], source: str,
                  durability: str) -> Path:
    functions = root / "functions"
    functions.mkdir(exist_ok=True)
    (functions / "noop.py").write_text(NOOP_SOURCE)
    route_yaml = ", ".join(f"{k}: {v}" for k, v in route.items())
    config = root / "eventd.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        listen: 127.0.0.1:{port}
        state_dir: state
        log_level: {args.log_level}
        durability: {durability}
        drain_timeout: 10s
        functions:
          noop:
            handler: noop.handler
            code: functions/
            concurrency: {args.workers}
            warm: {args.workers}
        """)
        + source
        + f"routes:\n  - {{{route_yaml}}}\n"
    )
    return config


class Eventd:
    def __init__(self, root: Path, config: Path, port: int) -> None:
        self.root, self.config, self.port = root, config, port
        self.server: Any = None
        self.starts = 0

    def spawn(self) -> Any:
        self.starts += 1
        self.server = common.eventd_server("eventd", self.config, self.port, self.root / f"eventd-{self.starts}.log")
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            code, _ = self.server.stop()
            if code != 0:
                raise SystemExit(f"bench: eventd exited with {code}; see {self.server.log_path}")
            self.server = None

    def set_enabled(self, enabled: bool) -> None:
        text = self.config.read_text()
        old, new = ("enabled: true", "enabled: false") if not enabled else ("enabled: false", "enabled: true")
        self.config.write_text(text.replace(old, new))

    def metrics(self) -> dict[str, float]:
        status, _, body = get(self.port, "/metrics")
        if status != 200:
            raise SystemExit(f"bench: GET /metrics answered {status}")
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith("eventd_") and " " in line:
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out


def metric_delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def mapping_figures(before: dict[str, float], after: dict[str, float], mapping: str) -> dict[str, Any]:
    label = f'{{mapping="{mapping}"}}'
    batches = metric_delta(before, after, f"eventd_mapping_batch_records_count{label}")
    records = metric_delta(before, after, f"eventd_mapping_batch_records_sum{label}")
    commits = metric_delta(before, after, "eventd_store_commit_operations_count")
    ops = metric_delta(before, after, "eventd_store_commit_operations_sum")
    commit_s = metric_delta(before, after, "eventd_store_commit_seconds_sum")
    outcomes = {
        outcome: metric_delta(before, after, f'eventd_mapping_batches_total{{mapping="{mapping}",outcome="{outcome}"}}')
        for outcome in ("success", "partial", "failure", "throttled")
    }
    return {
        "batches": int(batches),
        "records_invoked": int(records),
        "mean_batch": round(records / batches, 2) if batches else 0.0,
        "batch_outcomes": {k: int(v) for k, v in outcomes.items() if v},
        "store_commits": int(commits),
        "store_ops_per_commit": round(ops / commits, 1) if commits else 0.0,
        "store_commit_ms_mean": round(commit_s / commits * 1000, 3) if commits else 0.0,
        "store_commit_s_total": round(commit_s, 3),
    }


class Producer:
    """One keep-alive HTTP/1.1 connection; sends pre-built JSON bodies; checks every answer."""

    def __init__(self, port: int) -> None:
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.slowest_s = 0.0

    def send_all(self, path: str, bodies: list[bytes], key: str, n: int) -> None:
        """Send every body; stop the benchmark unless eventd committed all `n` items."""
        sent = self.send(path, bodies, key)
        if sent != n:
            raise SystemExit(f"bench: eventd committed {sent} of {n} {key}")

    def send(self, path: str, bodies: list[bytes], key: str) -> int:
        sent = 0
        for number, body in enumerate(bodies):
            t0 = time.perf_counter()
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = self.conn.getresponse()
                data = response.read()
            except TimeoutError:
                raise SystemExit(f"bench: POST {path} (request {number + 1} of {len(bodies)}) got no answer "
                                 f"within {self.conn.timeout:.0f} s") from None
            self.slowest_s = max(self.slowest_s, time.perf_counter() - t0)
            if response.status != 200:
                raise SystemExit(f"bench: POST {path} answered {response.status}: {data[:300]!r}")
            sent += len(json.loads(data)[key])
        return sent

    def close(self) -> None:
        self.conn.close()


def preload(daemon: Any, port: int, path: str, requests: list[bytes], what: str, n: int) -> float:
    """Start eventd, commit all `n` items through the producer API, stop it; the seconds it took to send."""
    daemon.spawn().wait_ready(60)
    producer = Producer(port)
    t0 = time.time()
    producer.send_all(path, requests, what, n)
    enqueue_s = time.time() - t0
    producer.close()
    daemon.stop()
    return enqueue_s


def queue_requests(bodies: list[str]) -> list[bytes]:
    return [
        json.dumps({"messages": [{"body": b} for b in bodies[i : i + MAX_PER_REQUEST]]}).encode()
        for i in range(0, len(bodies), MAX_PER_REQUEST)
    ]


def stream_requests(bodies: list[str], keys: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "records": [
                    {"partition_key": f"key-{(i + j) % keys}", "data": b}
                    for j, b in enumerate(bodies[i : i + MAX_PER_REQUEST])
                ]
            }
        ).encode()
        for i in range(0, len(bodies), MAX_PER_REQUEST)
    ]


def run_eventd_queue(args: argparse.Namespace, bodies: list[str], batch_size: int, durability: str,
                     route_cap: int | None, live: bool = True) -> dict[str, Any]:
    n = len(bodies)
    requests = queue_requests(bodies)
    interval = args.poll_ms / 1000
    with tempfile.TemporaryDirectory(prefix="eventd-bench-queue-") as tmp:
        root = Path(tmp)
        port = common.free_port()
        route: dict[str, Any] = {"queue": "q", "function": "noop", "batch_size": batch_size}
        if route_cap:
            route["max_concurrency"] = route_cap
        route["enabled"] = "false"
        config = eventd_config(root, port, args, route, "queues:\n  q: {}\n", durability)
        daemon = Eventd(root, config, port)
        result: dict[str, Any] = {"kind": "queue", "batch_size": batch_size, "durability": durability,
                                  "route_max_concurrency": route_cap, "messages": n}
        try:
            # 1. pre-load with the route disabled
            enqueue_s = preload(daemon, port, "/queues/q/messages", requests, "messages", n)
            # 2. drain: enable the route, start again, watch the oldest message
            db = connect_ro(root / "state" / "eventd.db")
            # rowid order, no index: O(1) while q is the only queue holding messages (the indexes would make
            # SQLite sort every row of q for each probe)
            oldest_q = "SELECT seq, first_received_at FROM messages NOT INDEXED WHERE queue = 'q' ORDER BY seq LIMIT 1"
            first_seq = db.execute(oldest_q).fetchone()[0]
            daemon.set_enabled(True)
            server = daemon.spawn()
            profiler = common.Profiler(args.profile, f"eventd-queue-b{batch_size}-{durability}", args.profile_idle)
            if args.profile:
                poll(lambda: _healthy(port), 60, "eventd GET /healthz", 0.005)
                profiler.start(server.proc.pid)
            start_seen: dict[str, Any] = {}

            def started() -> bool:
                row = db.execute(oldest_q).fetchone()
                if row is not None and row[0] == first_seq and row[1] is None:
                    return False
                start_seen["sample"] = Sample(process_tree(server.proc.pid))
                # the oldest message's first receive time when it is still there; else now (<= poll late)
                start_seen["t"] = row[1] if row is not None and row[0] == first_seq else start_seen["sample"].wall
                return True

            poll(started, 60, "the drain to start", interval)
            try:
                poll(lambda: db.execute(oldest_q).fetchone() is None, args.timeout, "the queue to drain", interval)
            except SystemExit:
                if live:
                    raise
                # the demonstration case: report how far it got rather than stopping the whole run
                left = db.execute("SELECT count(*) FROM messages NOT INDEXED WHERE queue = 'q'").fetchone()[0]
                result["unfinished"] = {"after_s": args.timeout, "messages_left": left}
            end = Sample(process_tree(server.proc.pid))
            profiler.stop()
            drain_s = end.wall - start_seen["t"]
            done = n - result.get("unfinished", {}).get("messages_left", 0)
            server.wait_ready(30)
            after = daemon.metrics()
            if "unfinished" not in result:
                check_queue_empty(port)
            drain = {
                "enqueue_s": round(enqueue_s, 3),
                "enqueue_rps": round(n / enqueue_s, 1),
                "drain_s": round(drain_s, 3),
                "drain_rps": round(done / drain_s, 1),
                "enqueue_plus_drain_rps": round(done / (enqueue_s + drain_s), 1),
                **cpu_between(start_seen["sample"], end, done),
                **mapping_figures({}, after, "q->noop"),
            }
            if "unfinished" in result:
                drain["throttled_batches"] = drain["batch_outcomes"].get("throttled", 0)
            else:
                check_counts(drain, n, f"eventd queue batch {batch_size} drain")
            result["preloaded"] = drain
            if not live:
                db.close()
                return result
            # 3. live: the route is running; send the same messages again
            before = daemon.metrics()
            producer = Producer(port)
            s0 = Sample(process_tree(server.proc.pid))
            producer.send_all("/queues/q/messages", requests, "messages", n)
            sent_at = time.time()
            producer.close()
            poll(lambda: db.execute(oldest_q).fetchone() is None, args.timeout, "the live queue to drain", interval)
            s1 = Sample(process_tree(server.proc.pid))
            after = daemon.metrics()
            check_queue_empty(port)
            total_s = s1.wall - s0.wall
            live = {
                "send_s": round(sent_at - s0.wall, 3),
                "slowest_request_ms": round(producer.slowest_s * 1000, 1),
                "end_to_end_s": round(total_s, 3),
                "end_to_end_rps": round(n / total_s, 1),
                **cpu_between(s0, s1, n),
                **mapping_figures(before, after, "q->noop"),
            }
            check_counts(live, n, f"eventd queue batch {batch_size} live")
            result["live"] = live
            db.close()
        finally:
            if daemon.server is not None:
                daemon.server.stop()
            keep_logs(args, root, f"queue-b{batch_size}-{durability}")
    return result


def run_eventd_stream(args: argparse.Namespace, bodies: list[str]) -> dict[str, Any]:
    n = len(bodies)
    requests = stream_requests(bodies, args.partition_keys)
    interval = args.poll_ms / 1000
    batch_size = args.stream_batch_size
    with tempfile.TemporaryDirectory(prefix="eventd-bench-stream-") as tmp:
        root = Path(tmp)
        port = common.free_port()
        route = {"stream": "s", "function": "noop", "batch_size": batch_size,
                 "starting_position": "trim_horizon", "enabled": "false"}
        config = eventd_config(root, port, args, route, f"streams:\n  s: {{shards: {args.shards}}}\n", args.durability)
        daemon = Eventd(root, config, port)
        result: dict[str, Any] = {"kind": "stream", "durability": args.durability, "shards": args.shards,
                                  "batch_size": batch_size, "records": n}
        try:
            enqueue_s = preload(daemon, port, "/streams/s/records", requests, "records", n)
            db = connect_ro(root / "state" / "eventd.db")
            shards = dict(db.execute("SELECT shard, next_seq - 1 FROM stream_shards WHERE stream = 's'").fetchall())
            result["records_per_shard"] = [shards.get(i, 0) for i in range(args.shards)]
            checkpoints_q = "SELECT count(*), coalesce(sum(seq), 0) FROM checkpoints WHERE mapping = 's->noop'"
            daemon.set_enabled(True)
            server = daemon.spawn()
            profiler = common.Profiler(args.profile, "eventd-stream", args.profile_idle)
            if args.profile:
                poll(lambda: _healthy(port), 60, "eventd GET /healthz", 0.005)
                profiler.start(server.proc.pid)
            start_seen: dict[str, Sample] = {}

            def started() -> bool:
                if db.execute(checkpoints_q).fetchone()[0] == 0:
                    return False
                start_seen["sample"] = Sample(process_tree(server.proc.pid))
                return True

            poll(started, 60, "the stream mapping to start", interval)
            poll(lambda: db.execute(checkpoints_q).fetchone()[1] >= n, args.timeout, "the stream to drain", interval)
            end = Sample(process_tree(server.proc.pid))
            profiler.stop()
            drain_s = end.wall - start_seen["sample"].wall
            server.wait_ready(30)
            after = daemon.metrics()
            drain = {
                "enqueue_s": round(enqueue_s, 3),
                "enqueue_rps": round(n / enqueue_s, 1),
                "drain_s": round(drain_s, 3),
                "drain_rps": round(n / drain_s, 1),
                "enqueue_plus_drain_rps": round(n / (enqueue_s + drain_s), 1),
                **cpu_between(start_seen["sample"], end, n),
                **mapping_figures({}, after, "s->noop"),
            }
            check_counts(drain, n, "eventd stream drain")
            result["preloaded"] = drain
            before = daemon.metrics()
            producer = Producer(port)
            s0 = Sample(process_tree(server.proc.pid))
            producer.send_all("/streams/s/records", requests, "records", n)
            sent_at = time.time()
            producer.close()
            poll(lambda: db.execute(checkpoints_q).fetchone()[1] >= 2 * n, args.timeout, "the live stream to drain",
                 interval)
            s1 = Sample(process_tree(server.proc.pid))
            after = daemon.metrics()
            total_s = s1.wall - s0.wall
            live = {
                "send_s": round(sent_at - s0.wall, 3),
                "slowest_request_ms": round(producer.slowest_s * 1000, 1),
                "end_to_end_s": round(total_s, 3),
                "end_to_end_rps": round(n / total_s, 1),
                **cpu_between(s0, s1, n),
                **mapping_figures(before, after, "s->noop"),
            }
            check_counts(live, n, "eventd stream live")
            result["live"] = live
            db.close()
        finally:
            if daemon.server is not None:
                daemon.server.stop()
            keep_logs(args, root, "stream")
    return result


def _healthy(port: int) -> bool:
    try:
        return common.http_call(port, "GET", "/healthz", timeout=2)[0] == 200
    except OSError:
        return False


def get(port: int, path: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    try:
        return common.http_call(port, "GET", path, timeout=timeout)  # type: ignore[no-any-return]
    except TimeoutError:
        raise SystemExit(f"bench: GET {path} got no answer from eventd within {timeout:.0f} s") from None


def check_queue_empty(port: int) -> None:
    status, _, body = get(port, "/admin/queues")
    queues = {q["queue"]: q for q in json.loads(body)["queues"]} if status == 200 else {}
    q = queues.get("q")
    if q is None or q["visible"] or q["in_flight"] or q["delayed"]:
        raise SystemExit(f"bench: GET /admin/queues does not show q empty: {body[:300]!r}")


def check_counts(figures: dict[str, Any], n: int, what: str) -> None:
    """Every record ran in a successful batch. Throttled batches (the mapping took more batches than
    the function had free slots; their records go back to the queue and run again) are allowed, and
    reported; failures are not."""
    outcomes = figures["batch_outcomes"]
    retried = figures["records_invoked"] - n
    if set(outcomes) - {"success", "throttled"} or retried < 0 or (retried > 0 and not outcomes.get("throttled")):
        raise SystemExit(f"bench: {what}: /metrics counts {figures['records_invoked']} records invoked of {n}, "
                         f"batches {outcomes}")
    figures["throttled_batches"] = outcomes.get("throttled", 0)


def keep_logs(args: argparse.Namespace, root: Path, name: str) -> None:
    if not args.keep_logs:
        return
    target = Path(args.keep_logs) / name
    target.mkdir(parents=True, exist_ok=True)
    for log in root.glob("*.log"):
        (target / log.name).write_bytes(log.read_bytes())


# --------------------------------------------------------------------------------------------------
# Huey
# --------------------------------------------------------------------------------------------------


class HueyConsumer:
    def __init__(self, root: Path, args: argparse.Namespace, env: dict[str, str], number: int) -> None:
        self.log_path = root / f"huey-consumer-{number}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["huey_consumer", "bench_huey_tasks.huey", "-w", str(args.workers), "-k", args.huey_worker_type],
            cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def wait_started(self, timeout: float) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: huey_consumer exited with {self.proc.returncode}:\n"
                                 f"{self.log_path.read_text(errors='replace')[-3000:]}")
            return "Huey consumer started" in self.log_path.read_text(errors="replace")

        common.wait_until(started, timeout, "huey_consumer to start", interval=0.005)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Huey: SIGINT is the graceful stop
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_huey(args: argparse.Namespace, bodies: list[str]) -> dict[str, Any]:
    n = len(bodies)
    interval = args.poll_ms / 1000
    with tempfile.TemporaryDirectory(prefix="eventd-bench-huey-") as tmp:
        root = Path(tmp)
        (root / "bench_huey_tasks.py").write_text(HUEY_TASKS)
        db_path = root / "huey.db"
        env = {**os.environ, "BENCH_HUEY_DB": str(db_path), "PYTHONPATH": str(root)}
        os.environ["BENCH_HUEY_DB"] = str(db_path)
        spec = importlib.util.spec_from_file_location("bench_huey_tasks", root / "bench_huey_tasks.py")
        assert spec is not None and spec.loader is not None
        tasks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tasks)
        storage = tasks.huey.storage
        result: dict[str, Any] = {
            "kind": "huey",
            "messages": n,
            "workers": args.workers,
            "worker_type": args.huey_worker_type,
            "storage": {"journal_mode": storage._journal_mode, "fsync": storage._fsync},
        }
        consumers: list[HueyConsumer] = []
        try:
            # what SQLite actually runs with, on the producer's own connection
            conn = storage.conn
            result["storage"]["synchronous"] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                conn.execute("PRAGMA synchronous").fetchone()[0]]
            result["storage"]["journal_mode_effective"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
            noop = tasks.noop
            t0 = time.time()
            for body in bodies:
                noop(body)
            enqueue_s = time.time() - t0
            db = connect_ro(db_path)
            oldest_q = "SELECT min(id), count(*) FROM task"
            first_id, count = db.execute(oldest_q).fetchone()
            if count != n:
                raise SystemExit(f"bench: Huey holds {count} tasks of {n}")
            empty_q = "SELECT 1 FROM task LIMIT 1"
            consumer = HueyConsumer(root, args, env, 1)
            consumers.append(consumer)
            profiler = common.Profiler(args.profile, "huey", args.profile_idle)
            if args.profile:
                consumer.wait_started(30)
                profiler.start(consumer.proc.pid)
            start_seen: dict[str, Sample] = {}

            def started() -> bool:
                row = db.execute("SELECT id FROM task ORDER BY id LIMIT 1").fetchone()
                if row is not None and row[0] == first_id:
                    return False
                start_seen["sample"] = Sample(process_tree(consumer.proc.pid))
                return True

            poll(started, 60, "Huey's drain to start", interval)
            poll(lambda: db.execute(empty_q).fetchone() is None, args.timeout, "Huey's queue to drain", interval)
            end = Sample(process_tree(consumer.proc.pid))
            profiler.stop()
            drain_s = end.wall - start_seen["sample"].wall
            result["preloaded"] = {
                "enqueue_s": round(enqueue_s, 3),
                "enqueue_rps": round(n / enqueue_s, 1),
                "drain_s": round(drain_s, 3),
                "drain_rps": round(n / drain_s, 1),
                "enqueue_plus_drain_rps": round(n / (enqueue_s + drain_s), 1),
                **cpu_between(start_seen["sample"], end, n),
            }
            consumer.stop()
            # live: a running consumer, the same messages sent again
            consumer = HueyConsumer(root, args, env, 2)
            consumers.append(consumer)
            consumer.wait_started(30)
            s0 = Sample(process_tree(consumer.proc.pid))
            for body in bodies:
                noop(body)
            sent_at = time.time()
            poll(lambda: db.execute(empty_q).fetchone() is None, args.timeout, "Huey's live queue to drain", interval)
            s1 = Sample(process_tree(consumer.proc.pid))
            total_s = s1.wall - s0.wall
            result["live"] = {
                "send_s": round(sent_at - s0.wall, 3),
                "end_to_end_s": round(total_s, 3),
                "end_to_end_rps": round(n / total_s, 1),
                **cpu_between(s0, s1, n),
            }
            executed = sum(
                len(re.findall(r"executed in", c.log_path.read_text(errors="replace"))) for c in consumers
            )
            db.close()
        finally:
            for c in consumers:
                c.stop()
            storage.close()
            keep_logs(args, root, "huey")
        # Huey logs "... executed in Xs" for every task it ran (INFO, its default)
        result["tasks_executed_logged"] = executed
        if executed != 2 * n:
            raise SystemExit(f"bench: Huey's logs show {executed} tasks executed of {2 * n}")
    return result


# --------------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info = common.machine()  # includes a 2 s sample of background CPU
    import huey

    info["huey"] = huey.__version__
    info["sqlite"] = sqlite3.sqlite_version
    return info


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    cap = report["settings"]["route_max_concurrency"] or None
    queue = {r["batch_size"]: r for r in report["eventd_queue"]
             if r["durability"] == report["settings"]["durability"] and r["route_max_concurrency"] == cap}
    huey = report.get("huey")
    if TARGET_BATCH not in queue:
        return out
    e = queue[TARGET_BATCH]
    if huey:
        ratio = e["preloaded"]["drain_rps"] / huey["preloaded"]["drain_rps"]
        out.append({
            "target": f"drain rate at batch size {TARGET_BATCH} >= {TARGET_DRAIN_RATIO:g}x Huey's",
            "value": f"{ratio:.1f}x ({e['preloaded']['drain_rps']:,.0f} vs {huey['preloaded']['drain_rps']:,.0f} msg/s)",
            "met": ratio >= TARGET_DRAIN_RATIO,
        })
    full = next((r for r in report["eventd_queue"] if r["batch_size"] == TARGET_BATCH and r["durability"] == "full"
                 and r["route_max_concurrency"] == cap and r is not e), None)
    if huey and full:
        ratio = full["preloaded"]["drain_rps"] / huey["preloaded"]["drain_rps"]
        out.append({
            "target": f"(same, both fsyncing every commit: eventd durability full) >= {TARGET_DRAIN_RATIO:g}x Huey's",
            "value": f"{ratio:.1f}x ({full['preloaded']['drain_rps']:,.0f} msg/s)",
            "met": ratio >= TARGET_DRAIN_RATIO,
        })
    live = e["live"]["end_to_end_rps"]
    out.append({
        "target": f"end to end at batch size {TARGET_BATCH} >= {TARGET_END_TO_END:,.0f} records/s (live)",
        "value": f"{live:,.0f} records/s",
        "met": live >= TARGET_END_TO_END,
    })
    drain = e["preloaded"]["drain_rps"]
    out.append({
        "target": f"drain alone at batch size {TARGET_BATCH} >= {TARGET_END_TO_END:,.0f} records/s (pre-loaded)",
        "value": f"{drain:,.0f} records/s",
        "met": drain >= TARGET_END_TO_END,
    })
    return out


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    huey = report.get("huey")
    print(
        f"\n{s['messages']} messages of {s['body_bytes']} bytes; eventd: {s['workers']} handler processes, "
        f"log_level {s['log_level']}"
        + (f"; Huey {report['machine']['huey']} SqliteHuey (WAL, synchronous={huey['storage']['synchronous']}), "
           f"{s['workers']} {huey['worker_type']} workers" if huey else "")
    )
    print(f"{'':34} | {'enqueue':>8} {'drain':>8} {'enq+dr':>8} {'xHuey':>5} {'CPU':>5} | "
          f"{'live e2e':>8} {'xHuey':>5} {'CPU':>5} | {'batch':>5} {'commits':>7} {'ops/':>5} {'thr':>3}")
    print(f"{'':34} | {'msg/s':>8} {'msg/s':>8} {'msg/s':>8} {'drain':>5} {'us/m':>5} | "
          f"{'msg/s':>8} {'':>5} {'us/m':>5} | {'mean':>5} {'(drain)':>7} {'cmt':>5} {'':>3}")
    hp = huey["preloaded"] if huey else None
    hl = huey["live"] if huey else None
    rows = [(f"eventd queue b={r['batch_size']} {r['durability']}"
             f"{'' if r['route_max_concurrency'] else ' uncapped'}", r) for r in report["eventd_queue"]]
    if report.get("eventd_stream"):
        st = report["eventd_stream"]
        rows.append((f"eventd stream {st['shards']} sh b={st['batch_size']} ({st['durability']})", st))
    for label, r in rows:
        p, lv = r["preloaded"], r["live"]
        print(
            f"{label:34} | {p['enqueue_rps']:>8.0f} {p['drain_rps']:>8.0f} {p['enqueue_plus_drain_rps']:>8.0f} "
            f"{p['drain_rps'] / hp['drain_rps'] if hp else 0:>5.1f} {p['cpu_us_per_record']:>5.0f} | "
            f"{lv['end_to_end_rps']:>8.0f} {lv['end_to_end_rps'] / hl['end_to_end_rps'] if hl else 0:>5.1f} "
            f"{lv['cpu_us_per_record']:>5.0f} | {p['mean_batch']:>5.1f} {p['store_commits']:>7} "
            f"{p['store_ops_per_commit']:>5.1f} {p['throttled_batches'] + lv['throttled_batches']:>3}"
        )
    unc = report.get("eventd_queue_uncapped")
    if unc:
        p = unc["preloaded"]
        print(
            f"{'eventd b=' + str(unc['batch_size']) + ' no route cap':34} | {p['enqueue_rps']:>8.0f} {p['drain_rps']:>8.0f} "
            f"{p['enqueue_plus_drain_rps']:>8.0f} {p['drain_rps'] / hp['drain_rps'] if hp else 0:>5.1f} "
            f"{p['cpu_us_per_record']:>5.0f} | {'-':>8} {'':>5} {'':>5} | {p['mean_batch']:>5.1f} "
            f"{p['store_commits']:>7} {p['store_ops_per_commit']:>5.1f} {p['throttled_batches']:>3}"
        )
    if huey:
        print(
            f"{'Huey (' + huey['worker_type'] + ' workers)':34} | {hp['enqueue_rps']:>8.0f} {hp['drain_rps']:>8.0f} "
            f"{hp['enqueue_plus_drain_rps']:>8.0f} {1.0:>5.1f} {hp['cpu_us_per_record']:>5.0f} | "
            f"{hl['end_to_end_rps']:>8.0f} {1.0:>5.1f} {hl['cpu_us_per_record']:>5.0f} |"
        )
    print(
        "  enqueue: committing every message with nothing consuming (eventd: 500 per POST; Huey: one per call);\n"
        "  drain: from the first receive until the queue is empty, every message committed beforehand; enq+dr:\n"
        "  messages / (enqueue + drain time); live e2e: the consumer running, from the first send until every\n"
        "  message is processed; CPU: the consumer's processes (eventd: daemon + handler processes; Huey: consumer\n"
        "  + workers) per message; batch mean, commits and ops/commit: eventd's /metrics during the drain;\n"
        "  thr: batches throttled (drain + live), whose records went back to the queue and ran again."
    )
    others = [r[k]["other_cpu_cores"] for _, r in rows for k in ("preloaded", "live")]
    if huey:
        others += [hp["other_cpu_cores"], hl["other_cpu_cores"]]
    print(f"  other load on the machine during the measured phases: up to {max(others, default=0):.2f} cores")
    print("\nTargets")
    for t in report["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED':>6}] {t['target']}: {t['value']}")
    m = report["machine"]
    print(f"\nload average before {m['loadavg_before']}, after {m['loadavg_after']}; "
          f"total {report['run_seconds']:.0f} s; eventd {m['eventd_commit']}")


def cmd_run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    bodies = make_bodies(args.messages, args.body_bytes)
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "messages": args.messages,
            "body_bytes": args.body_bytes,
            "batch_sizes": batch_sizes,
            "shards": args.shards,
            "stream_batch_size": args.stream_batch_size,
            "partition_keys": args.partition_keys,
            "workers": args.workers,
            "huey_worker_type": args.huey_worker_type,
            "durability": args.durability,
            "also_full_at_batch_size": args.also_full_at,
            "route_max_concurrency": args.workers if args.route_max_concurrency is None else args.route_max_concurrency,
            "also_uncapped_at_batch_size": args.also_uncapped_at,
            "log_level": args.log_level,
            "poll_ms": args.poll_ms,
            "profiled": bool(args.profile),
        },
    }
    m = report["machine"]
    print(f"machine: {m['nproc']} cores, Python {m['python']}, SQLite {m['sqlite']}, Huey {m['huey']}, load "
          f"average {m['loadavg_before']}, {m['background_cpu_cores_before']} cores busy before; eventd "
          f"{m['eventd_commit']}", flush=True)
    report["huey"] = None
    if not args.no_huey:
        report["huey"] = h = run_huey(args, bodies)
        print(f"  Huey ({h['worker_type']} workers): enqueue {h['preloaded']['enqueue_rps']:.0f}/s, drain "
              f"{h['preloaded']['drain_rps']:.0f}/s, live {h['live']['end_to_end_rps']:.0f}/s", flush=True)
    report["eventd_queue"] = []
    cap = args.workers if args.route_max_concurrency is None else (args.route_max_concurrency or None)
    cases = [(b, args.durability, cap) for b in batch_sizes]
    if args.also_full_at and args.durability != "full":
        cases.append((args.also_full_at, "full", cap))
    for b, durability, route_cap in cases:
        r = run_eventd_queue(args, bodies, b, durability, route_cap)
        report["eventd_queue"].append(r)
        print(f"  eventd queue batch {b} ({durability}, route max_concurrency {route_cap}): enqueue "
              f"{r['preloaded']['enqueue_rps']:.0f}/s, drain {r['preloaded']['drain_rps']:.0f}/s, live "
              f"{r['live']['end_to_end_rps']:.0f}/s, {r['preloaded']['throttled_batches']} + "
              f"{r['live']['throttled_batches']} batches throttled", flush=True)
    report["eventd_queue_uncapped"] = None
    if args.also_uncapped_at and cap:
        # the route as most configs would write it (no max_concurrency): drain only, to show the throttling
        r = run_eventd_queue(args, bodies, args.also_uncapped_at, args.durability, None, live=False)
        report["eventd_queue_uncapped"] = r
        print(f"  eventd queue batch {args.also_uncapped_at} ({args.durability}, route max_concurrency unset): "
              f"drain {r['preloaded']['drain_rps']:.0f}/s, {r['preloaded']['throttled_batches']} batches throttled",
              flush=True)
    if args.shards:
        r = run_eventd_stream(args, bodies)
        report["eventd_stream"] = r
        print(f"  eventd stream: enqueue {r['preloaded']['enqueue_rps']:.0f}/s, drain "
              f"{r['preloaded']['drain_rps']:.0f}/s, live {r['live']['end_to_end_rps']:.0f}/s", flush=True)
    return common.finish_report(report, started, args, targets, print_report)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See docs/benchmarks.md for what is measured and how."
    )
    p.add_argument("--messages", type=int, default=20_000, help="messages per case (default 20000)")
    p.add_argument("--body-bytes", type=int, default=100, help="bytes per message body (default 100)")
    p.add_argument("--batch-sizes", default="1,10,100", help="queue route batch sizes (default 1,10,100)")
    p.add_argument("--shards", type=int, default=4, help="stream shards; 0 skips the stream case (default 4)")
    p.add_argument("--stream-batch-size", type=int, default=100, help="stream route batch size (default 100)")
    p.add_argument("--partition-keys", type=int, default=1000, help="distinct partition keys (default 1000)")
    p.add_argument("--workers", type=int, default=4,
                   help="eventd handler processes (concurrency = warm) and Huey workers (default 4)")
    p.add_argument("--huey-worker-type", default="process", choices=("thread", "process"),
                   help="Huey consumer -k (default process: the faster of the two here; see docs)")
    p.add_argument("--durability", default="normal", choices=("normal", "full"),
                   help="eventd's durability (default normal, eventd's default)")
    p.add_argument("--also-full-at", type=int, default=TARGET_BATCH, metavar="B",
                   help="also run the queue at batch size B with `durability: full` (fsync at every commit, "
                        "like Huey's default); 0 skips it (default 10)")
    p.add_argument("--route-max-concurrency", type=int, default=None, metavar="N",
                   help="the queue route's max_concurrency (default: --workers, so the mapping never takes more "
                        "batches than the function has slots; 0 leaves it unset)")
    p.add_argument("--also-uncapped-at", type=int, default=TARGET_BATCH, metavar="B",
                   help="also run the queue at batch size B without a route max_concurrency, to show the "
                        "throttling it avoids; 0 skips it (default 10)")
    p.add_argument("--no-huey", action="store_true", help="skip Huey (for profiling eventd alone)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="eventd's log_level (default info, eventd's default)")
    p.add_argument("--poll-ms", type=float, default=2.0, help="probe interval while waiting (default 2)")
    p.add_argument("--timeout", type=float, default=120.0, help="longest wait for one drain, s (default 120)")
    p.add_argument("--profile", metavar="DIR", help="py-spy record each drain into DIR (perturbs the figures)")
    p.add_argument("--profile-idle", action="store_true", help="with --profile: also sample waiting threads")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the daemons' and consumers' logs to DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.messages < 1 or args.body_bytes < 1 or args.workers < 1 or args.shards < 0:
        raise SystemExit("bench: --messages, --body-bytes and --workers must be positive")
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
