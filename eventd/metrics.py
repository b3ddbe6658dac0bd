"""Every Prometheus metric eventd exports, defined once, in base units (seconds, bytes).

Gauges that mirror live state (processes by state, concurrency in use) are read at scrape time from
their owners, so nothing on the hot path keeps them in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, disable_created_metrics, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from eventd import __version__

#: From a no-op's sub-millisecond run to Lambda's 15-minute ceiling.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# `_created` series double every counter's size and nobody graphs them.
disable_created_metrics()

#: Distinct error_type label values kept per function (bounds the series a buggy handler can create).
MAX_ERROR_TYPES = 32
INIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class FunctionMetrics:
    """Label children for one function, resolved once so the hot path skips the label lookup."""

    success: Counter
    error: Counter
    duration: Histogram
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
        self._error_types: dict[str, set[str]] = {}

    def function(self, name: str) -> FunctionMetrics:
        metrics = self._functions.get(name)
        if metrics is None:
            metrics = self._functions[name] = FunctionMetrics(
                success=self.invocations.labels(name, "success"),
                error=self.invocations.labels(name, "error"),
                duration=self.duration.labels(name),
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

    def exposition(self) -> bytes:
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
