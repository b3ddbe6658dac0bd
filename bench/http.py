"""Benchmark eventd's push sources: a no-op HTTP route beside a bare aiohttp baseline, and the
latency of file events from a file's close to its handler's start (inotify, and polling).

    python bench/http.py                         # about 3.5 minutes on 2 cores (less on a quiet box)
    python bench/http.py --json out.json         # also write every figure as JSON
    python bench/http.py --rounds 1 --duration 1 --files 50   # a quick look, ~30 s

What runs, each in its own process, all on loopback:

* eventd:    `python -m eventd run -c <tmp>/eventd.yaml`, one daemon per phase, each on a fresh
             state dir, ready when GET /readyz (admin listener) is 200.
             HTTP phase: function `noop` (`return {"statusCode": 200, "body": "ok"}`, `warm` 16) and
             the route `{http: {method: GET, path: /noop}, function: noop}` on `http.listen`.
             File phases: function `rec` (`warm` 2) on a files route watching an empty folder with
             `mode: inotify`, then (another daemon) `mode: poll` at `poll_interval` 100 ms.
* baseline:  this file, `_baseline`: a bare aiohttp + uvloop server answering GET /noop the way
             eventd does (it calls the same handler in-process and answers its body as
             application/json, eventd's default Content-Type), minus the daemon and the IPC hop.
* loadgen:   this file, `_loadgen`: uvloop + the raw asyncio HTTP/1.1 client protocol of
             bench/invoke.py, N keep-alive connections in closed loops of `GET /noop`. The same
             generator drives both servers; it reports its own CPU time.
* writer:    the benchmark process itself, in the file phases: it opens, writes and closes one file
             every --file-interval, and notes time.time() when each close() returned. The handler
             notes time.time() first thing, reads the file (whose content is the writer's clock just
             before the write) and appends both, with the event's S3 sequencer, to a JSON-lines file.

Measured: throughput and p50/p99 at --concurrency (baseline and eventd alternate, --rounds times,
the median round by throughput is reported), CPU per request of each side and of anything else on
the machine; file-event latency (close returned -> handler started) p50/p99/max per mode, split at
the moment eventd decided to fire (the S3 `sequencer` is eventd's time.time_ns() at that moment).
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.realpath(__file__))


def _hand_over_to_stdlib_http() -> None:
    """This file was imported as `http`: a script in bench/ (`python bench/invoke.py`) has bench/ first
    on sys.path, so `import http.client` found this file instead of the standard library's package.
    Load the real package in its place; the import system returns what sys.modules holds by then."""
    import importlib.machinery
    import importlib.util

    path = [p for p in sys.path if os.path.realpath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("http", path)
    if spec is None or spec.loader is None:
        raise ImportError("bench/http.py shadows the standard library's http package, which was not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["http"] = module
    spec.loader.exec_module(module)


if __name__ == "http":
    _hand_over_to_stdlib_http()

# bench/ is not a package, and `python bench/http.py` puts bench/ first on sys.path, where this file would
# shadow the standard library's `http` package (which aiohttp and http.client need): load _common.py by
# its path (loading it takes bench/ off sys.path) before importing anything else.
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("_bench_common", os.path.join(_HERE, "_common.py"))
common = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(common)  # type: ignore[union-attr]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROUTE_PATH = "/noop"
EXPECTED_BODY = b"ok"

NOOP_SOURCE = """\
def handler(event, context):
    return {"statusCode": 200, "body": "ok"}
"""

# the file-event handler: its start time first, then what it saw
RECORDER_SOURCE = """\
import json
import os
import time
from urllib.parse import unquote_plus

OUT = os.environ["BENCH_OUT"]
FOLDER = os.environ["BENCH_FOLDER"]


def handler(event, context):
    started = time.time()
    lines = []
    for record in event["Records"]:
        key = unquote_plus(record["s3"]["object"]["key"])
        try:
            with open(os.path.join(FOLDER, key)) as file:
                content = file.read()
        except OSError as exc:
            content = f"error: {exc}"
        lines.append(json.dumps({"key": key, "started": started, "content": content,
                                 "sequencer": record["s3"]["object"].get("sequencer"),
                                 "event_name": record["eventName"], "records": len(event["Records"])}))
    with open(OUT, "a") as out:
        out.write("".join(line + "\\n" for line in lines))
"""

TARGET_THROUGHPUT_RATIO = 0.5  # eventd >= half the baseline's req/s at concurrency 16
TARGET_INOTIFY_P50_MS = 50.0  # file event, close -> handler start, p50 under 50 ms with inotify


# --------------------------------------------------------------------------------------------------
# load generator (its own process)
# --------------------------------------------------------------------------------------------------


async def _loadgen(args: argparse.Namespace) -> dict[str, Any]:
    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()
    conns = await common.connect(args.host, args.port, args.concurrency)
    # the first answer must be the function's, or we are measuring the wrong thing
    status, body = await conns[0].request(request)
    if status != 200 or body != EXPECTED_BODY:
        raise SystemExit(f"unexpected first response {status}: {body[:200]!r}")
    m = await common.measure(conns, request, warmup=args.warmup, seconds=args.duration,
                             max_requests=args.max_requests, body_ok=EXPECTED_BODY)
    n = len(m.ms)
    return {
        "concurrency": args.concurrency,
        "requests": n,
        "errors": m.errors,
        "first_error": m.first_error,
        "seconds": round(m.seconds, 3),
        "rps": round(n / m.seconds, 1),
        **m.latency(50, 90, 99),
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

    async def noop(request: web.Request) -> web.Response:
        # the function's answer as eventd turns it into a response: its status and body, and
        # application/json when the function names no Content-Type
        result = handler({}, None)
        return web.Response(status=result["statusCode"], body=result["body"].encode(),
                            content_type="application/json")

    return common.serve(args.port, [("GET", ROUTE_PATH, noop)])


# --------------------------------------------------------------------------------------------------
# orchestration (the parent process)
# --------------------------------------------------------------------------------------------------


def run_loadgen(args: argparse.Namespace, port: int, concurrency: int, server_pid: int) -> dict[str, Any]:
    """One load-generator run against `port`; CPU of the server (and its children) and of the machine
    sampled when the generator starts and ends its measured phase (the server's processes are listed
    again at each sample; a process that ends in between takes its CPU time with it)."""
    argv = [
        sys.executable, os.path.abspath(__file__), "_loadgen", "--port", str(port), "--path", ROUTE_PATH,
        "--concurrency", str(concurrency), "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--max-requests", str(args.max_requests),
    ]

    def sample() -> tuple[float, ...]:
        pids = [server_pid, *common.children_of(server_pid)]
        return (time.perf_counter(), common.cpu_seconds(pids), common.machine_cpu()[0],
                *common.context_switches(server_pid), common.cpu_seconds([server_pid]))

    result, samples = common.run_sampled(argv, args.warmup + args.duration + 60, sample, "the load generator")
    (t0, s0, m0, v0, n0, p0), (t1, s1, m1, v1, n1, p1) = samples
    wall, n = t1 - t0, result["requests"]
    result["server_cpu_cores"] = round((s1 - s0) / wall, 2)
    result["server_cpu_us_per_req"] = round((s1 - s0) / n * 1e6, 1)
    result["server_main_cpu_us_per_req"] = round((p1 - p0) / n * 1e6, 1)  # eventd: the daemon alone
    result["other_cpu_cores"] = round(max(0.0, (m1 - m0) - (s1 - s0) - result["loadgen_cpu_s"]) / wall, 2)
    result["server_ctx_switches_per_req"] = {
        "voluntary": round((v1 - v0) / n, 2), "nonvoluntary": round((n1 - n0) / n, 2)}
    return result


def write_http_config(root: Path, admin_port: int, public_port: int, warm: int, log_level: str) -> Path:
    functions = root / "functions"
    functions.mkdir(parents=True, exist_ok=True)
    (functions / "noop.py").write_text(NOOP_SOURCE)
    config = root / "eventd-http.yaml"
    config.write_text(textwrap.dedent(f"""\
        listen: 127.0.0.1:{admin_port}
        state_dir: state-http
        max_concurrency: 256
        log_level: {log_level}
        drain_timeout: 10s
        http:
          listen: 127.0.0.1:{public_port}
        functions:
          noop:
            handler: noop.handler
            code: functions/
            warm: {warm}
        routes:
          - http: {{method: GET, path: {ROUTE_PATH}}}
            function: noop
        """))
    return config


def write_files_config(root: Path, admin_port: int, mode: str, folder: Path, out: Path, args: argparse.Namespace) -> Path:
    functions = root / "functions"
    functions.mkdir(parents=True, exist_ok=True)
    (functions / "rec.py").write_text(RECORDER_SOURCE)
    watch = f"mode: {mode}"
    if mode == "poll":
        watch += f", poll_interval: {args.poll_interval:g}ms, settle: {args.poll_settle:g}ms"
    config = root / f"eventd-files-{mode}.yaml"
    config.write_text(textwrap.dedent(f"""\
        listen: 127.0.0.1:{admin_port}
        state_dir: state-files-{mode}
        log_level: {args.log_level}
        drain_timeout: 10s
        functions:
          rec:
            handler: rec.handler
            code: functions/
            warm: 2
            environment:
              BENCH_OUT: "{out}"
              BENCH_FOLDER: "{folder}"
        routes:
          - files: {{path: "{folder}", {watch}}}
            function: rec
            name: bench
        """))
    return config


def response_shape(port: int) -> dict[str, Any]:
    """Status, body and the headers that matter of one GET /noop (to show both sides answer alike)."""
    status, headers, body = common.http_call(port, "GET", ROUTE_PATH)
    return {"status": status, "body": body.decode(errors="replace"), "content-type": headers.get("content-type"),
            "content-length": headers.get("content-length")}


def measure_http(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    levels = [int(c) for c in args.concurrency.split(",")]
    admin_port, public_port, baseline_port = common.free_port(), common.free_port(), common.free_port()
    config = write_http_config(root, admin_port, public_port, args.warm, args.log_level)
    eventd = common.eventd_server("eventd", config, admin_port,
                        root / "eventd-http.log")
    baseline = common.Server(
        "baseline",
        [sys.executable, os.path.abspath(__file__), "_baseline", "--port", str(baseline_port),
         "--code", str(root / "functions"), "--handler", "noop.handler"],
        baseline_port, root / "baseline.log",
    )
    out: dict[str, Any] = {}
    try:
        out["eventd_ready_s"] = round(eventd.wait_ready(60), 3)
        baseline.wait_ready(30)
        # ready means every component is up; the route must answer too before anything is timed
        common.wait_until(lambda: _answers(public_port), 30, "eventd's GET /noop to answer 200")
        out["responses"] = {"baseline": response_shape(baseline_port), "eventd": response_shape(public_port)}
        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {"baseline": {}, "eventd": {}}
        for r in range(args.rounds):
            for c in levels:
                for name, server, port in (("baseline", baseline, baseline_port), ("eventd", eventd, public_port)):
                    quiet = common.wait_quiet(args.round_quiet_wait)  # other agents' work on this box comes and goes
                    res = run_loadgen(args, port, c, server.proc.pid)
                    res["quiet_before"] = quiet
                    rounds[name].setdefault(str(c), []).append(res)
                    print(
                        f"  round {r + 1} {name:8} c={c:<3} {res['rps']:>8.1f} req/s  p50 {res['p50_ms']:.3f} ms  "
                        f"p99 {res['p99_ms']:.3f} ms  errors {res['errors']}  other load "
                        f"{res['other_cpu_cores']:.2f} cores  server CPU {res['server_cpu_us_per_req']:.0f} us/req "
                        f"(main process {res['server_main_cpu_us_per_req']:.0f})",
                        flush=True,
                    )
                    if res["errors"]:
                        print(f"    first error: {res['first_error']}", flush=True)
        out["results"] = {
            name: {c: {**sorted(runs, key=lambda x: x["rps"])[len(runs) // 2], "rounds": runs}
                   for c, runs in levels_.items()}
            for name, levels_ in rounds.items()
        }
        # per round, eventd / baseline of that round, and the round least disturbed by other load
        out["round_ratios"] = {}
        for c in rounds["eventd"]:
            pairs = list(zip(rounds["baseline"][c], rounds["eventd"][c], strict=True))
            ratios = [round(e["rps"] / b["rps"], 3) for b, e in pairs]
            others = [max(b["other_cpu_cores"], e["other_cpu_cores"]) for b, e in pairs]
            quietest = min(range(len(pairs)), key=lambda i: others[i])
            out["round_ratios"][c] = {"ratios": ratios, "other_cpu_cores": others, "quietest_round": quietest + 1,
                                      "quietest_ratio": ratios[quietest],
                                      "quietest_rps": {"baseline": pairs[quietest][0]["rps"],
                                                       "eventd": pairs[quietest][1]["rps"]}}
        if args.profile:  # an extra, unreported run under py-spy, after the measured ones
            profiler = common.Profiler(args.profile, "http-eventd")
            profiler.start(eventd.proc.pid)
            try:
                run_loadgen(args, public_port, max(levels), eventd.proc.pid)
            finally:
                profiler.stop()
    finally:
        out["stop"] = {}
        for server in (eventd, baseline):
            code, seconds = server.stop()
            out["stop"][server.name] = {"exit_code": code, "stop_s": round(seconds, 3)}
        _keep_logs(args, root, ["eventd-http.log", "baseline.log"])
    return out


def _answers(port: int) -> bool:
    try:
        return common.http_call(port, "GET", ROUTE_PATH, timeout=2)[0] == 200
    except OSError:
        return False


def _read_seen(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    # a line being appended may be incomplete: take complete lines only
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


def _write_files(folder: Path, names: list[str], interval: float) -> dict[str, tuple[float, float]]:
    """Write each file (open, write, close) on a fixed schedule, one every `interval` s; for each,
    (time.time() before the write, time.time() when close() returned)."""
    times: dict[str, tuple[float, float]] = {}
    start = time.monotonic()
    for i, name in enumerate(names):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the spacing is the workload, not synchronisation
        before = time.time()
        with open(folder / name, "w") as file:
            file.write(f"{before:.6f}\n")
        times[name] = (before, time.time())
    return times


def measure_files(args: argparse.Namespace, root: Path, mode: str) -> dict[str, Any]:
    folder = root / f"inbox-{mode}"
    folder.mkdir()
    seen_path = root / f"seen-{mode}.jsonl"
    port = common.free_port()
    config = write_files_config(root, port, mode, folder, seen_path, args)
    eventd = common.eventd_server(f"eventd ({mode})", config, port,
                        root / f"eventd-files-{mode}.log")
    out: dict[str, Any] = {"mode": mode, "files": args.files, "interval_ms": args.file_interval}
    if mode == "poll":
        out.update(poll_interval_ms=args.poll_interval, settle_ms=args.poll_settle)
    profiler = common.Profiler(args.profile, f"files-{mode}") if args.profile else None
    try:
        out["eventd_ready_s"] = round(eventd.wait_ready(60), 3)
        budget = 30 + (args.poll_settle + args.poll_interval) / 1000

        def wait_for(names: list[str], what: str) -> list[dict[str, Any]]:
            want = set(names)
            return common.wait_until(
                lambda: (lambda rows: rows if want <= {row["key"] for row in rows} else None)(_read_seen(seen_path)),
                budget + len(names) * args.file_interval / 1000, what, interval=0.02)

        # warm-up: the first events of a fresh daemon pay one-off costs (imports, first commits)
        warm_names = [f"warmup-{i:03d}.txt" for i in range(args.file_warmup)]
        _write_files(folder, warm_names, args.file_interval / 1000)
        wait_for(warm_names, f"the {len(warm_names)} warm-up files' events ({mode})")
        names = [f"f{i:05d}.txt" for i in range(args.files)]
        pid = eventd.proc.pid
        if profiler is not None:
            profiler.start(pid)
        cpu0 = (time.monotonic(), common.cpu_seconds([pid]), common.cpu_seconds(common.children_of(pid)), common.machine_cpu()[0])
        times = _write_files(folder, names, args.file_interval / 1000)
        rows = wait_for(names, f"the {len(names)} files' events ({mode})")
        cpu1 = (time.monotonic(), common.cpu_seconds([pid]), common.cpu_seconds(common.children_of(pid)), common.machine_cpu()[0])
        if profiler is not None:
            profiler.stop()
        # a barrier: once a later file has fired, whatever the measured ones would fire twice has fired
        _write_files(folder, ["barrier.txt"], 0)
        rows = wait_for(["barrier.txt"], f"the barrier file's event ({mode})")
    finally:
        if profiler is not None:
            profiler.stop()
        code, seconds = eventd.stop()
        out["stop"] = {"exit_code": code, "stop_s": round(seconds, 3)}
        _keep_logs(args, root, [f"eventd-files-{mode}.log"])
    measured = [row for row in rows if row["key"] in times]
    counts: dict[str, int] = {}
    for row in measured:
        counts[row["key"]] = counts.get(row["key"], 0) + 1
    first = {}
    for row in measured:
        first.setdefault(row["key"], row)
    total, to_fire, fire_to_start, bad_content = [], [], [], 0
    for key, row in first.items():
        before, closed = times[key]
        total.append((row["started"] - closed) * 1000)
        if row["content"].strip() != f"{before:.6f}":
            bad_content += 1  # the handler did not see the complete file
        try:
            fired = int(row["sequencer"], 16) / 1e9  # eventd's time.time_ns() when it fired
        except (TypeError, ValueError):
            continue
        to_fire.append((fired - closed) * 1000)
        fire_to_start.append((row["started"] - fired) * 1000)
    wall = cpu1[0] - cpu0[0]
    out.update(
        events=len(first),
        duplicates=sum(c - 1 for c in counts.values()),
        incomplete_content=bad_content,
        latency_ms=_stats(total),
        close_to_fire_ms=_stats(to_fire),
        fire_to_handler_start_ms=_stats(fire_to_start),
        daemon_cpu_ms_per_file=round((cpu1[1] - cpu0[1]) / len(names) * 1000, 2),
        handlers_cpu_ms_per_file=round((cpu1[2] - cpu0[2]) / len(names) * 1000, 2),
        other_cpu_cores=round(max(0.0, (cpu1[3] - cpu0[3]) - (cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2])) / wall, 2),
    )
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    pct = common.percentile
    values = sorted(values)
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(pct(values, 50), 2), "p90": round(pct(values, 90), 2),
            "p99": round(pct(values, 99), 2), "min": round(values[0], 2), "max": round(values[-1], 2),
            "mean": round(sum(values) / len(values), 2)}


def _keep_logs(args: argparse.Namespace, root: Path, names: list[str]) -> None:
    if not args.keep_logs:
        return
    target = Path(args.keep_logs)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (root / name).exists():
            (target / name).write_bytes((root / name).read_bytes())


def cmd_run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": common.machine(),
        "settings": {
            "concurrency": args.concurrency, "duration_s": args.duration, "warmup_s": args.warmup,
            "rounds": args.rounds, "max_requests": args.max_requests, "warm": args.warm, "log_level": args.log_level,
            "files": args.files, "file_warmup": args.file_warmup, "file_interval_ms": args.file_interval,
            "poll_interval_ms": args.poll_interval, "poll_settle_ms": args.poll_settle,
            "round_quiet_wait_s": args.round_quiet_wait, "phases": args.phases,
        },
    }
    m = report["machine"]
    print(f"machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, load average before "
          f"{m['loadavg_before']}, {m['background_cpu_cores_before']} cores busy before the run; eventd "
          f"{m['eventd_commit']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="eventd-bench-http-") as tmp:
        root = Path(tmp)
        if "http" in args.phases:
            report["quiet_before_http"] = common.wait_quiet(args.quiet_wait)
            print("HTTP route GET /noop:", flush=True)
            report["http"] = measure_http(args, root)
        report["files"] = {}
        for mode in [m for m in ("inotify", "poll") if m in args.phases]:
            report[f"quiet_before_files_{mode}"] = common.wait_quiet(args.quiet_wait)
            print(f"file events ({mode}): {args.files} files, one every {args.file_interval:g} ms", flush=True)
            report["files"][mode] = res = measure_files(args, root, mode)
            lat = res["latency_ms"]
            print(f"  latency p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms  "
                  f"duplicates {res['duplicates']}  other load {res['other_cpu_cores']:.2f} cores", flush=True)
    return common.finish_report(report, started, args, targets, print_report)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if "http" in report:
        res = report["http"]["results"]
        top = str(max(int(c) for c in res["eventd"]))
        ratio = res["eventd"][top]["rps"] / res["baseline"][top]["rps"]
        out.append({"target": f"HTTP route throughput at concurrency {top} >= {TARGET_THROUGHPUT_RATIO:.0%} of "
                              "the baseline's", "value": f"{ratio:.2f}x", "met": ratio >= TARGET_THROUGHPUT_RATIO})
    if "inotify" in report["files"]:
        p50 = report["files"]["inotify"]["latency_ms"]["p50"]
        out.append({"target": f"file event latency (close -> handler start) p50 < {TARGET_INOTIFY_P50_MS:g} ms "
                              "with inotify", "value": f"{p50:.1f} ms", "met": p50 < TARGET_INOTIFY_P50_MS})
    return out


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    if "http" in report:
        print_http(report["http"]["results"], s)
        for c, r in report["http"]["round_ratios"].items():
            print(f"  c={c}: eventd/baseline per round {', '.join(f'{x:.2f}' for x in r['ratios'])} (other load "
                  f"{', '.join(f'{x:.2f}' for x in r['other_cpu_cores'])} cores); quietest round "
                  f"{r['quietest_round']}: {r['quietest_rps']['eventd']:.0f} / {r['quietest_rps']['baseline']:.0f} "
                  f"req/s = {r['quietest_ratio']:.2f}")
    if report["files"]:
        print_files(report["files"], s)
    print("\nTargets")
    for t in report["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED':>6}] {t['target']}: {t['value']}")
    m = report["machine"]
    print(f"\nload average before {m['loadavg_before']}, after {m['loadavg_after']}; "
          f"total {report['run_seconds']:.0f} s")


def print_http(res: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\nHTTP route GET /noop -> {{\"statusCode\": 200, \"body\": \"ok\"}} (median of {s['rounds']} rounds of "
          f"{s['duration_s']:g} s; noop warm {s['warm']})")
    print(f"{'conc':>4} | {'baseline':>8} {'p50':>6} {'p99':>6} | {'eventd':>7} {'p50':>6} {'p99':>6} | "
          f"{'ratio':>5} | {'server CPU us/req':>17} {'daemon':>6} {'loadgen':>7} {'other':>5}")
    print(f"{'':>4} | {'req/s':>8} {'ms':>6} {'ms':>6} | {'req/s':>7} {'ms':>6} {'ms':>6} | "
          f"{'req/s':>5} | {'baseline / eventd':>17} {'us/req':>6} {'us/req':>7} {'cores':>5}")
    for c in res["eventd"]:
        b, e = res["baseline"][c], res["eventd"][c]
        print(
            f"{c:>4} | {b['rps']:>8.0f} {b['p50_ms']:>6.2f} {b['p99_ms']:>6.2f} | {e['rps']:>7.0f} "
            f"{e['p50_ms']:>6.2f} {e['p99_ms']:>6.2f} | {e['rps'] / b['rps']:>5.2f} | "
            f"{b['server_cpu_us_per_req']:>7.0f} / {e['server_cpu_us_per_req']:<7.0f} "
            f"{e['server_main_cpu_us_per_req']:>6.0f} "
            f"{max(b['loadgen_cpu_us_per_req'], e['loadgen_cpu_us_per_req']):>7.0f} "
            f"{max(b['other_cpu_cores'], e['other_cpu_cores']):>5.2f}"
        )
    print("  ratio is eventd / baseline; eventd's server CPU includes its handler processes, `daemon` is the\n"
          "  daemon process alone; other = CPU used by anything else on the machine (the larger of the two runs).")


def print_files(files: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\nFile events, close() returned -> handler started ({s['files']} files, one every "
          f"{s['file_interval_ms']:g} ms, after {s['file_warmup']} warm-up files)")
    print(f"{'mode':>24} | {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6} | {'to fire':>7} {'fire->start':>11} | "
          f"{'daemon':>6} {'other':>5} | dup")
    print(f"{'':>24} | {'ms':>6} {'ms':>6} {'ms':>6} {'ms':>6} | {'p50 ms':>7} {'p50 ms':>11} | "
          f"{'ms/file':>6} {'cores':>5} |")
    for mode, f in files.items():
        label = mode if mode != "poll" else f"poll {f['poll_interval_ms']:g}ms settle {f['settle_ms']:g}ms"
        lat, a, b = f["latency_ms"], f["close_to_fire_ms"], f["fire_to_handler_start_ms"]
        print(f"{label:>24} | {lat['p50']:>6.1f} {lat['p90']:>6.1f} {lat['p99']:>6.1f} {lat['max']:>6.1f} | "
              f"{a.get('p50', float('nan')):>7.1f} {b.get('p50', float('nan')):>11.1f} | "
              f"{f['daemon_cpu_ms_per_file']:>6.2f} {f['other_cpu_cores']:>5.2f} | {f['duplicates']}")
    print("  to fire: close() returned -> eventd decided to fire (the event's S3 sequencer is its time.time_ns());\n"
          "  fire->start: that -> the handler's first line (store commit, async queue, dispatch, IPC).")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See docs/benchmarks.md for what is measured and how.")
    parser.add_argument("--concurrency", default="16", help="comma-separated HTTP levels (default 16)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per HTTP run (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each HTTP run (default 1)")
    parser.add_argument("--round-quiet-wait", type=float, default=10.0,
                        help="before each HTTP run, wait up to this many s for the machine to be quiet (default 10)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="HTTP runs per server, alternating; the median one is reported (default 5)")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="cap on requests per phase")
    parser.add_argument("--warm", type=int, default=16, help="warm processes of `noop` (default 16)")
    parser.add_argument("--files", type=int, default=200, help="files written per file-event mode (default 200)")
    parser.add_argument("--file-warmup", type=int, default=5, help="unmeasured files written first (default 5)")
    parser.add_argument("--file-interval", type=float, default=20.0, help="ms between file writes (default 20)")
    parser.add_argument("--poll-interval", type=float, default=100.0, help="poll mode's poll_interval, ms (default 100)")
    parser.add_argument("--poll-settle", type=float, default=100.0,
                        help="poll mode's settle, ms (default 100; eventd's default is 1 s)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="eventd's log_level (default info, eventd's default)")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="wait up to this many s for the machine to be quiet before each phase (default 30)")
    parser.add_argument("--phases", default="http,inotify,poll",
                        help="which to run, comma-separated: http, inotify, poll (default all three)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the servers' logs to DIR")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy (raw) the daemon and its handlers in an extra HTTP run and in the file phases")
    return parser


def _loadgen_parser() -> argparse.ArgumentParser:
    lg = argparse.ArgumentParser(prog="http.py _loadgen")
    lg.add_argument("--host", default="127.0.0.1")
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--path", default=ROUTE_PATH)
    lg.add_argument("--concurrency", type=int, default=16)
    lg.add_argument("--duration", type=float, default=3.0)
    lg.add_argument("--warmup", type=float, default=1.0)
    lg.add_argument("--max-requests", type=int, default=1_000_000)
    return lg


def _baseline_parser() -> argparse.ArgumentParser:
    bl = argparse.ArgumentParser(prog="http.py _baseline")
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
    if args.duration <= 0 or args.warmup < 0 or min(args.max_requests, args.rounds, args.files) < 1:
        raise SystemExit("bench: --duration, --max-requests, --rounds and --files must be positive")
    if args.file_interval < 0 or args.poll_interval <= 0 or args.poll_settle < 0 or args.file_warmup < 0:
        raise SystemExit("bench: --file-interval, --poll-interval, --poll-settle and --file-warmup must not be negative")
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not args.phases or set(args.phases) - {"http", "inotify", "poll"}:
        raise SystemExit("bench: --phases takes http, inotify and/or poll")
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
