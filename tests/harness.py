"""Start real eventd daemons as subprocesses on free ports, and wait on conditions (never sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """`wait_until` for tests on the event loop: poll `predicate` without blocking the loop."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state that has no event to wait on
            await asyncio.sleep(0.01)


def process_gone(pid: int) -> bool:
    """Every thread of the process has exited, so its files (IPC sockets) are closed. A zombie
    leader alone is not enough: its other threads hold the files until they exit too."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        return zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except (FileNotFoundError, ProcessLookupError):
        # the process was reaped between the open and the read: ESRCH, not ENOENT
        return True


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


@dataclass
class Daemon:
    """A running `eventd run` subprocess and the folder it lives in."""

    root: Path
    config_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    def start(self, wait_ready: bool = True) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the subprocess owns it until it exits
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventd", "run", "-c", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **self.env},
        )
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"eventd exited with {self.process.returncode}:\n{self.output()}")
            try:
                return http("GET", self.url + "/readyz", timeout=2).status == 200
            except OSError:
                return False

        wait_until(ready, timeout, what="eventd /readyz")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def function_log(self, function: str) -> str:
        path = self.root / "state" / "logs" / f"{function}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def invoke(self, function: str, payload: Any = None, headers: dict[str, str] | None = None,
               raw: bytes | None = None) -> Reply:
        body = raw if raw is not None else json.dumps({} if payload is None else payload).encode()
        return http("POST", f"{self.url}/2015-03-31/functions/{function}/invocations", body, headers)

    def status(self) -> dict[str, Any]:
        return http("GET", self.url + "/admin/status").json()  # type: ignore[no-any-return]

    def processes(self, function: str) -> dict[str, int]:
        for entry in self.status()["functions"]:
            if entry["name"] == function:
                return entry["processes"]  # type: ignore[no-any-return]
        raise KeyError(function)

    def metrics(self) -> str:
        return http("GET", self.url + "/metrics").body.decode()


def make_daemon(root: Path, functions: dict[str, dict[str, Any]], code: dict[str, str],
                **top: Any) -> Daemon:
    """Write `code` (file name -> source) into root/functions and a config serving `functions`."""
    code_dir = root / "functions"
    code_dir.mkdir(parents=True, exist_ok=True)
    for name, source in code.items():
        (code_dir / name).write_text(textwrap.dedent(source))
    port = free_port()
    config = {"listen": f"127.0.0.1:{port}", "state_dir": "state", "drain_timeout": "10s", **top,
              "functions": {name: {"code": "functions", **spec} for name, spec in functions.items()}}
    path = root / "eventd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return Daemon(root, path, port)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " ") or (labels and _same_labels(line, name, labels)):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _same_labels(line: str, name: str, labels: dict[str, str]) -> bool:
    if not line.startswith(name + "{"):
        return False
    inner = line[len(name) + 1 : line.index("}")]
    pairs = dict(part.split("=", 1) for part in inner.split(",") if part)
    return all(pairs.get(k) == f'"{v}"' for k, v in labels.items()) and len(pairs) == len(labels)


class Gate:
    """Holds handlers mid-invocation: each connects to this Unix socket and blocks until `open()`.

    `wait_arrivals(n)` returns once n handlers are inside their invocation: a condition, not a sleep.
    """

    HANDLER = '''
import os, socket

def handler(event, context):
    if "gate" in event:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(event["gate"])
            sock.recv(1)
    return {"pid": os.getpid(), "init": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")}
'''

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(self.path)
        self._server.listen(256)
        self._arrived: list[socket.socket] = []

    @property
    def waiting(self) -> int:
        """Handlers inside their invocation, held at the gate now."""
        return len(self._arrived)

    def wait_arrivals(self, count: int, timeout: float = 20.0) -> None:
        """Wait until `count` handlers in all are held at the gate."""
        deadline = time.monotonic() + timeout
        while len(self._arrived) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(self._arrived)} of {count} handlers reached the gate")
            self._server.settimeout(remaining)
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self._arrived.append(conn)

    def open(self) -> None:
        for conn in self._arrived:
            with contextlib.suppress(OSError):  # that handler's process is gone (killed on timeout or shutdown)
                conn.sendall(b"x")
            conn.close()
        self._arrived.clear()

    def close(self) -> None:
        self.open()
        self._server.close()


def read_jsonl(path: Path) -> list[Any]:
    """The complete JSON lines of a file that handlers append to: a line still being written (no
    newline yet) is left for the next read."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
