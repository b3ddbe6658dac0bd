"""Every Prometheus metric eventd exports, defined once, in base units (seconds, bytes).

Gauges that mirror live state (processes by state, concurrency in use) are read at scrape time from
their owners, so nothing on the hot path keeps them in step.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from eventd import __version__

#: From a no-op's sub-millisecond run to Lambda's 15-minute ceiling.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# `_created` series double every counter's size and nobody graphs them.
disable_created_metrics()

#: Async event ages: from immediate to Lambda's 6-hour maximum.
AGE_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 180, 600, 1800, 3600, 10800, 21600)
#: Distinct error_type label values kept per function (bounds the series a buggy handler can create).
MAX_ERROR_TYPES = 32
INIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LoopCounter:
    """A counter child for the event loop's hot path: a plain number, folded into its Prometheus
    child whenever metrics are read. prometheus_client checks and locks on every inc(), which cost
    about a tenth of a no-op HTTP request. Only the event loop's thread may call inc()."""

    __slots__ = ("_child", "_pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._pending = 0.0

    def inc(self, amount: float = 1) -> None:
        self._pending += amount

    def fold(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._child.inc(pending)


class LoopHistogram:
    """A histogram child for the event loop's hot path, folded like LoopCounter."""

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # the first bucket whose upper bound is >= value, as prometheus_client's observe() picks it
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def fold(self) -> None:
        if not any(self._counts):
            return
        # no public API observes in bulk: add to the child's bucket and sum values directly
        self._child._sum.inc(self._sum)
        for index, count in enumerate(self._counts):
            if count:
                self._child._buckets[index].inc(count)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0


@dataclass
class FunctionMetrics:
    """Label children for one function, resolved once so the hot path skips the label lookup."""

    success: LoopCounter
    error: LoopCounter
    duration: LoopHistogram
    init_duration: Histogram
    cold_starts: Counter
    provisioned_starts: Counter


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.invocations = Counter(
            "eventd_invocations_total",
            "Invocations that ran handler code, by outcome (success, error); throttles are not invocations.",
            ["function", "outcome"], registry=r,
        )
        self.errors = Counter(
            "eventd_invocation_errors_total", "Function errors by Lambda error type.",
            ["function", "error_type"], registry=r,
        )
        self.throttles = Counter(
            "eventd_throttles_total", "Invocations refused because a concurrency cap was reached.",
            ["function", "reason"], registry=r,
        )
        self.duration = Histogram(
            "eventd_invocation_duration_seconds", "Handler run time of each invocation (excluding init).",
            ["function"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.init_duration = Histogram(
            "eventd_init_duration_seconds", "Init phase of each new handler process (import of the handler).",
            ["function"], buckets=INIT_BUCKETS, registry=r,
        )
        self.cold_starts = Counter(
            "eventd_cold_starts_total", "Handler processes started, on demand or to keep `warm` processes.",
            ["function", "initialization_type"], registry=r,
        )
        self._functions: dict[str, FunctionMetrics] = {}
        self._loop_children: dict[tuple[int, tuple[str, ...]], LoopCounter | LoopHistogram] = {}
        self._error_types: dict[str, set[str]] = {}
        self._define_async(r)
        self._define_mappings(r)
        self._define_sources(r)
        self._define_store(r)

    def _define_async(self, r: CollectorRegistry) -> None:
        self.async_received = Counter(
            "eventd_async_events_received_total", "Async events committed to a function's queue (answered 202).",
            ["function"], registry=r,
        )
        self.async_event_age = Histogram(
            "eventd_async_event_age_seconds", "Time from an async event's acceptance to each attempt to run it.",
            ["function"], buckets=AGE_BUCKETS, registry=r,
        )
        self.async_retries = Counter(
            "eventd_async_retries_total", "Async attempts scheduled again, by cause (error, throttle).",
            ["function", "cause"], registry=r,
        )
        self.async_dropped = Counter(
            "eventd_async_events_dropped_total",
            "Async events that ended without a successful run, by Lambda condition and where they were kept "
            "(dlq, on_failure, dlq+on_failure, or none).",
            ["function", "reason", "destination"], registry=r,
        )
        self.async_redelivered = Counter(
            "eventd_async_redelivered_total",
            "Async events in flight when eventd stopped, run again after the restart (may have run twice).",
            ["function"], registry=r,
        )
        self.dlq_writes = Counter(
            "eventd_dlq_writes_total", "Failed async events written to a dead-letter queue.",
            ["function", "queue"], registry=r,
        )
        self.dlq_write_failures = Counter(
            "eventd_dlq_write_failures_total", "Dead-letter writes that failed (the event is kept and retried).",
            ["function", "queue"], registry=r,
        )
        self.destination_deliveries = Counter(
            "eventd_destination_deliveries_total", "Invocation records delivered to a destination, by type.",
            ["function", "type"], registry=r,
        )
        self.destination_failures = Counter(
            "eventd_destination_failures_total", "Failed attempts to deliver an invocation record (retried).",
            ["function", "type"], registry=r,
        )

    def _define_mappings(self, r: CollectorRegistry) -> None:
        self.queue_sent = Counter("eventd_queue_messages_sent_total", "Messages committed to a queue by producers.",
                                  ["queue"], registry=r)
        self.queue_dead_lettered = Counter(
            "eventd_queue_dead_lettered_total",
            "Messages moved to a queue's dead-letter queue after max_receive_count receives.",
            ["queue", "dead_letter"], registry=r,
        )
        self.stream_records = Counter("eventd_stream_records_put_total", "Records committed to a stream.",
                                      ["stream"], registry=r)
        self.mapping_batches = Counter(
            "eventd_mapping_batches_total",
            "Batches a mapping handed to its function, by outcome (success, partial, failure, throttled).",
            ["mapping", "outcome"], registry=r,
        )
        self.mapping_batch_size = Histogram(
            "eventd_mapping_batch_records", "Records in each batch a mapping invoked its function with.",
            ["mapping"], buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000), registry=r,
        )
        self.mapping_filtered = Counter(
            "eventd_mapping_records_filtered_total", "Records that matched none of a mapping's filters.",
            ["mapping"], registry=r,
        )
        self.mapping_discarded = Counter(
            "eventd_mapping_records_discarded_total",
            "Stream records given up on (RetryAttemptsExhausted, RecordAgeExceeded), by where the failure "
            "record went (queue, function, webhook, none).",
            ["mapping", "condition", "destination"], registry=r,
        )
        self.iterator_age = Gauge(
            "eventd_stream_iterator_age_seconds",
            "Age of the last record of the latest batch when it was sent (Lambda's IteratorAge).",
            ["mapping", "shard"], registry=r,
        )

    def _define_sources(self, r: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "eventd_http_requests_total", "Requests to HTTP routes, by route and status code.",
            ["route", "status"], registry=r,
        )
        self.http_duration = Histogram(
            "eventd_http_request_duration_seconds", "Time to answer a request to an HTTP route.",
            ["route"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.file_events = Counter(
            "eventd_file_events_total", "File changes that fired, by watch and kind (created, modified, ...).",
            ["source", "kind"], registry=r,
        )
        self.schedule_fires = Counter("eventd_schedule_fires_total", "Scheduled events fired.", ["schedule"],
                                      registry=r)
        self.schedule_lag = Histogram(
            "eventd_schedule_lag_seconds", "How late each fire was, after its scheduled time.",
            ["schedule"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400), registry=r,
        )
        self.schedule_missed = Counter(
            "eventd_schedule_missed_total",
            "Scheduled slots that did not fire, by reason (catch_up policy none/latest/all cap, or overlap skip).",
            ["schedule", "reason"], registry=r,
        )

    def _define_store(self, r: CollectorRegistry) -> None:
        self.store_commits = Histogram(
            "eventd_store_commit_operations", "Operations committed together in one store transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048), registry=r,
        )
        self.store_commit_seconds = Histogram(
            "eventd_store_commit_seconds", "Time of one group commit, operations and fsync included.",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1), registry=r,
        )

    def observe_commit(self, operations: int, seconds: float) -> None:
        """Called from the store's writer thread after each group commit (prometheus-client is thread-safe)."""
        self.store_commits.observe(operations)
        self.store_commit_seconds.observe(seconds)

    def function(self, name: str) -> FunctionMetrics:
        metrics = self._functions.get(name)
        if metrics is None:
            metrics = self._functions[name] = FunctionMetrics(
                success=self.loop_counter(self.invocations, name, "success"),
                error=self.loop_counter(self.invocations, name, "error"),
                duration=self.loop_histogram(self.duration, name),
                init_duration=self.init_duration.labels(name),
                cold_starts=self.cold_starts.labels(name, "on-demand"),
                provisioned_starts=self.cold_starts.labels(name, "provisioned-concurrency"),
            )
        return metrics

    def count_error(self, function: str, error_type: str) -> None:
        """Count a function error. Handler exception names are the user's, so after
        MAX_ERROR_TYPES distinct ones per function the rest share the label "other"."""
        seen = self._error_types.setdefault(function, set())
        if error_type not in seen:
            if len(seen) >= MAX_ERROR_TYPES:
                error_type = "other"
            seen.add(error_type)
        self.errors.labels(function, error_type).inc()

    def watch_state(self, read: Callable[[], list[FunctionState]]) -> None:
        """Export live state read from `read()` at each scrape."""
        self.registry.register(_StateCollector(read))

    def watch_queues(self, read: Callable[[], dict[str, QueueGauge]]) -> None:
        """Export queue depths from `read()`: a cache refreshed off the loop, so a scrape never hits disk."""
        self.registry.register(_QueueCollector(read))

    def loop_counter(self, counter: Counter, *labels: str) -> LoopCounter:
        """The hot-path child of `counter` for `labels` (the event loop's thread only)."""
        return self._loop_child(counter, labels, LoopCounter)  # type: ignore[return-value]

    def loop_histogram(self, histogram: Histogram, *labels: str) -> LoopHistogram:
        """The hot-path child of `histogram` for `labels` (the event loop's thread only)."""
        return self._loop_child(histogram, labels, LoopHistogram)  # type: ignore[return-value]

    def _loop_child(self, metric: Any, labels: tuple[str, ...], kind: type) -> LoopCounter | LoopHistogram:
        key = (id(metric), labels)
        child = self._loop_children.get(key)
        if child is None:
            child = self._loop_children[key] = kind(metric.labels(*labels))
        return child

    def exposition(self) -> bytes:
        """The text exposition. Call it on the event loop's thread: it folds the hot-path children in."""
        for child in self._loop_children.values():
            child.fold()
        return generate_latest(self.registry)


@dataclass(frozen=True)
class FunctionState:
    function: str
    concurrent_executions: int
    concurrency_limit: int
    warm_target: int
    processes: dict[str, int]


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], list[FunctionState]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        executions = GaugeMetricFamily(
            "eventd_concurrent_executions", "Invocations running now.", labels=["function"]
        )
        limit = GaugeMetricFamily(
            "eventd_concurrency_limit", "Most simultaneous invocations the function may have now.", labels=["function"]
        )
        warm = GaugeMetricFamily(
            "eventd_warm_target", "Processes the function keeps started and initialised (`warm`).",
            labels=["function"],
        )
        processes = GaugeMetricFamily(
            "eventd_processes", "Handler processes by state (starting, idle, busy).", labels=["function", "state"]
        )
        for state in self._read():
            executions.add_metric([state.function], state.concurrent_executions)
            limit.add_metric([state.function], state.concurrency_limit)
            warm.add_metric([state.function], state.warm_target)
            for name, count in state.processes.items():
                processes.add_metric([state.function, name], count)
        yield executions
        yield limit
        yield warm
        yield processes
        yield InfoMetricFamily("eventd_build", "eventd version.", value={"version": __version__})


@dataclass(frozen=True)
class QueueGauge:
    """One queue's state for the gauges: counts by state and the age of its oldest message."""

    kind: str  # "async" (a function's async events), "queue", "webhook"
    name: str
    visible: int
    in_flight: int
    delayed: int
    oldest_age_seconds: float


class _QueueCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, QueueGauge]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        async_depth = GaugeMetricFamily(
            "eventd_async_queue_depth", "Async events waiting or running, by state (visible, in_flight, delayed).",
            labels=["function", "state"],
        )
        async_oldest = GaugeMetricFamily(
            "eventd_async_oldest_event_age_seconds", "Age of the oldest async event of each function.",
            labels=["function"],
        )
        queue_depth = GaugeMetricFamily(
            "eventd_queue_depth", "Messages in each queue, by state (visible, in_flight, delayed).",
            labels=["queue", "state"],
        )
        queue_oldest = GaugeMetricFamily(
            "eventd_queue_oldest_message_age_seconds", "Age of the oldest message in each queue.", labels=["queue"]
        )
        for gauge in self._read().values():
            depth, oldest = (async_depth, async_oldest) if gauge.kind == "async" else (queue_depth, queue_oldest)
            for state in ("visible", "in_flight", "delayed"):
                depth.add_metric([gauge.name, state], getattr(gauge, state))
            oldest.add_metric([gauge.name], gauge.oldest_age_seconds)
        yield async_depth
        yield async_oldest
        yield queue_depth
        yield queue_oldest
