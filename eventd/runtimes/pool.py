"""The processes of one function: warm ones kept ready, cold starts on demand, idle ones reaped.

The pool does not count invocations (the dispatcher does); it only guarantees that each process runs
one invocation at a time and that dead processes are never handed out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from eventd.config.model import FunctionSpec
from eventd.runtimes.launch import Launcher
from eventd.runtimes.process import (
    HandlerProcess,
    Outcome,
    OutputSink,
    ProcessState,
    SpawnSpec,
    bootstrap_argv,
    eventd_import_root,
)

log = logging.getLogger(__name__)

#: Variables passed through from the daemon's own environment; everything else is Lambda's or the function's.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
#: Longest wait between attempts to bring a warm process back after init failures.
_MAX_WARM_BACKOFF_S = 30.0
REGION = "us-east-1"
#: Lambda's runtime identifier for the interpreter that runs handlers (the daemon's own).
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
ACCOUNT = "000000000000"


def function_arn(name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


@dataclass
class Checkout:
    """A process handed to one invocation; `init` is set when this invocation paid a cold start."""

    process: HandlerProcess | None
    init: Outcome | None = None


class FunctionPool:
    """Processes of one function. `checkout()` gives an idle or new process; `checkin()` returns it."""

    def __init__(self, name: str, spec: FunctionSpec, state_dir: Path, sink_factory: Callable[[str], OutputSink],
                 launcher: Launcher | None = None):
        self.name = name
        self.spec = spec
        self._state_dir = state_dir
        self._sink = sink_factory(name)
        self._launcher = launcher
        self._idle: deque[HandlerProcess] = deque()
        self._all: set[HandlerProcess] = set()
        self._starting = 0
        self._closed = False
        self._maintainer: asyncio.Task[None] | None = None
        self._warm_failures = 0
        self._next_warm_attempt = 0.0
        #: set after the first attempt to bring up `warm` processes, whatever its result
        self.warm_attempted = asyncio.Event()
        self.last_init_error: dict[str, object] | None = None
        self.cold_start_hook: Callable[[str, Outcome], None] = lambda initialization_type, outcome: None

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._top_up_warm()
        self.warm_attempted.set()
        self._maintainer = asyncio.create_task(self._maintain(), name=f"pool-{self.name}")

    async def stop(self) -> None:
        self._closed = True
        if self._maintainer:
            self._maintainer.cancel()
        await asyncio.gather(*(p.stop() for p in list(self._all)), return_exceptions=True)
        self._all.clear()
        self._idle.clear()

    # --- invocations ------------------------------------------------------------------------------

    async def checkout(self) -> Checkout:
        """An idle process (most recently used first, so the rest can be reaped), or a cold start."""
        while self._idle:
            process = self._idle.pop()
            if process.state is ProcessState.IDLE and not process.hung_up():
                return Checkout(process)
            self.abandon(process)
        process, outcome = await self._spawn("on-demand")
        if process is None:
            return Checkout(None, outcome)
        return Checkout(process, outcome)

    def checkin(self, process: HandlerProcess) -> None:
        if process.state is ProcessState.IDLE and not self._closed:
            self._idle.append(process)
        else:
            self._all.discard(process)
            if process.alive:
                asyncio.get_running_loop().create_task(process.stop())

    def abandon(self, process: HandlerProcess) -> None:
        """Forget a process whose invocation was cancelled and kill it in the background."""
        self._all.discard(process)
        asyncio.get_running_loop().create_task(process.kill())

    async def discard(self, process: HandlerProcess) -> None:
        """Throw a process away (after a timeout or crash it is already dead; this just forgets it)."""
        self._all.discard(process)
        if process.alive:
            await process.kill()

    # --- state for status, metrics and readiness --------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = {"starting": self._starting, "idle": 0, "busy": 0}
        for process in self._all:
            if process.state is ProcessState.IDLE:
                counts["idle"] += 1
            elif process.state is ProcessState.BUSY:
                counts["busy"] += 1
        return counts

    @property
    def warm_ready(self) -> bool:
        return sum(1 for p in self._all if p.alive) >= self.spec.warm

    # --- internals --------------------------------------------------------------------------------

    async def _spawn(self, initialization_type: str) -> tuple[HandlerProcess | None, Outcome]:
        process = HandlerProcess(self._spawn_spec(initialization_type), self._sink, self._launcher)
        self._starting += 1
        try:
            outcome = await process.start()
        finally:
            self._starting -= 1
        self.cold_start_hook(initialization_type, outcome)
        if outcome.error is not None:
            self.last_init_error = outcome.error
            log.warning(
                "Function %s: init failed (%s: %s).", self.name, outcome.error.get("errorType"),
                outcome.error.get("errorMessage"),
            )
            return None, outcome
        self.last_init_error = None
        if self._closed:
            await process.stop()
            return None, outcome
        self._all.add(process)
        return process, outcome

    async def _maintain(self) -> None:
        """Reap idle processes above `warm`, forget dead ones, and bring `warm` back after deaths."""
        interval = max(0.02, min(1.0, self.spec.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            for process in [p for p in self._all if not p.alive]:
                self._all.discard(process)
            now = time.monotonic()
            alive = sum(1 for p in self._all if p.alive)
            while self._idle and alive > self.spec.warm:
                oldest = self._idle[0]
                if oldest.state is ProcessState.IDLE and now - oldest.idle_since < self.spec.idle_timeout:
                    break
                self._idle.popleft()
                self._all.discard(oldest)
                if oldest.alive:
                    alive -= 1
                    log.debug("Function %s: reaping idle process %d.", self.name, oldest.pid)
                    await oldest.stop()
            if now >= self._next_warm_attempt:
                await self._top_up_warm()

    async def _top_up_warm(self) -> None:
        missing = self.spec.warm - sum(1 for p in self._all if p.alive) - self._starting
        if missing <= 0:
            return
        results = await asyncio.gather(*(self._spawn("provisioned-concurrency") for _ in range(missing)))
        failed = False
        for process, _ in results:
            if process is None:
                failed = True
            else:
                self._idle.appendleft(process)
        # Init failures back off so a broken function does not spin the CPU spawning processes.
        self._warm_failures = self._warm_failures + 1 if failed else 0
        delay = min(_MAX_WARM_BACKOFF_S, 0.5 * 2**self._warm_failures) if failed else 0.0
        self._next_warm_attempt = time.monotonic() + delay

    def _spawn_spec(self, initialization_type: str) -> SpawnSpec:
        spec = self.spec
        code_dir = str(spec.code) if spec.code else str(self._state_dir)
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        env.setdefault("LANG", "C.UTF-8")
        env.update(
            {
                "PYTHONPATH": eventd_import_root(),
                "TZ": ":UTC",
                "_HANDLER": spec.handler,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{RUNTIME}",
                "AWS_LAMBDA_FUNCTION_NAME": self.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_INITIALIZATION_TYPE": initialization_type,
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": stream,
                "LAMBDA_TASK_ROOT": code_dir,
                "LAMBDA_RUNTIME_DIR": eventd_import_root(),
            }
        )
        env.update(spec.environment)
        return SpawnSpec(self.name, bootstrap_argv(), env, code_dir, spec.memory_mb)
