"""What the bench/ scripts share: eventd as a subprocess, the HTTP/1.1 keep-alive load generator, the
bare aiohttp baseline server, /proc CPU and memory sampling, quiet-machine waits, report helpers.

bench/ is not a package: each script loads this file by its path (see the top of each script).
Loading it takes bench/ off sys.path first: `python bench/X.py` puts bench/ first there, where the
sibling scripts http.py and queue.py (named as the issues name them) would shadow the standard
library's `http` and `queue` modules, in this module's imports and in every import after them.
"""

# ruff: noqa: E402 - the imports below come after the sys.path fix, on purpose
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != HERE]

import argparse
import asyncio
import http.client
import json
import platform
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"
DEFAULT_PAYLOAD = '{"id": 42, "kind": "bench", "tags": ["a", "b"], "ok": true}'


# --------------------------------------------------------------------------------------------------
# load generator (runs in its own process)
# --------------------------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time; Content-Length responses only."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = -1
        self._status = 0
        self._body_at = 0
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            self._status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail(RuntimeError("response without Content-Length"))
                return
            eol = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : eol if eol >= 0 else len(head)])
            self._body_at = end + 4
            self._need = self._body_at + length
        if len(buf) >= self._need:
            body = bytes(buf[self._body_at : self._need])
            del buf[: self._need]
            self._need = -1
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((self._status, body))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("server closed the connection"))
        if not self.closed.done():
            self.closed.set_result(None)

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def connect(host: str, port: int, count: int) -> list[Conn]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(count):
        _, conn = await loop.create_connection(Conn, host, port)
        conns.append(conn)
    return conns


async def closed_loops(
    conns: list[Conn], request: bytes, seconds: float, max_requests: int, record: bool,
    status_ok: int, body_ok: bytes | None, first_bad: list[tuple[int, bytes]],
) -> tuple[list[int], int, int, float]:
    """Every connection sends `request` in a closed loop (one in flight) until `seconds` have passed
    or `max_requests` were sent in all. An answer that is not `status_ok` (with `body_ok`, unless
    None) is an error; the first is kept in `first_bad`. (latencies ns, sent, errors, seconds)."""
    latencies: list[int] = []
    errors = 0
    count = 0
    started = time.perf_counter()
    stop_at = time.perf_counter_ns() + int(seconds * 1e9)

    async def worker(conn: Conn) -> None:
        nonlocal errors, count
        clock = time.perf_counter_ns
        while count < max_requests:
            t0 = clock()
            if t0 >= stop_at:
                return
            count += 1
            status, body = await conn.request(request)
            t1 = clock()
            if status != status_ok or (body_ok is not None and body != body_ok):
                errors += 1
                if not first_bad:
                    first_bad.append((status, body[:300]))
            if record:
                latencies.append(t1 - t0)

    await asyncio.gather(*(worker(c) for c in conns))
    return latencies, count, errors, time.perf_counter() - started


class Measured:
    """What the load generator measured: latencies (ms, ascending), requests sent, errors, seconds, its
    own CPU time, time.monotonic() at the first send and the last answer, and the first bad answer."""

    def __init__(self, ms: list[float], sent: int, errors: int, seconds: float, cpu: float, first_send: float,
                 last_ack: float, first_bad: list[tuple[int, bytes]]) -> None:
        self.ms, self.sent, self.errors, self.seconds, self.cpu = ms, sent, errors, seconds, cpu
        self.first_send, self.last_ack, self.first_bad = first_send, last_ack, first_bad

    @property
    def first_error(self) -> str | None:
        return None if not self.first_bad else f"{self.first_bad[0][0]}: {self.first_bad[0][1].decode(errors='replace')}"

    def latency(self, *quantiles: int) -> dict[str, float | None]:
        out: dict[str, float | None] = {f"p{q}_ms": round(percentile(self.ms, q), 3) for q in quantiles}
        out["max_ms"] = round(self.ms[-1], 3) if self.ms else None
        return out

    def loadgen_cpu(self) -> dict[str, float | None]:
        n = len(self.ms)
        return {"loadgen_cpu_s": round(self.cpu, 3),
                "loadgen_cpu_us_per_req": round(self.cpu / n * 1e6, 1) if n else None}


async def measure(
    conns: list[Conn], request: bytes, *, warmup: float | None, seconds: float, max_requests: int,
    status_ok: int = 200, body_ok: bytes | None = None,
) -> Measured:
    """A warm-up (unless `warmup` is None), then the measured phase between the lines "measuring" and
    "done" on stdout (the parent samples the servers' CPU when it reads them); closes the connections."""
    first_bad: list[tuple[int, bytes]] = []
    if warmup is not None:
        await closed_loops(conns, request, warmup, max_requests, False, status_ok, body_ok, first_bad)
    print("measuring", flush=True)
    cpu0 = time.process_time()
    first_send = time.monotonic()
    latencies, sent, errors, elapsed = await closed_loops(
        conns, request, seconds, max_requests, True, status_ok, body_ok, first_bad)
    last_ack = time.monotonic()
    cpu = time.process_time() - cpu0
    print("done", flush=True)
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    latencies.sort()
    return Measured([v / 1e6 for v in latencies], sent, errors, elapsed, cpu, first_send, last_ack, first_bad)


def print_json_of(coroutine: Any) -> int:
    """Run `coroutine` on uvloop and print its result as one line of JSON (a subprocess's answer)."""
    import uvloop

    print(json.dumps(uvloop.run(coroutine)))
    return 0


# --------------------------------------------------------------------------------------------------
# baseline servers (run in their own process)
# --------------------------------------------------------------------------------------------------


def load_handler(code: str, handler: str) -> Callable[..., Any]:
    """`module.function` from the folder `code`, as eventd's handler process loads it."""
    import importlib

    sys.path.insert(0, code)
    module_name, _, function_name = handler.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)  # type: ignore[no-any-return]


def serve(port: int, routes: list[tuple[str, str, Any]]) -> int:
    """A bare aiohttp + uvloop server on 127.0.0.1:`port` with `routes` ((method, path, handler)) and
    GET /readyz, until SIGTERM or SIGINT."""
    import uvloop
    from aiohttp import web

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def main() -> None:
        app = web.Application()
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        app.router.add_get("/readyz", readyz)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    uvloop.run(main())
    return 0


# --------------------------------------------------------------------------------------------------
# processes, HTTP calls, waiting (the parent process)
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Server:
    """A server subprocess (eventd, or a baseline) logging to `log_path`; ready when GET /readyz is 200."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name, self.port, self.log_path = name, port, log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def wait_ready(self, timeout: float) -> float:
        started = time.perf_counter()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"bench: {self.name} exited with {self.proc.returncode} during start-up; "
                    f"its log:\n{self.log_path.read_text(errors='replace')[-3000:]}"
                )
            try:
                return http_call(self.port, "GET", "/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout, f"{self.name} GET /readyz == 200", interval=0.02)
        return time.perf_counter() - started

    def stop(self, timeout: float = 15.0) -> tuple[int | None, float]:
        started = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode, time.perf_counter() - started


def eventd_server(name: str, config: Path, port: int, log_path: Path) -> Server:
    """`python -m eventd run -c config` as a Server."""
    return Server(name, [sys.executable, "-m", "eventd", "run", "-c", str(config)], port, log_path)


def run_sampled(argv: list[str], limit: float, sample: Callable[[], Any], what: str) -> tuple[dict[str, Any], list[Any]]:
    """Run `argv` (a loadgen or baseline subprocess, killed after `limit` s): `sample()` when it prints
    "measuring" and "done", and its result, the line of JSON it prints. (result, [two samples])."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(limit, proc.kill)
    watchdog.start()
    result: dict[str, Any] = {}
    samples: list[Any] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip() in ("measuring", "done"):
                samples.append(sample())
            elif line.startswith("{"):
                result = json.loads(line)
        err = proc.stderr.read()  # type: ignore[union-attr]
        proc.wait()
    finally:
        watchdog.cancel()
    if proc.returncode != 0 or len(samples) != 2 or not result:
        raise SystemExit(f"bench: {what} failed (exit {proc.returncode}):\n{err}")
    return result, samples


class Profiler:
    """py-spy record (raw, 250 Hz) on a process and its children into `directory` (none: do nothing)."""

    def __init__(self, directory: str | None, name: str, idle: bool = False) -> None:
        self.directory, self.name, self.proc, self.idle = directory, name, None, idle
        self._log: Any = None

    def start(self, pid: int) -> None:
        if not self.directory:
            return
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        out = Path(self.directory) / f"{self.name}.txt"
        self._log = open(Path(self.directory) / f"{self.name}.py-spy.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "-r", "250",
             "-f", "raw", "-o", str(out), *(["--idle"] if self.idle else [])],
            stdout=subprocess.DEVNULL, stderr=self._log,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._log.close()


# --------------------------------------------------------------------------------------------------
# /proc: CPU, memory, the machine
# --------------------------------------------------------------------------------------------------


def _proc_kb(pid: int, field: str, file: str = "status") -> int:
    try:
        text = Path(f"/proc/{pid}/{file}").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def children_of(pid: int) -> list[int]:
    """Every process below `pid` (eventd's handler processes are forked by its fork server, so they are
    grandchildren of the daemon), from one pass over /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes (not their waited-for children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def memory(pid: int) -> dict[str, Any]:
    kids = children_of(pid)

    def mb(kb: float) -> float:
        return round(kb / 1024, 1)

    return {
        "self_rss_mb": mb(_proc_kb(pid, "VmRSS")),
        "self_pss_mb": mb(_proc_kb(pid, "Pss", "smaps_rollup")),
        "children": len(kids),
        "children_rss_mb": mb(sum(_proc_kb(k, "VmRSS") for k in kids)),
        "children_pss_mb": mb(sum(_proc_kb(k, "Pss", "smaps_rollup") for k in kids)),
        "total_rss_mb": mb(_proc_kb(pid, "VmRSS") + sum(_proc_kb(k, "VmRSS") for k in kids)),
        "total_pss_mb": mb(
            _proc_kb(pid, "Pss", "smaps_rollup") + sum(_proc_kb(k, "Pss", "smaps_rollup") for k in kids)
        ),
    }


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, nonvoluntary) context switches of all threads of `pid` so far."""
    text = Path(f"/proc/{pid}/status").read_text()
    counts = [
        re.search(rf"^{kind}_ctxt_switches:\s+(\d+)", text, re.MULTILINE)
        for kind in ("voluntary", "nonvoluntary")
    ]
    return tuple(int(m.group(1)) if m else 0 for m in counts)  # type: ignore[return-value]


def machine_cpu() -> tuple[float, float]:
    """(user + nice + system, steal) seconds of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[1] + fields[2]) / ticks, (fields[7] if len(fields) > 7 else 0) / ticks


def background_cpu(seconds: float = 2.0) -> float:
    """Cores busy on the machine (user + nice + system) over `seconds` before anything starts."""
    before = machine_cpu()[0]
    time.sleep(seconds)
    return round((machine_cpu()[0] - before) / seconds, 2)


def wait_quiet(limit: float, cores: float = 0.3, window: float = 0.5) -> dict[str, Any]:
    """Poll the machine's CPU (windows of `window` s, nothing of ours running) until under `cores`
    are busy, for at most `limit` seconds: other work on this shared box skews a run."""
    started = time.monotonic()
    while True:
        before, t0 = machine_cpu()[0], time.monotonic()
        time.sleep(window)
        busy = (machine_cpu()[0] - before) / (time.monotonic() - t0)
        waited = time.monotonic() - started
        if busy < cores or waited >= limit:
            return {"quiet": busy < cores, "busy_cores": round(busy, 2), "waited_s": round(waited, 1)}


def machine() -> dict[str, Any]:
    model = ""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model = match.group(1) if match else ""
    except OSError:
        pass
    import aiohttp
    import uvloop

    try:  # which eventd was measured (best effort: a checkout with git on PATH)
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            check=False,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "eventd"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        commit = f"{commit}{'+uncommitted changes' if dirty else ''}" if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "eventd_commit": commit,
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop.__version__,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "background_cpu_cores_before": background_cpu(),
    }


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------


def finish_report(
    report: dict[str, Any], started: float, args: argparse.Namespace,
    targets: Callable[[dict[str, Any]], list[dict[str, Any]]], print_report: Callable[[dict[str, Any]], None],
) -> int:
    """The load average after, the run's length and the targets into `report`; print it; and write it
    as JSON to --json if given."""
    report["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["run_seconds"] = round(time.perf_counter() - started, 1)
    report["targets"] = targets(report)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0
