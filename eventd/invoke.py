"""The one door into execution. Every source (Invoke API, and later queues, streams, files, cron)
calls `Invoker.invoke_sync`; it takes a concurrency slot, finds a process, runs the handler, frames
the log (START / END / REPORT) and counts the result.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from eventd.config.model import Config, FunctionSpec
from eventd.dispatch import Dispatcher, Throttled
from eventd.ids import SequentialIds
from eventd.logs import DaemonLogging
from eventd.metrics import FunctionState, Metrics
from eventd.runtimes.launch import ForkServerLauncher
from eventd.runtimes.pool import FunctionPool, function_arn
from eventd.runtimes.process import InvokeRequest, Outcome, eventd_import_root
from eventd.runtimes.protocol import SqsFields

#: X-Amz-Log-Result carries the last 4 KB of the invocation's log (lambda-semantics.md §1.2).
LOG_TAIL_BYTES = 4096


@dataclass(slots=True)  # built once per invocation: frozen dataclasses are slow to build
class InvocationResult:
    request_id: str
    #: the handler's JSON result, or Lambda's error object when `error_type` is set
    payload: bytes
    error_type: str | None
    log_lines: tuple[str, ...]

    def log_tail_base64(self) -> str:
        data = "".join(self.log_lines).encode()[-LOG_TAIL_BYTES:]
        return base64.b64encode(data).decode()


class UnknownFunction(LookupError):
    pass





class Invoker:
    def __init__(self, config: Config, metrics: Metrics, logs: DaemonLogging) -> None:
        self.config = config
        self.dispatcher = Dispatcher(config)
        #: reported as every function's LastModified: the config is the deployment
        self.loaded_at = datetime.now(UTC)
        self._request_ids = SequentialIds()
        self._metrics = metrics
        self._logs = logs
        # EVENTD_FORKSERVER=0 starts every handler process as a new interpreter (slower, for debugging)
        self._launcher = (ForkServerLauncher(eventd_import_root())
                          if os.environ.get("EVENTD_FORKSERVER", "1") != "0" else None)
        self.pools: dict[str, FunctionPool] = {
            name: FunctionPool(name, spec, config.state_dir, self._sink_for, self._launcher)
            for name, spec in config.functions.items()
        }
        for name, pool in self.pools.items():
            pool.cold_start_hook = self._cold_start_hook(name)
        self._arns = {name: function_arn(name) for name in config.functions}
        metrics.watch_state(self.state)

    def new_request_id(self) -> str:
        """A fresh request id, for sources that put it in the event before invoking."""
        return self._request_ids.next()

    def spec(self, function: str) -> FunctionSpec:
        try:
            return self.config.functions[function]
        except KeyError:
            raise UnknownFunction(function) from None

    async def start(self) -> None:
        if self._launcher is not None:
            await self._launcher.start()
        for pool in self.pools.values():
            await pool.start()

    async def stop(self) -> None:
        for pool in self.pools.values():
            await pool.stop()
        if self._launcher is not None:
            await self._launcher.stop()

    async def invoke_sync(
        self,
        function: str,
        payload: bytes | SqsFields,
        *,
        request_id: str | None = None,
        client_context: dict[str, Any] | None = None,
        trace_id: str | None = None,
        invoked_arn: str | None = None,
        slot_held: bool = False,
    ) -> InvocationResult:
        """Run `function` once on `payload` (JSON bytes, or an SQS batch's fields). Raises Throttled or UnknownFunction.

        `slot_held`: the caller already took this invocation's concurrency slot (with
        `dispatcher.acquire_up_to`); it is released here all the same.
        """
        spec = self.spec(function)
        metrics = self._metrics.function(function)
        if not slot_held:
            try:
                self.dispatcher.acquire(function)
            except Throttled as exc:
                self._metrics.throttles.labels(function, exc.reason).inc()
                raise
        request_id = request_id or self._request_ids.next()
        pool = self.pools[function]
        try:
            checkout = await pool.checkout()
            start_line = f"START RequestId: {request_id} Version: $LATEST\n"
            process = checkout.process
            if process is None:
                assert checkout.init is not None
                outcome = checkout.init
            else:
                try:
                    outcome = await process.invoke(
                        InvokeRequest(
                            request_id, payload, invoked_arn or self._arns[function], spec.timeout,
                            client_context, trace_id,
                        )
                    )
                except asyncio.CancelledError:
                    # the caller gave up (forced shutdown): the process is mid-invocation, so it cannot be reused
                    pool.abandon(process)
                    raise
                if outcome.status in ("timeout", "crash"):
                    await pool.discard(process)
                else:
                    pool.checkin(process)
        finally:
            self.dispatcher.release(function)
        init = checkout.init
        lines = self._frame(function, spec, request_id, start_line, outcome, init)
        if process is not None:  # an init failure ran no handler: it has no invocation duration
            metrics.duration.observe(outcome.duration_ms / 1000)
        if outcome.error is None:
            metrics.success.inc()
            assert outcome.payload is not None
            return InvocationResult(request_id, outcome.payload, None, lines)
        metrics.error.inc()
        error_type = str(outcome.error.get("errorType", "Unhandled"))
        self._metrics.count_error(function, error_type)
        return InvocationResult(request_id, orjson.dumps(outcome.error), error_type, lines)

    def _frame(
        self, function: str, spec: FunctionSpec, request_id: str, start_line: str, outcome: Outcome,
        init: Outcome | None,
    ) -> tuple[str, ...]:
        """Write END and REPORT for one invocation and return its whole log (for X-Amz-Log-Result)."""
        closing = []
        if outcome.status == "timeout" and outcome.error:
            closing.append(f"{outcome.error['errorMessage'].removeprefix('RequestId: ').replace(' Error: ', ' ')}\n")
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {outcome.duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(outcome.duration_ms))} ms\tMemory Size: {spec.memory_mb} MB\t"
            f"Max Memory Used: {outcome.max_memory_mb or '-'} MB"
        )
        if init is not None:
            report += f"\tInit Duration: {init.duration_ms:.2f} ms"
        if outcome.status in ("timeout", "crash") or (init is not None and init.error is not None):
            report += f"\tStatus: {'timeout' if outcome.status == 'timeout' else 'error'}"
            if outcome.error:
                report += f"\tError Type: {outcome.error.get('errorType')}"
        closing += [f"END RequestId: {request_id}\n", report + "\n"]
        output = [] if init is not None and init.error is not None else outcome.output
        self._logs.invocation(function, request_id, start_line, output, "".join(closing))
        return (start_line, *output, *closing)

    def _sink_for(self, function: str):  # type: ignore[no-untyped-def]
        logs = self._logs

        def sink(request_id: str | None, text: str) -> None:
            logs.function_output(function, request_id, text)

        return sink

    def _cold_start_hook(self, function: str):  # type: ignore[no-untyped-def]
        metrics = self._metrics.function(function)

        def hook(initialization_type: str, outcome: Outcome) -> None:
            counter = metrics.cold_starts if initialization_type == "on-demand" else metrics.provisioned_starts
            counter.inc()
            metrics.init_duration.observe(outcome.duration_ms / 1000)

        return hook

    def state(self) -> list[FunctionState]:
        return [
            FunctionState(
                function=name,
                concurrent_executions=self.dispatcher.in_use(name),
                concurrency_limit=self.dispatcher.limit(name),
                warm_target=pool.spec.warm,
                processes=pool.counts(),
            )
            for name, pool in self.pools.items()
        ]
