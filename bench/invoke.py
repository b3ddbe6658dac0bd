"""Benchmark eventd's Invoke API against an in-process baseline, plus cold start and idle memory.

    python bench/invoke.py                       # about 1.5 minutes on 2 cores
    python bench/invoke.py --json out.json       # also write every figure as JSON
    python bench/invoke.py --duration 1 --rounds 1 --cold-samples 10   # a quick look, ~20 s

What runs, each in its own process, all on loopback:

* eventd:    `python -m eventd run -c <tmp>/eventd.yaml` serving `noop` (warm: 16) and `cold`
             (warm: 0, idle_timeout: 50ms), started on a free port, ready when GET /readyz is 200.
* baseline:  a bare aiohttp + uvloop server (this file, `_baseline`) with the same route, that reads
             the body, parses it with json.loads, calls the same `noop.handler` in-process and answers
             json.dumps(result) as application/json (what eventd's handler process does, minus IPC).
* loadgen:   this file, `_loadgen`: uvloop + raw asyncio protocol, N keep-alive HTTP/1.1
             connections in closed loops (one request in flight per connection). The same generator
             drives both servers; it reports its own CPU time so it can be seen not to be the limit.

Measured: throughput and p50/p99 latency at each concurrency (after a warm-up; baseline and eventd
alternate, `--rounds` times, and the median round is reported), each side's CPU per request and the
CPU used by anything else on the machine meanwhile (it is a shared 2-core box), cold start as users
see it (first invoke of `cold` after its process has been reaped; detected by polling /admin/status),
the REPORT line's Init Duration of those invokes, and RSS/PSS of the daemon and of its handlers.
"""

# ruff: noqa: E402 - the imports below come after _common.py is loaded, on purpose
from __future__ import annotations

import importlib.util
import os
import sys

# bench/ is not a package, and `python bench/invoke.py` puts bench/ first on sys.path, where the sibling
# scripts http.py and queue.py would shadow the standard library's modules: load _common.py by its path
# (loading it takes bench/ off sys.path) before anything that imports `http` or `queue`.
_spec = importlib.util.spec_from_file_location(
    "_bench_common", os.path.join(os.path.dirname(os.path.realpath(__file__)), "_common.py"))
common = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(common)  # type: ignore[union-attr]

import argparse
import base64
import http.client
import json
import re
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

INVOKE_PATH = common.INVOKE_PATH
DEFAULT_PAYLOAD = common.DEFAULT_PAYLOAD

NOOP_SOURCE = """\
def handler(event, context):
    return event
"""
# A handler that imports only the standard library (a few common modules), for cold starts.
COLD_SOURCE = """\
import datetime
import json
import os
import time


def handler(event, context):
    return event
"""

TARGET_THROUGHPUT_RATIO = 0.5  # eventd >= half the baseline's req/s at concurrency 16
TARGET_P50_DELTA_MS = 1.0  # eventd warm p50 within 1 ms of the baseline's
TARGET_COLD_P50_MS = 100.0  # cold start p50 under 100 ms


# --------------------------------------------------------------------------------------------------
# load generator (its own process)
# --------------------------------------------------------------------------------------------------


async def _loadgen(args: argparse.Namespace) -> dict[str, Any]:
    payload = args.payload.encode()
    request = (
        f"POST {INVOKE_PATH.format(name=args.function)} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    expected = json.loads(payload)
    conns = await common.connect(args.host, args.port, args.concurrency)
    # the first answer must be the echo of the event, or we are measuring the wrong thing
    status, body = await conns[0].request(request)
    if status != 200 or json.loads(body) != expected:
        raise SystemExit(f"unexpected first response {status}: {body[:200]!r}")
    m = await common.measure(conns, request, warmup=args.warmup, seconds=args.duration, max_requests=args.max_requests)
    n = len(m.ms)
    return {
        "concurrency": args.concurrency,
        "requests": n,
        "errors": m.errors,
        "seconds": round(m.seconds, 3),
        "rps": round(n / m.seconds, 1),
        **m.latency(50, 90, 99),
        "mean_ms": round(sum(m.ms) / n, 3) if n else None,
        **m.loadgen_cpu(),
    }


def cmd_loadgen(args: argparse.Namespace) -> int:
    return common.print_json_of(_loadgen(args))


# --------------------------------------------------------------------------------------------------
# baseline server (its own process)
# --------------------------------------------------------------------------------------------------


def cmd_baseline(args: argparse.Namespace) -> int:
    from aiohttp import web

    handler = common.load_handler(args.code, args.handler)

    async def invoke(request: web.Request) -> web.Response:
        # the same steps eventd's handler process takes on a payload, minus the IPC hop
        raw = await request.read()
        event = json.loads(raw) if raw else {}
        result = handler(event, None)
        return web.Response(body=json.dumps(result).encode(), content_type="application/json")

    return common.serve(args.port, [("POST", INVOKE_PATH, invoke)])


# --------------------------------------------------------------------------------------------------
# orchestration (the parent process)
# --------------------------------------------------------------------------------------------------


def run_loadgen(
    args: argparse.Namespace, port: int, function: str, concurrency: int, server_pids: list[int]
) -> dict[str, Any]:
    argv = [
        sys.executable, os.path.abspath(__file__), "_loadgen", "--port", str(port), "--function", function,
        "--concurrency", str(concurrency), "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--max-requests", str(args.max_requests), "--payload", args.payload,
    ]  # fmt: skip

    # the loadgen prints "measuring" and "done" around its measured phase; the servers' CPU and
    # the machine's are sampled at those moments
    def sample() -> tuple[float, ...]:
        return (
            time.perf_counter(),
            common.cpu_seconds(server_pids),
            *common.machine_cpu(),
            *common.context_switches(server_pids[0]),
            common.cpu_seconds(server_pids[:1]),
        )

    result, samples = common.run_sampled(argv, args.warmup + args.duration + 60, sample, "the load generator")
    (t0, s0, m0, st0, v0, n0, p0), (t1, s1, m1, st1, v1, n1, p1) = samples
    wall = t1 - t0
    result["server_cpu_cores"] = round((s1 - s0) / wall, 2)
    result["server_cpu_us_per_req"] = round((s1 - s0) / result["requests"] * 1e6, 1)
    # the server's own process only (for eventd: the daemon without its handler processes)
    result["server_main_cpu_us_per_req"] = round((p1 - p0) / result["requests"] * 1e6, 1)
    # CPU used on the machine by anything other than the server under test and the load generator
    result["other_cpu_cores"] = round(max(0.0, (m1 - m0) - (s1 - s0) - result["loadgen_cpu_s"]) / wall, 2)
    result["steal_cores"] = round((st1 - st0) / wall, 2)
    # of the server's own (daemon) process, not its handler processes
    result["server_ctx_switches_per_req"] = {
        "voluntary": round((v1 - v0) / result["requests"], 2),
        "nonvoluntary": round((n1 - n0) / result["requests"], 2),
    }
    return result


def measure_cold_starts(port: int, samples: int, discard: int) -> dict[str, Any]:
    """First invoke of `cold` after its only process has been reaped (warm: 0, idle_timeout: 50ms)."""
    payload = DEFAULT_PAYLOAD.encode()

    def pool_empty() -> bool:
        status, _, body = common.http_call(port, "GET", "/admin/status")
        if status != 200:
            return False
        for function in json.loads(body)["functions"]:
            if function["name"] == "cold":
                counts = function["processes"]
                return counts["idle"] == 0 and counts["busy"] == 0 and counts["starting"] == 0
        raise SystemExit("bench: function `cold` missing from /admin/status")

    latencies, inits, warm_after = [], [], []
    for i in range(samples + discard):
        common.wait_until(pool_empty, 10, "the `cold` process to be reaped (GET /admin/status idle == 0)")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.connect()  # the TCP connect is not part of the cold start
        t0 = time.perf_counter()
        conn.request(
            "POST",
            INVOKE_PATH.format(name="cold"),
            body=payload,
            headers={"Content-Type": "application/json", "X-Amz-Log-Type": "Tail"},
        )
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if response.status != 200 or json.loads(body) != json.loads(payload):
            raise SystemExit(f"bench: cold invoke answered {response.status}: {body[:200]!r}")
        tail = base64.b64decode(response.getheader("X-Amz-Log-Result") or "").decode(errors="replace")
        match = re.search(r"Init Duration: ([\d.]+) ms", tail)
        if match is None:
            raise SystemExit(f"bench: the `cold` invoke was not a cold start (no Init Duration):\n{tail}")
        # the same process again, right away: a warm invoke over the same connection, for reference
        t1 = time.perf_counter()
        conn.request(
            "POST",
            INVOKE_PATH.format(name="cold"),
            body=payload,
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        warm_ms = (time.perf_counter() - t1) * 1000
        conn.close()
        if i >= discard:
            latencies.append(elapsed)
            inits.append(float(match.group(1)))
            warm_after.append(warm_ms)
    latencies.sort()
    inits.sort()
    warm_after.sort()
    return {
        "samples": samples,
        "discarded_first": discard,
        "invoke_p50_ms": round(common.percentile(latencies, 50), 2),
        "invoke_p99_ms": round(common.percentile(latencies, 99), 2),
        "invoke_min_ms": round(latencies[0], 2),
        "invoke_max_ms": round(latencies[-1], 2),
        "init_duration_p50_ms": round(common.percentile(inits, 50), 2),
        "init_duration_p99_ms": round(common.percentile(inits, 99), 2),
        "next_warm_invoke_p50_ms": round(common.percentile(warm_after, 50), 2),
    }


def write_config(root: Path, port: int, warm: int, log_level: str) -> Path:
    functions = root / "functions"
    functions.mkdir()
    (functions / "noop.py").write_text(NOOP_SOURCE)
    (functions / "coldfn.py").write_text(COLD_SOURCE)
    config = root / "eventd.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        listen: 127.0.0.1:{port}
        state_dir: state
        max_concurrency: 256
        log_level: {log_level}
        drain_timeout: 10s
        functions:
          noop:
            handler: noop.handler
            code: functions/
            warm: {warm}
          cold:
            handler: coldfn.handler
            code: functions/
            warm: 0
            idle_timeout: 50ms
        """)
    )
    return config


def cmd_run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    report: dict[str, Any] = {
        "machine": common.machine(),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "max_requests": args.max_requests,
            "concurrency": concurrencies,
            "rounds": args.rounds,
            "warm": args.warm,
            "log_level": args.log_level,
            "cold_samples": args.cold_samples,
            "payload_bytes": len(args.payload.encode()),
        },
    }
    print(
        f"machine: {report['machine']['nproc']} cores, {report['machine']['cpu']}, Python "
        f"{report['machine']['python']}, load average before {report['machine']['loadavg_before']}, "
        f"{report['machine']['background_cpu_cores_before']} cores busy before the run; eventd "
        f"{report['machine']['eventd_commit']}"
    )
    with tempfile.TemporaryDirectory(prefix="eventd-bench-") as tmp:
        root = Path(tmp)
        eventd_port, baseline_port = common.free_port(), common.free_port()
        config = write_config(root, eventd_port, args.warm, args.log_level)
        eventd = common.eventd_server("eventd", config, eventd_port, root / "eventd.log")
        baseline = common.Server(
            "baseline",
            [
                sys.executable,
                os.path.abspath(__file__),
                "_baseline",
                "--port",
                str(baseline_port),
                "--code",
                str(root / "functions"),
                "--handler",
                "noop.handler",
            ],
            baseline_port,
            root / "baseline.log",
        )
        servers = [eventd, baseline]
        try:
            ready_s = eventd.wait_ready(60)
            baseline.wait_ready(30)
            report["eventd_ready_s"] = round(ready_s, 3)
            report["memory_idle_after_start"] = {
                "eventd": common.memory(eventd.proc.pid),
                "baseline": common.memory(baseline.proc.pid),
            }
            # rounds alternate baseline and eventd at each level so background load hits both alike;
            # the round with the median throughput is reported (all rounds are in the JSON)
            rounds: dict[str, dict[str, list[dict[str, Any]]]] = {"baseline": {}, "eventd": {}}
            for r in range(args.rounds):
                for c in concurrencies:
                    for name, server in (("baseline", baseline), ("eventd", eventd)):
                        pids = [server.proc.pid, *common.children_of(server.proc.pid)]
                        res = run_loadgen(args, server.port, "noop", c, pids)
                        rounds[name].setdefault(str(c), []).append(res)
                        print(
                            f"  round {r + 1} {name:8} c={c:<3} {res['rps']:>8.1f} req/s  p50 {res['p50_ms']:.3f} ms  "
                            f"p99 {res['p99_ms']:.3f} ms  errors {res['errors']}  other load "
                            f"{res['other_cpu_cores']:.2f} cores  server CPU {res['server_cpu_us_per_req']:.0f} us/req "
                            f"(main process {res['server_main_cpu_us_per_req']:.0f})",
                            flush=True,
                        )
            results = {
                name: {
                    c: {**sorted(runs, key=lambda x: x["rps"])[len(runs) // 2], "rounds": runs}
                    for c, runs in levels.items()
                }
                for name, levels in rounds.items()
            }
            report["throughput"] = results
            report["memory_idle_after_load"] = {
                "eventd": common.memory(eventd.proc.pid),
                "baseline": common.memory(baseline.proc.pid),
            }
            report["cold_start"] = measure_cold_starts(eventd_port, args.cold_samples, discard=2)
        finally:
            stops = {}
            for server in servers:
                code, seconds = server.stop()
                stops[server.name] = {"exit_code": code, "stop_s": round(seconds, 3)}
            report["stop"] = stops
            if args.keep_logs:
                for server in servers:
                    target = Path(args.keep_logs) / f"{server.name}.log"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(server.log_path.read_bytes())
    return common.finish_report(report, started, args, targets, print_report)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    tp = report["throughput"]
    out = []
    top = str(max(int(c) for c in tp["eventd"]))
    ratio = tp["eventd"][top]["rps"] / tp["baseline"][top]["rps"]
    out.append(
        {
            "target": f"throughput at concurrency {top} >= {TARGET_THROUGHPUT_RATIO:.0%} of baseline",
            "value": f"{ratio:.2f}x",
            "met": ratio >= TARGET_THROUGHPUT_RATIO,
        }
    )
    low = str(min(int(c) for c in tp["eventd"]))
    delta = tp["eventd"][low]["p50_ms"] - tp["baseline"][low]["p50_ms"]
    out.append(
        {
            "target": f"warm p50 latency (concurrency {low}) within {TARGET_P50_DELTA_MS:g} ms of baseline",
            "value": f"+{delta:.3f} ms",
            "met": delta <= TARGET_P50_DELTA_MS,
        }
    )
    cold = report["cold_start"]["invoke_p50_ms"]
    out.append(
        {
            "target": f"cold start p50 < {TARGET_COLD_P50_MS:g} ms",
            "value": f"{cold:.1f} ms",
            "met": cold < TARGET_COLD_P50_MS,
        }
    )
    return out


def print_report(report: dict[str, Any]) -> None:
    tp = report["throughput"]
    print(
        "\nWarm invokes of a no-op, POST /2015-03-31/functions/noop/invocations "
        f"(median of {report['settings']['rounds']} rounds of {report['settings']['duration_s']:g} s)"
    )
    print(
        f"{'conc':>4} | {'baseline':>8} {'p50':>6} {'p99':>6} | {'eventd':>7} {'p50':>6} {'p99':>6} | "
        f"{'ratio':>5} {'p50':>5} {'p99':>5} | {'server CPU us/req':>17} {'loadgen':>7} {'other':>5}"
    )
    print(
        f"{'':>4} | {'req/s':>8} {'ms':>6} {'ms':>6} | {'req/s':>7} {'ms':>6} {'ms':>6} | "
        f"{'req/s':>5} {'ratio':>5} {'ratio':>5} | {'baseline / eventd':>17} {'us/req':>7} {'cores':>5}"
    )
    for c in tp["eventd"]:
        b, e = tp["baseline"][c], tp["eventd"][c]
        other = max(b["other_cpu_cores"], e["other_cpu_cores"])
        print(
            f"{c:>4} | {b['rps']:>8.0f} {b['p50_ms']:>6.2f} {b['p99_ms']:>6.2f} | {e['rps']:>7.0f} "
            f"{e['p50_ms']:>6.2f} {e['p99_ms']:>6.2f} | {e['rps'] / b['rps']:>5.2f} "
            f"{e['p50_ms'] / b['p50_ms']:>5.2f} {e['p99_ms'] / b['p99_ms']:>5.2f} | "
            f"{b['server_cpu_us_per_req']:>7.0f} / {e['server_cpu_us_per_req']:<7.0f} "
            f"{max(b['loadgen_cpu_us_per_req'], e['loadgen_cpu_us_per_req']):>7.0f} {other:>5.2f}"
        )
    print(
        "  ratios are eventd / baseline. server CPU counts eventd's handler processes; loadgen is the load\n"
        "  generator's own CPU (the larger of the two runs); other = CPU used by anything else on the machine\n"
        "  during the measured phase (the larger of the two runs)."
    )
    cold = report["cold_start"]
    print(
        f"\nCold start (`cold`, stdlib-only handler; first invoke after its process was reaped; "
        f"{cold['samples']} samples)"
    )
    print(
        f"  invoke as the client sees it: p50 {cold['invoke_p50_ms']:.1f} ms, p99 {cold['invoke_p99_ms']:.1f} ms "
        f"(min {cold['invoke_min_ms']:.1f}, max {cold['invoke_max_ms']:.1f})"
    )
    print(
        f"  REPORT Init Duration (spawn to ready): p50 {cold['init_duration_p50_ms']:.1f} ms, "
        f"p99 {cold['init_duration_p99_ms']:.1f} ms; next warm invoke p50 {cold['next_warm_invoke_p50_ms']:.2f} ms"
    )
    print("\nMemory (MB; PSS splits shared pages between processes)")
    for label in ("memory_idle_after_start", "memory_idle_after_load"):
        m = report[label]["eventd"]
        bm = report[label]["baseline"]
        print(
            f"  {label.removeprefix('memory_').replace('_', ' '):17}: eventd daemon RSS {m['self_rss_mb']:.1f} "
            f"(PSS {m['self_pss_mb']:.1f}); with {m['children']} handler processes RSS {m['total_rss_mb']:.1f} "
            f"(PSS {m['total_pss_mb']:.1f}); baseline RSS {bm['self_rss_mb']:.1f}"
        )
    print("\nTargets")
    for t in report["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED':>6}] {t['target']}: {t['value']}")
    m = report["machine"]
    print(
        f"\nload average before {m['loadavg_before']}, after {m['loadavg_after']}; eventd ready in "
        f"{report['eventd_ready_s']:.2f} s; stop: {report['stop']}; total {report['run_seconds']:.0f} s"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See docs/benchmarks.md for what is measured and how."
    )
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (default 3)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds before each run (default 1)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs per server and level, alternating; the median one is reported (default 3)",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=1_000_000,
        help="cap on requests per phase (warm-up and measured), default 1000000",
    )
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    parser.add_argument(
        "--warm", type=int, default=16, help="warm processes of `noop` in eventd (default 16)"
    )
    parser.add_argument("--cold-samples", type=int, default=30, help="cold starts measured (default 30)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="eventd's log_level (default info, eventd's default: START/END/REPORT are logged)",
    )
    parser.add_argument("--payload", default=DEFAULT_PAYLOAD, help="JSON event sent with every invoke")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the servers' logs to DIR")

    return parser


def _loadgen_parser() -> argparse.ArgumentParser:
    """The load generator's own process: `invoke.py _loadgen ...` (started by the benchmark)."""
    lg = argparse.ArgumentParser(prog="invoke.py _loadgen")
    lg.add_argument("--host", default="127.0.0.1")
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--function", default="noop")
    lg.add_argument("--concurrency", type=int, default=1)
    lg.add_argument("--duration", type=float, default=5.0)
    lg.add_argument("--warmup", type=float, default=1.0)
    lg.add_argument("--max-requests", type=int, default=1_000_000)
    lg.add_argument("--payload", default=DEFAULT_PAYLOAD)

    return lg


def _baseline_parser() -> argparse.ArgumentParser:
    """The baseline server's own process: `invoke.py _baseline ...` (started by the benchmark)."""
    bl = argparse.ArgumentParser(prog="invoke.py _baseline")
    bl.add_argument("--port", type=int, required=True)
    bl.add_argument("--code", required=True)
    bl.add_argument("--handler", default="noop.handler")
    return bl


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_loadgen"]:
        return cmd_loadgen(_loadgen_parser().parse_args(argv[1:]))
    if argv[:1] == ["_baseline"]:
        return cmd_baseline(_baseline_parser().parse_args(argv[1:]))
    args = _parser().parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or min(args.max_requests, args.cold_samples, args.rounds) < 1:
        raise SystemExit("bench: --duration, --max-requests, --rounds and --cold-samples must be positive")
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
