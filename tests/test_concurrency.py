"""Caps, throttling, warm and cold processes, idle reaping and replacement, through a real daemon."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import Daemon, Gate, Reply, metric_value, process_gone, wait_until


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    gate = Gate(tmp_path / "gate.sock")
    yield gate
    gate.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


def hold(daemon: Daemon, pool: ThreadPoolExecutor, gate: Gate, function: str, count: int) -> list[Future[Reply]]:
    """Start `count` invocations of `function` and return once all are running inside the handler."""
    already = gate.waiting
    futures = [pool.submit(daemon.invoke, function, {"gate": gate.path}) for _ in range(count)]
    gate.wait_arrivals(already + count)
    return futures


def assert_throttled(reply: Reply, reason: str) -> None:
    assert reply.status == 429, reply.body
    assert reply.headers["x-amzn-errortype"] == "TooManyRequestsException"
    assert reply.headers["retry-after"] == "1"
    body = reply.json()
    assert body["Reason"] == reason
    assert body["message"].startswith("Rate Exceeded.")


def test_reserved_concurrency_is_a_ceiling(daemon_factory, gate: Gate, pool: ThreadPoolExecutor) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory(
        {"capped": {"handler": "gated.handler", "concurrency": 2}, "other": {"handler": "gated.handler"}},
        {"gated.py": Gate.HANDLER}, max_concurrency=10,
    ).start()
    running = hold(daemon, pool, gate, "capped", 2)
    assert_throttled(daemon.invoke("capped", {}), "ReservedFunctionConcurrentInvocationLimitExceeded")
    assert daemon.invoke("other", {}).status == 200  # a cap on one function leaves the others alone
    gate.open()
    assert all(f.result(timeout=20).status == 200 for f in running)
    assert daemon.invoke("capped", {}).status == 200  # slots come back
    text = daemon.metrics()
    assert metric_value(text, "eventd_throttles_total", function="capped",
                        reason="ReservedFunctionConcurrentInvocationLimitExceeded") == 1
    # a throttle is not an invocation (Lambda counts them apart)
    assert metric_value(text, "eventd_invocations_total", function="capped", outcome="success") == 3


def test_unreserved_pool_is_shared_and_reservations_are_a_floor(daemon_factory, gate: Gate, pool: ThreadPoolExecutor) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory(
        {"reserved": {"handler": "gated.handler", "concurrency": 1},
         "a": {"handler": "gated.handler"}, "b": {"handler": "gated.handler"}},
        {"gated.py": Gate.HANDLER}, max_concurrency=3,
    ).start()
    running = hold(daemon, pool, gate, "a", 1) + hold(daemon, pool, gate, "b", 1)
    # the two unreserved slots are taken by a and b together
    assert_throttled(daemon.invoke("a", {}), "ConcurrentInvocationLimitExceeded")
    assert_throttled(daemon.invoke("b", {}), "ConcurrentInvocationLimitExceeded")
    # but the reserved function still has its one slot
    assert daemon.invoke("reserved", {}).status == 200
    status = daemon.status()
    assert status["concurrency_in_use"] == 2
    assert {f["name"]: f["concurrency_limit"] for f in status["functions"]} == {"reserved": 1, "a": 2, "b": 2}
    gate.open()
    assert [f.result(timeout=20).status for f in running] == [200, 200]


def test_zero_concurrency_throttles_everything(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory({"off": {"handler": "gated.handler", "concurrency": 0}}, {"gated.py": Gate.HANDLER}).start()
    assert_throttled(daemon.invoke("off", {}), "ReservedFunctionConcurrentInvocationLimitExceeded")


def test_warm_processes_are_reused_and_cold_starts_counted(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory({"fn": {"handler": "gated.handler"}}, {"gated.py": Gate.HANDLER}).start()
    assert daemon.processes("fn") == {"starting": 0, "idle": 0, "busy": 0}
    first = daemon.invoke("fn", {}, headers={"X-Amz-Log-Type": "Tail"})
    second = daemon.invoke("fn", {}, headers={"X-Amz-Log-Type": "Tail"})
    assert first.json()["pid"] == second.json()["pid"]
    assert first.json()["init"] == "on-demand"
    import base64

    assert "Init Duration:" in base64.b64decode(first.headers["x-amz-log-result"]).decode()
    assert "Init Duration:" not in base64.b64decode(second.headers["x-amz-log-result"]).decode()
    text = daemon.metrics()
    assert metric_value(text, "eventd_cold_starts_total", function="fn", initialization_type="on-demand") == 1
    assert daemon.processes("fn") == {"starting": 0, "idle": 1, "busy": 0}


def test_warm_processes_start_with_the_daemon_and_are_replaced(daemon_factory, gate: Gate, pool: ThreadPoolExecutor) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory({"fn": {"handler": "gated.handler", "warm": 2, "concurrency": 3}},
                            {"gated.py": Gate.HANDLER}).start()
    # ready means the warm processes are up and initialised before any invocation
    assert daemon.processes("fn") == {"starting": 0, "idle": 2, "busy": 0}
    text = daemon.metrics()
    assert metric_value(text, "eventd_cold_starts_total", function="fn",
                        initialization_type="provisioned-concurrency") == 2
    running = hold(daemon, pool, gate, "fn", 2)
    gate.open()
    replies = [f.result(timeout=20).json() for f in running]
    pids = {r["pid"] for r in replies}
    assert len(pids) == 2 and {r["init"] for r in replies} == {"provisioned-concurrency"}
    # a warm process that dies is replaced
    victim = pids.pop()
    os.kill(victim, signal.SIGKILL)
    # once it is gone the daemon must not hand it out, even before its loop has seen the EOF
    wait_until(lambda: process_gone(victim), timeout=10, what="the killed process to exit")

    def replaced() -> bool:
        p = daemon.processes("fn")
        return p["idle"] == 2 and victim not in {daemon.invoke("fn", {}).json()["pid"] for _ in range(2)}

    wait_until(replaced, timeout=15, what="the killed warm process to be replaced")


def test_idle_processes_above_warm_are_reaped(daemon_factory, gate: Gate, pool: ThreadPoolExecutor) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory({"fn": {"handler": "gated.handler", "warm": 1, "idle_timeout": "300ms"}},
                            {"gated.py": Gate.HANDLER}).start()
    running = hold(daemon, pool, gate, "fn", 3)
    assert daemon.processes("fn") == {"starting": 0, "idle": 0, "busy": 3}
    gate.open()
    for future in running:
        assert future.result(timeout=20).status == 200
    wait_until(lambda: daemon.processes("fn") == {"starting": 0, "idle": 1, "busy": 0}, timeout=15,
               what="idle processes above warm to be reaped")


def test_processes_never_exceed_the_cap(daemon_factory, pool: ThreadPoolExecutor) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory({"fn": {"handler": "gated.handler", "concurrency": 3}}, {"gated.py": Gate.HANDLER}).start()
    replies = list(pool.map(lambda _: daemon.invoke("fn", {}), range(60)))
    ok = [r for r in replies if r.status == 200]
    assert ok and all(r.status in (200, 429) for r in replies)
    pids = {json.loads(r.body)["pid"] for r in ok}
    assert len(pids) <= 3
    counts = daemon.processes("fn")
    assert counts["idle"] + counts["busy"] <= 3
