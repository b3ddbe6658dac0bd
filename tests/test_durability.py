"""Nothing acknowledged is lost: kill -9 the daemon while async events are being processed, restart it,
and every event that got a 202 runs at least once. Events that ran twice are counted and reported."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import Daemon, wait_until

RECORDER = '''
import os

def handler(event, context):
    # one short O_APPEND write per event: lines from concurrent processes never interleave
    fd = os.open(os.environ["SEEN"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (context.aws_request_id + "\\n").encode())
    finally:
        os.close(fd)
    return None
'''

EVENTS = 3000


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_kill_9_loses_no_acknowledged_event(daemon_factory, tmp_path: Path, durability: str) -> None:  # type: ignore[no-untyped-def]
    seen = tmp_path / "seen.txt"
    daemon: Daemon = daemon_factory(
        {"rec": {"handler": "rec.handler", "warm": 2, "concurrency": 4, "environment": {"SEEN": str(seen)}}},
        {"rec.py": RECORDER}, durability=durability,
    ).start()
    acked: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def send(n: int) -> None:
        if killed.is_set():
            return
        try:
            reply = daemon.invoke("rec", {"n": n}, headers={"X-Amz-Invocation-Type": "Event"})
        except OSError:
            return  # the daemon is gone: this event was never acknowledged
        if reply.status == 202:
            with lock:
                acked.append(reply.headers["x-amzn-requestid"])

    def processed() -> list[str]:
        return seen.read_text().split() if seen.exists() else []

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, n) for n in range(EVENTS)]
        # kill while events are still arriving and being processed
        wait_until(lambda: len(processed()) >= EVENTS // 5, timeout=60, what="processing to be under way")
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(10)
        killed.set()
        for future in futures:
            future.result(timeout=60)
    acked_at_kill = set(acked)
    done_at_kill = set(processed())
    assert acked_at_kill - done_at_kill, "the kill came too late to test anything: every event had run"

    daemon.start()
    wait_until(lambda: acked_at_kill <= set(processed()), timeout=120,
               what="every acknowledged event to run after the restart")
    lines = processed()
    duplicates = len(lines) - len(set(lines))
    print(f"\n[{durability}] acknowledged {len(acked_at_kill)}, ran before the kill {len(done_at_kill)}, "
          f"ran twice {duplicates}")
    assert "may run twice" in daemon.output() or duplicates == 0
    text = daemon.metrics()
    redelivered = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("eventd_async_redelivered_total{"))
    # every duplicate comes from an event eventd knew was in flight and counted as possibly repeated
    assert duplicates <= redelivered
    assert daemon.stop() == 0
