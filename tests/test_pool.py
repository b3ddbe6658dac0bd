"""The function pool with real handler processes, driven in-process so the test controls when the
event loop runs: the race between a process dying and the loop noticing is made deterministic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack

from eventd.config.model import FunctionSpec
from eventd.runtimes.pool import FunctionPool
from eventd.runtimes.process import HandlerProcess, InvokeRequest, ProcessState
from tests.harness import process_gone, until, wait_until

HANDLER = "import os\n\ndef handler(event, context):\n    return os.getpid()\n"


async def test_an_idle_process_that_died_before_the_loop_noticed_is_not_handed_out(tmp_path: Path) -> None:
    (tmp_path / "pid.py").write_text(HANDLER)
    spec = FunctionSpec(handler="pid.handler", code=tmp_path, warm=1)
    pool = FunctionPool("fn", spec, tmp_path, lambda name: lambda request_id, text: None)
    await pool.start()
    try:
        assert pool.counts()["idle"] == 1
        victim = next(iter(pool._all)).pid
        os.kill(victim, signal.SIGKILL)
        # wait without yielding to the event loop, so the pool has not seen the EOF yet
        wait_until(lambda: process_gone(victim), timeout=10, what="the killed process to exit")
        checkout = await pool.checkout()
        assert checkout.process is not None and checkout.process.pid != victim
        outcome = await checkout.process.invoke(
            InvokeRequest("req-1", b"{}", "arn:aws:lambda:us-east-1:000000000000:function:fn", 3.0))
        assert outcome.error is None, outcome.error
        assert int(outcome.payload or b"0") == checkout.process.pid
        pool.checkin(checkout.process)
    finally:
        await pool.stop()


@contextlib.asynccontextmanager
async def one_process(tmp_path: Path, source: str) -> AsyncIterator[HandlerProcess]:
    """A started pool of `handler` in `source`, and one process checked out of it."""
    (tmp_path / "fn.py").write_text(source)
    pool = FunctionPool("fn", FunctionSpec(handler="fn.handler", code=tmp_path), tmp_path,
                        lambda name: lambda request_id, text: None)
    await pool.start()
    try:
        checkout = await pool.checkout()
        assert checkout.process is not None
        yield checkout.process
        pool.checkin(checkout.process)
    finally:
        await pool.stop()


async def run(process: HandlerProcess, trace_id: str | None = None) -> bytes | None:
    return (await process.invoke(InvokeRequest("req", b"{}", "arn", 3.0, trace_id=trace_id))).payload


async def test_handler_processes_run_under_sched_batch(tmp_path: Path) -> None:
    async with one_process(tmp_path, "import os\n\ndef handler(event, context):\n"
                                     "    return os.sched_getscheduler(0)\n") as process:
        assert int(await run(process) or b"-1") == os.SCHED_BATCH


async def test_the_trace_id_is_in_the_environment_of_its_invocation_only(tmp_path: Path) -> None:
    async with one_process(tmp_path, "import os\n\ndef handler(event, context):\n"
                                     "    return os.environ.get('_X_AMZN_TRACE_ID')\n") as process:
        seen = [await run(process, trace_id) for trace_id in ("Root=1-abc", None, None, "Root=1-def")]
        assert seen == [b'"Root=1-abc"', b"null", b"null", b'"Root=1-def"']


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


async def test_the_daemon_side_of_a_warm_process_does_not_grow_with_invocations(tmp_path: Path) -> None:
    # msgpack's default 1 MiB receive buffer became resident bit by bit: ~60 bytes per invocation,
    # 1 MiB per handler process in the end
    async with one_process(tmp_path, HANDLER) as process:
        for _ in range(500):  # warm-up: first-use allocations
            await run(process)
        before = _rss_kb()
        for _ in range(20_000):
            await run(process)
        assert _rss_kb() - before < 400, f"grew {_rss_kb() - before} kB"


LENGTH = "def handler(event, context):\n    return len(event)\n"


async def test_an_event_larger_than_the_socket_buffer_arrives_whole_and_in_order(tmp_path: Path) -> None:
    # the frame is sent with socket.send, which takes what the socket buffer holds; the transport
    # must send the rest, and the next frame must not overtake it
    async with one_process(tmp_path, LENGTH) as process:
        for size in (5 * 1024 * 1024, 10, 3 * 1024 * 1024, 1):
            payload = b'"' + b"y" * size + b'"'
            outcome = await process.invoke(InvokeRequest("req", payload, "arn", 10.0))
            assert outcome.error is None, outcome.error
            assert int(outcome.payload or b"-1") == size


async def test_a_frame_sent_while_the_transport_still_holds_bytes_waits_behind_them(tmp_path: Path) -> None:
    # _send writes with socket.send only while the transport has nothing buffered: a second frame
    # written with socket.send would overtake the first one's remainder and corrupt the stream
    async with one_process(tmp_path, LENGTH) as process:
        size = 5 * 1024 * 1024
        invoked = asyncio.ensure_future(
            process.invoke(InvokeRequest("req", b'"' + b"y" * size + b'"', "arn", 10.0)))
        # busy is set just before the frame is sent, with no await between: once busy, it is sent
        await until(lambda: process.state is ProcessState.BUSY)
        transport = process._channel.transport  # type: ignore[union-attr]
        assert transport is not None and transport.get_write_buffer_size() > 0, "the frame went out whole"
        process._send(msgpack.packb({"t": "stop"}))
        outcome = await asyncio.wait_for(invoked, 30)
        assert outcome.error is None, outcome.error
        assert int(outcome.payload or b"-1") == size
        # the stop frame arrived whole, after the event: the process exits on its own, cleanly
        wait_until(lambda: process_gone(process.pid), timeout=10, what="the process to stop")


async def test_invoking_a_process_that_died_unnoticed_reports_its_exit(tmp_path: Path) -> None:
    # the frame's send fails (the peer is gone): the transport reports it as before, as a crash
    async with one_process(tmp_path, HANDLER) as process:
        os.kill(process.pid, signal.SIGKILL)
        wait_until(lambda: process_gone(process.pid), timeout=10, what="the killed process to exit")
        outcome = await process.invoke(InvokeRequest("req", b"{}", "arn", 10.0))
        assert outcome.status == "crash"
        assert outcome.error is not None and outcome.error["errorType"] == "Runtime.ExitError"
        assert "signal: killed" in outcome.error["errorMessage"]
