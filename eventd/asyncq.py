"""Asynchronous invocation, as Lambda does it: accept (commit, then 202), run with retries, route.

Each function has a durable queue `async:<function>`. A runner per function receives only as many
events as the function has free concurrency, invokes them through the one door (`Invoker`), and
moves each event to its next state in one transaction:

  success          -> delete, + on_success record
  function error   -> retry after backoff (up to max_retries), else -> RetriesExhausted
  throttled        -> retry after throttle backoff, not counted as an attempt
  too old          -> EventAgeExceeded (checked before each attempt and before scheduling a retry)
  concurrency 0    -> ZeroReservedConcurrency, no retries
  failed           -> delete, + on_failure record, + dead-letter copy of the event
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from eventd.asyncevents import ASYNC_PREFIX, async_queue, new_event
from eventd.config.model import AsyncSpec, Config, DestinationSpec
from eventd.destinations import WEBHOOK_PREFIX, WebhookDelivery, destination_ops
from eventd.dispatch import Throttled
from eventd.invoke import InvocationResult, Invoker
from eventd.metrics import Metrics
from eventd.runtimes.pool import function_arn
from eventd.store.engine import Operation
from eventd.store.queues import (
    Message,
    NewMessage,
    QueueStore,
    op_change_visibility,
    op_delete,
    op_release_in_flight,
    op_send,
)

log = logging.getLogger(__name__)

#: Lambda's async payload limit: 1 MB (lambda-semantics.md §1.5).
MAX_ASYNC_PAYLOAD = 1024 * 1024
#: Most events one runner holds in flight beyond what it could start at once.
_MAX_BATCH = 64
#: A received event stays invisible this much longer than the function's timeout, so only a daemon
#: that died mid-invocation (not a slow one) lets it be received again.
_LEASE_MARGIN_S = 60.0


class _AcceptBatch:
    """Events accepted in one turn of the event loop, committed together: one store operation per
    queue rather than one per request. Each caller still waits for the commit that holds its event."""

    def __init__(self, queues: QueueStore) -> None:
        self._queues = queues
        self._waiting: dict[str, tuple[list[NewMessage], list[asyncio.Future[None]]]] = {}

    def add(self, queue: str, message: NewMessage) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        messages, futures = self._waiting.setdefault(queue, ([], []))
        messages.append(message)
        futures.append(future)
        return future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        now = self._queues.clock()
        for queue, (messages, futures) in waiting.items():
            try:
                stored = self._queues.store.write(op_send(queue, messages, now))
            except Exception as exc:  # noqa: BLE001 - the store is closed: every caller hears it
                stored = asyncio.get_running_loop().create_future()
                stored.set_exception(exc)
            stored.add_done_callback(functools.partial(_settle, futures))


def _settle(futures: list[asyncio.Future[None]], stored: asyncio.Future[Any]) -> None:
    """Pass the commit's outcome (done, failed or cancelled) to every caller waiting on it."""
    for future in futures:
        if future.done():
            continue
        if stored.cancelled():
            future.cancel()
        elif (error := stored.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(None)


@dataclass(frozen=True)
class Failure:
    condition: str
    result: InvocationResult | None


class AsyncInvocations:
    """All functions' async queues: accept, run, retry, route. Start after the invoker, stop before it."""

    def __init__(
        self, config: Config, invoker: Invoker, queues: QueueStore, metrics: Metrics,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._invoker = invoker
        self._queues = queues
        #: the store's queues, for operator tools (DLQ listing and redrive)
        self.queues = queues
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._runners = {name: _Runner(self, name) for name in config.functions}
        self._accepting = _AcceptBatch(queues)
        self._received = {name: metrics.loop_counter(metrics.async_received, name) for name in config.functions}
        self.webhooks = WebhookDelivery(config, queues, metrics)

    @property
    def clock(self) -> Callable[[], float]:
        return self._queues.clock

    async def start(self) -> None:
        # the webhook outboxes too: a record being POSTed when eventd stopped is sent again
        await self._queues.store.write(op_release_in_flight(WEBHOOK_PREFIX, self.clock()))
        released = await self._queues.store.write(op_release_in_flight(ASYNC_PREFIX, self.clock()))
        for queue, count in released.items():
            function = queue.removeprefix(ASYNC_PREFIX)
            log.warning("%d async events of %s were in flight when eventd stopped; running them again "
                        "(they may run twice).", count, function)
            self._metrics.async_redelivered.labels(function).inc(count)
        for runner in self._runners.values():
            runner.start()
        await self.webhooks.start()

    async def stop(self, timeout: float) -> None:
        """Stop taking events; let running ones finish for up to `timeout` seconds. Unfinished events
        stay in the store and run after the next start."""
        await asyncio.gather(*(runner.stop(timeout) for runner in self._runners.values()))
        await self.webhooks.stop()

    async def accept(self, function: str, payload: bytes, request_id: str | None = None) -> str:
        """Commit an event for `function`; the returned request id means it is durable."""
        message = new_event(payload, function, request_id)
        await self._accepting.add(async_queue(function), message)
        self._received[function].inc()
        self.wake(function)
        return str(message.id)

    def wake(self, function: str) -> None:
        runner = self._runners.get(function)
        if runner is not None:
            runner.wake.set()

    # --- one event --------------------------------------------------------------------------------

    async def process(self, function: str, message: Message, slot_held: bool = False) -> None:
        """Run one received event and move it to its next state. With `slot_held`, the caller took a
        concurrency slot for it; it is released on every path."""
        spec = self.config.functions[function].async_
        queue = async_queue(function)
        meta = dict(message.meta)
        age = self.clock() - message.sent_at
        early = None
        if self.config.functions[function].concurrency == 0:
            early = "ZeroReservedConcurrency"
        elif age > spec.max_event_age:
            early = "EventAgeExceeded"
        if early is not None:
            if slot_held:
                self._invoker.dispatcher.release(function)
            await self._fail(function, spec, message, meta, Failure(early, None))
            return
        self._metrics.async_event_age.labels(function).observe(max(0.0, age))
        try:
            result = await self._invoker.invoke_sync(function, message.body, request_id=meta["rid"],
                                                     slot_held=slot_held)
        except Throttled:
            meta["throttles"] = meta.get("throttles", 0) + 1
            delay = spec.throttle_backoff.delay(meta["throttles"], self._rng)
            if age + delay > spec.max_event_age:
                await self._fail(function, spec, message, meta, Failure("EventAgeExceeded", None))
                return
            self._metrics.async_retries.labels(function, "throttle").inc()
            await self._queues.change_visibility(queue, message.receipt, delay, meta)
            return
        meta["invokes"] = meta.get("invokes", 0) + 1
        age = self.clock() - message.sent_at  # the run took time: look ahead from now
        if result.error_type is None:
            ops = [op_delete(queue, message.receipt)]
            ops += self._destination_ops(function, spec.on_success, "Success", message, meta, result)
            await self._commit_routes(function, ops, spec.on_success, None)
            return
        meta["attempts"] = meta.get("attempts", 0) + 1
        if meta["attempts"] > spec.max_retries:
            await self._fail(function, spec, message, meta, Failure("RetriesExhausted", result))
            return
        delay = spec.retry_backoff.delay(meta["attempts"], self._rng)
        # Lambda looks ahead: an event whose next retry would come after its max age fails now
        if age + delay > spec.max_event_age:
            await self._fail(function, spec, message, meta, Failure("EventAgeExceeded", result))
            return
        self._metrics.async_retries.labels(function, "error").inc()
        await self._queues.change_visibility(queue, message.receipt, delay, meta)

    async def _fail(self, function: str, spec: AsyncSpec, message: Message, meta: dict[str, Any],
                    failure: Failure) -> None:
        ops: list[Operation[Any]] = [op_delete(async_queue(function), message.receipt)]
        ops += self._destination_ops(function, spec.on_failure, failure.condition, message, meta, failure.result)
        if spec.dead_letter:
            ops.append(op_send(spec.dead_letter, [_dead_letter(function, message, meta, failure)], self.clock()))
        kept = [name for name, present in (("dlq", spec.dead_letter), ("on_failure", spec.on_failure)) if present]
        self._metrics.async_dropped.labels(function, failure.condition, "+".join(kept) or "none").inc()
        if not kept:
            log.warning("Async event %s of %s dropped (%s): no dead_letter or on_failure is configured.",
                        meta["rid"], function, failure.condition)
        await self._commit_routes(function, ops, spec.on_failure, spec.dead_letter)

    async def _commit_routes(self, function: str, ops: list[Operation[Any]], destination: DestinationSpec | None,
                             dead_letter: str | None) -> None:
        kind = destination.kind if destination else None
        try:
            await self._queues.transact(*ops)
        except Exception as exc:  # noqa: BLE001 - the event stays in the store and comes back after its lease
            log.error("Could not route an async event of %s: %s; it will be retried.", function, exc)
            if kind:
                self._metrics.destination_failures.labels(function, kind).inc()
            if dead_letter:
                self._metrics.dlq_write_failures.labels(function, dead_letter).inc()
            return
        if destination is not None:
            if destination.webhook is not None:
                self.webhooks.wake(function)  # the webhook loop counts its own deliveries
            else:
                assert kind is not None
                self._metrics.destination_deliveries.labels(function, kind).inc()
            if destination.function:
                self.wake(destination.function)
        if dead_letter:
            self._metrics.dlq_writes.labels(function, dead_letter).inc()
            self._queues.notify(dead_letter)
        if destination is not None and destination.queue is not None:
            self._queues.notify(destination.queue)

    def _destination_ops(
        self, function: str, destination: DestinationSpec | None, condition: str, message: Message,
        meta: dict[str, Any], result: InvocationResult | None,
    ) -> list[Operation[Any]]:
        if destination is None:
            return []
        record = invocation_record(function, condition, message, meta, result, self.clock())
        return destination_ops(destination, function, condition, record, self.clock())


def invocation_record(function: str, condition: str, message: Message, meta: dict[str, Any],
                      result: InvocationResult | None, now: float) -> bytes:
    """Lambda's invocation record (lambda-semantics.md §2.4). The payloads are spliced in as the JSON
    bytes they already are, so no event is parsed and re-encoded on this path."""
    head: dict[str, Any] = {
        "version": "1.0",
        "timestamp": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(now % 1 * 1000):03d}Z",
        "requestContext": {
            "requestId": meta["rid"],
            "functionArn": function_arn(function, "$LATEST"),
            "condition": condition,
            "approximateInvokeCount": meta.get("invokes", 0),
        },
    }
    parts = [orjson.dumps(head)[:-1], b',"requestPayload":', message.body or b"{}"]
    if result is not None:
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if result.error_type is not None:
            response["functionError"] = "Unhandled"
        parts += [b',"responseContext":', orjson.dumps(response), b',"responsePayload":', result.payload]
    parts.append(b"}")
    return b"".join(parts)


def _dead_letter(function: str, message: Message, meta: dict[str, Any], failure: Failure) -> NewMessage:
    """The original event, with Lambda's DLQ attributes (lambda-semantics.md §2.5)."""
    error_message = failure.condition
    if failure.result is not None and failure.result.error_type is not None:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            error_message = str(orjson.loads(failure.result.payload).get("errorMessage", failure.condition))
    attributes = {
        "RequestID": {"DataType": "String", "StringValue": meta["rid"]},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": error_message[:1024]},
    }
    origin = {"kind": "event", "fn": function, "rid": meta["rid"], "condition": failure.condition,
              "invokes": meta.get("invokes", 0)}
    if "redriven" in meta:
        origin["redriven"] = meta["redriven"]
    return NewMessage(message.body or b"{}", attributes, origin)


class _Runner:
    """Pulls one function's async events, never more than its free concurrency."""

    def __init__(self, owner: AsyncInvocations, function: str) -> None:
        self._owner = owner
        self.function = function
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"async-{self.function}")

    async def stop(self, timeout: float) -> None:
        self._stopping = True
        self.wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _run(self) -> None:
        owner = self._owner
        dispatcher = owner._invoker.dispatcher
        spec = owner.config.functions[self.function]
        queue = async_queue(self.function)
        lease = spec.timeout + _LEASE_MARGIN_S
        zero = spec.concurrency == 0  # its events fail at once, without a slot
        while not self._stopping:
            free = _MAX_BATCH if zero else min(dispatcher.free(self.function), _MAX_BATCH)
            if free <= 0:
                await dispatcher.wait_for_release()
                continue
            self.wake.clear()
            try:
                messages = await owner._queues.receive(queue, free, lease)
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not end the runner
                log.error("Cannot read the async queue of %s: %s.", self.function, exc)
                await asyncio.sleep(1.0)
                continue
            # Take the slots only now, after the await: holding them while the store answered would
            # throttle sync callers. Another poller may have taken some meanwhile; what has no slot
            # goes straight back to the queue, so it waits instead of counting as throttled.
            held = len(messages) if zero else dispatcher.acquire_up_to(self.function, len(messages))
            if held < len(messages):
                await owner._queues.transact(*(op_change_visibility(queue, m.receipt, 0.0, owner.clock())
                                               for m in messages[held:]))
                messages = messages[:held]
            for message in messages:
                task = asyncio.create_task(self._process(message, slot_held=not zero))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if messages:
                # let the new tasks take their slots before measuring free concurrency again
                await asyncio.sleep(0)
                continue
            await owner._queues.wait_for_visible(queue, self.wake)

    async def _process(self, message: Message, slot_held: bool) -> None:
        try:
            await self._owner.process(self.function, message, slot_held)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one event's bug must not stop the others; it comes back after its lease
            log.exception("Async event %s of %s failed inside eventd.", message.id, self.function)
        # the event may have been rescheduled sooner than the runner's current wait: let it look again
        self.wake.set()

