"""Event source mappings: read queues and streams, batch, filter, invoke, and only then delete
(queues) or advance the checkpoint (streams), honouring `batchItemFailures` (lambda-semantics.md §4-5).

Pollers fetch only what free concurrency can take, so a burst waits on disk, not in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from eventd.batching import Batcher, BatchPolicy
from eventd.config import mapping_name
from eventd.config.model import Config, QueueRouteSpec, StreamRouteSpec
from eventd.destinations import WebhookDelivery, destination_ops, mapping_outbox
from eventd.dispatch import Throttled
from eventd.events import SqsEvents, batch_event, kinesis_record, sqs_record, stream_arn
from eventd.invoke import InvocationResult, Invoker
from eventd.metrics import Metrics
from eventd.patterns import Filter, compile_filters
from eventd.retry import THROTTLE_BACKOFF, Backoff
from eventd.runtimes.pool import function_arn
from eventd.runtimes.protocol import SqsFields
from eventd.store.engine import Operation, StoreClosed, all_of
from eventd.store.queues import (
    Message,
    QueueStore,
    Redrive,
    op_delete_many,
    op_receive_batch,
    op_return_uncounted,
)
from eventd.store.streams import StreamRecord, StreamStore, op_checkpoint, sequence_number, shard_id

log = logging.getLogger(__name__)

#: Waits between retries of a failed stream batch (Lambda retries promptly; it documents no schedule).
STREAM_RETRY_BACKOFF = Backoff(initial=0.2, maximum=10.0, multiplier=2.0, jitter=0.1)
#: Bytes counted for a record's envelope besides its body, so byte caps hold for the event as sent.
_RECORD_OVERHEAD = 512
#: A queue mapping's slot keeps up to this many batches received ahead, and no more than
#: _MAX_MESSAGES_AHEAD messages (unless one batch is larger): see QueueMapping.
_MAX_AHEAD = 8
_MAX_MESSAGES_AHEAD = 80


def batch_item_failures(payload: bytes, identifiers: set[str]) -> set[str] | None:
    """The identifiers a `batchItemFailures` response lists; None when the response is invalid (then
    the whole batch failed, as Lambda rules). Empty, null and `{}` responses mean complete success."""
    try:
        response = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return None
    if response in (None, "", [], {}):
        return set()
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in identifiers:
            return None
        failed.add(identifier)
    return failed


def _parse_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode(errors="replace")


class Mappings:
    """Every queue and stream mapping of the config. Start after the invoker; stop before it."""

    def __init__(self, config: Config, invoker: Invoker, queues: QueueStore, streams: StreamStore,
                 metrics: Metrics, webhooks: WebhookDelivery, wake_function: Callable[[str], None]) -> None:
        self.queue_mappings: list[QueueMapping] = []
        self.stream_mappings: list[StreamMapping] = []
        for route in config.routes:
            if not route.enabled:
                continue
            if isinstance(route, QueueRouteSpec):
                self.queue_mappings.append(QueueMapping(route, config, invoker, queues, metrics))
            elif isinstance(route, StreamRouteSpec):
                self.stream_mappings.append(
                    StreamMapping(route, config, invoker, streams, metrics, webhooks, wake_function, queues.notify)
                )

    async def start(self) -> None:
        for mapping in [*self.queue_mappings, *self.stream_mappings]:
            await mapping.start()

    async def stop(self, timeout: float) -> None:
        await asyncio.gather(*(m.stop(timeout) for m in [*self.queue_mappings, *self.stream_mappings]))

    def wake_stream(self, stream: str) -> None:
        for mapping in self.stream_mappings:
            if mapping.route.stream == stream:
                mapping.wake_all()


class _Worker:
    """Shared lifecycle: one loop task, the batch tasks it spawned, a soft stop with a deadline."""

    def __init__(self) -> None:
        self._loops: list[asyncio.Task[None]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self.stopping = False

    def _spawn_batch(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def stop(self, timeout: float) -> None:
        self.stopping = True
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = set(self._batches)
        if running:
            _, pending = await asyncio.wait(running, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)


class _Round:
    """One store operation shared by the batches of a mapping that settled while it waited for the writer."""

    __slots__ = ("done", "future", "wants")

    def __init__(self) -> None:
        self.done: list[str] = []
        self.wants = 0
        self.future: asyncio.Future[tuple[list[Message], int]] | None = None


class _Settler:
    """Deletes what a mapping's finished batches succeeded with and receives the next batches they ask
    for, in as few store operations as the writer thread allows.

    A request made while the previous one still waits in the writer's queue joins it: one DELETE and
    one receive (of a batch per asking request) serve them all, in one commit. The writer groups
    commits the same way, but each operation would still run its own statements (SQLite's per-statement
    cost is most of a 10-message batch's). A request never waits for a round it could not join: once
    the writer has started a round (under the lock), the next request opens a new one.
    """

    def __init__(self, queues: QueueStore, queue: str, batch_size: int, visibility_timeout: float,
                 redrive: Redrive | None) -> None:
        self._queues = queues
        self._queue = queue
        self._batch_size = batch_size
        self._visibility_timeout = visibility_timeout
        self._redrive = redrive
        self._lock = threading.Lock()  # the writer thread starts a round while the loop may be joining it
        self._open: _Round | None = None

    async def settle(self, done: list[str], wants: int) -> tuple[list[Message], int]:
        """Delete the messages of receipts `done` and receive up to `wants` batches. Returns the messages
        received for this request and how many were moved to the dead-letter queue meanwhile (reported
        to the request that opened the round)."""
        with self._lock:
            round_ = self._open
            # (a round whose future is done but which is still open never ran: its commit failed first)
            opened = round_ is None or (round_.future is not None and round_.future.done())
            if opened:
                round_ = self._open = _Round()
            assert round_ is not None
            round_.done += done
            index = round_.wants
            round_.wants += wants
        if opened:
            try:
                round_.future = self._queues.store.write(functools.partial(self._run, round_))
            except BaseException:
                self._open = None
                raise
        assert round_.future is not None
        # shielded: the future is shared, and one waiter cancelled (a forced stop) must not cancel it for all
        messages, dead_lettered = await asyncio.shield(round_.future)
        size = self._batch_size
        return messages[index * size : (index + wants) * size], (dead_lettered if opened else 0)

    def _run(self, round_: _Round, conn: sqlite3.Connection) -> tuple[list[Message], int]:
        """In the writer thread: close the round to newcomers, then delete and receive for all of it."""
        with self._lock:
            if self._open is round_:
                self._open = None
            done, wants = round_.done, round_.wants
        if done:
            op_delete_many(self._queue, done)(conn)
        if not wants:
            return [], 0
        return op_receive_batch(self._queue, wants * self._batch_size, self._visibility_timeout,
                                self._queues.clock(), self._redrive)(conn)


class QueueMapping(_Worker):
    """One poller per queue route, and one task per batch in flight.

    Lifecycle: the poller receives what free concurrency can take and starts a batch task per batch.
    A batch task takes its slot and invokes. Without a batching window, on a standard queue, it then
    goes on with the next batch on the same slot for as long as the queue has work, handing back to
    the poller when a receive finds nothing (or when stopping, or when its slot was taken):

    - the next batch is received in the same store operation that deletes what the previous batch
      succeeded with (`_Settler`), so a batch costs one store round trip, not two;
    - when the visibility timeout leaves room for it (at least twice the function's timeout), that
      operation starts as the batch is invoked rather than after: the store round trip then overlaps
      the invocation. A slot keeps up to `_depth` batches received ahead (8 batches of 10 by default):
      a round trip through the writer (1.4 ms, 3.4 under load) takes longer than a quick invocation
      (0.6 ms for a no-op batch of 10), so with one batch ahead the slot would wait on the store at
      every batch; and the more a receive takes, the less the writer spends per message (no-op
      batches of 10 on 4 slots: 16,000 messages/s with one ahead, 17,500 with 4, 19,500 with 8). A
      batch received ahead waits at most `_depth` invocations (function timeouts) before its own, so
      `_depth` is kept below the visibility timeout over the function timeout and the batch still
      finishes within its visibility timeout; if it cannot run (stopping, slot taken) it goes back to
      the queue uncounted, as a throttled batch does. Memory stays bounded: at most 80 messages (or
      one batch) ahead per running batch.
    """

    def __init__(self, route: QueueRouteSpec, config: Config, invoker: Invoker, queues: QueueStore,
                 metrics: Metrics) -> None:
        super().__init__()
        self.route = route
        self.name = mapping_name(route)
        self._invoker = invoker
        self._queues = queues
        self._metrics = metrics
        self._spec = config.queues[route.queue]
        self._redrive = (Redrive(self._spec.dead_letter, self._spec.max_receive_count)
                         if self._spec.dead_letter else None)
        self._filter: Filter = compile_filters(route.filters)
        self._policy = BatchPolicy(route.batch_size, route.max_batch_bytes, route.batching_window)
        # a batch can roll straight on to the next only without a window (a window gathers across
        # receives) and on standard queues (a FIFO group's order is kept by the poller's single receive)
        self._chains = route.batching_window == 0 and not self._spec.fifo
        timeout = config.functions[route.function].timeout
        self._prefetches = self._chains and self._spec.visibility_timeout >= 2 * timeout
        # batches a slot keeps received ahead: within the visibility timeout's room (a batch ahead waits
        # one function timeout per batch before it), and at most 80 messages (or one batch) per slot
        self._depth = max(1, min(_MAX_AHEAD, int(self._spec.visibility_timeout // timeout) - 1,
                                 _MAX_MESSAGES_AHEAD // route.batch_size))
        self._events = SqsEvents(route.queue)
        self._settler = _Settler(queues, route.queue, route.batch_size, self._spec.visibility_timeout, self._redrive)
        self._max_batches = route.max_concurrency or 1_000_000
        self._active = 0
        self._unslotted = 0  # batches dispatched that have not taken their slot yet
        self._throttles = 0
        self._throttled_until = 0.0
        # counted on the event loop per batch: the loop's own children, folded in at each scrape
        self._batch_size = metrics.loop_histogram(metrics.mapping_batch_size, self.name)
        self._outcomes = {outcome: metrics.loop_counter(metrics.mapping_batches, self.name, outcome)
                          for outcome in ("success", "partial", "failure", "throttled")}
        self.wake = asyncio.Event()
        queues.subscribe(route.queue, self.wake)

    async def start(self) -> None:
        self._loops.append(asyncio.create_task(self._poll(), name=f"mapping-{self.name}"))

    def _free_batches(self) -> int:
        """Batches that could start now: free function concurrency, within the mapping's own cap. Batches
        dispatched but not yet holding their slot count as running: their slots are spoken for."""
        free = self._invoker.dispatcher.free(self.route.function) - self._unslotted
        return min(self._max_batches - self._active, free)

    async def _poll(self) -> None:
        batcher: Batcher[Message] = Batcher(self._policy)
        queue = self.route.queue
        while True:
            now = time.monotonic()
            if now < self._throttled_until:
                await asyncio.sleep(self._throttled_until - now)
                continue
            free = self._free_batches()
            if not batcher.items and free <= 0:
                # A batch only starts when it can run: received-but-waiting messages would sit in memory.
                # Clear the wake-up before looking again, so the wait below really waits (a set event
                # would return at once and this loop would never yield).
                self.wake.clear()
                if self._free_batches() > 0:
                    continue
                if self._active < self._max_batches:
                    await self._invoker.dispatcher.wait_for_release()
                else:
                    await self._wait_wake(None)
                continue
            # Without a window, one receive fills a batch for every free slot: the store's round trip,
            # not the function, would otherwise set the pace.
            want = batcher.room
            if self._policy.window == 0 and not batcher.items and not self._spec.fifo:
                # (not FIFO: a group's messages from one receive must stay in one batch, in order)
                want = batcher.room * max(1, free)
            self.wake.clear()
            messages, dead_lettered = await self._queues.receive_batch(
                queue, want, self._spec.visibility_timeout, self._redrive, fifo=self._spec.fifo)
            self._count_dead_lettered(dead_lettered)
            for message in messages:
                size = len(message.body) + _RECORD_OVERHEAD
                if not batcher.fits(size) or batcher.full:
                    self._dispatch(batcher.flush())
                batcher.add(message, size, time.monotonic())
            if batcher.ready(time.monotonic()):
                self._dispatch(batcher.flush())
                continue
            if messages:
                continue  # there may be more visible right now
            deadline = batcher.deadline()
            if deadline is None:
                await self._queues.wait_for_visible(queue, self.wake)
            else:
                await self._wait_wake(max(0.0, deadline - time.monotonic()))

    def _count_dead_lettered(self, count: int) -> None:
        if count:
            assert self._redrive is not None
            self._metrics.queue_dead_lettered.labels(self.route.queue, self._redrive.dead_letter).inc(count)
            self._queues.notify(self._redrive.dead_letter)

    async def _wait_wake(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    def _dispatch(self, batch: list[Message]) -> None:
        self._active += 1
        self._unslotted += 1
        self._spawn_batch(self._run_batch(batch))

    async def _take_slot(self) -> None:
        """A concurrency slot for one batch, taken before its invoke so nothing can throttle it. The
        poll loop fetched only what free slots could take, so this waits only when sync callers or
        another mapping took a slot in between."""
        dispatcher = self._invoker.dispatcher
        while not dispatcher.acquire_up_to(self.route.function, 1):
            await dispatcher.wait_for_release()

    def _may_continue(self) -> bool:
        return not self.stopping and time.monotonic() >= self._throttled_until

    async def _run_batch(self, batch: list[Message]) -> None:
        """Run `batch` and, while the queue has work, the batches after it on the same slot (see the
        class docstring)."""
        dispatcher = self._invoker.dispatcher
        function = self.route.function
        prefetch: asyncio.Future[list[list[Message]]] | None = None  # a receive under way
        ahead: collections.deque[list[Message]] = collections.deque()  # batches received for this slot
        slot_held = False
        unslotted = True
        try:
            await self._take_slot()
            slot_held = True
            unslotted = False
            self._unslotted -= 1
            current = batch
            done: list[str] = []  # what earlier batches succeeded with, not yet deleted
            while True:
                if prefetch is not None and prefetch.done():
                    ahead.extend(prefetch.result())
                    prefetch = None
                if self._prefetches and prefetch is None and len(ahead) < self._depth and self._may_continue():
                    prefetch = asyncio.ensure_future(self._settle_and_receive(done, self._depth - len(ahead)))
                    done = []
                slot_held = False  # invoke_sync releases it
                succeeded = await self._invoke(current)
                if succeeded is None:  # throttled: `current` went back to the queue, and so does what is ahead
                    await self._give_back_ahead(ahead, prefetch, [])
                    prefetch = None
                    break
                done += succeeded
                next_batch: list[Message] | None = None
                if ahead or prefetch is not None:
                    # take the slot back before anything awaits: the poller must not see it free
                    slot_held = self._may_continue() and dispatcher.acquire_up_to(function, 1) > 0
                    if not ahead:
                        assert prefetch is not None
                        ahead.extend(await prefetch)
                        prefetch = None
                    if ahead and not slot_held:
                        await self._give_back_ahead(ahead, prefetch, done)
                        prefetch, done = None, []
                    elif ahead:
                        next_batch = ahead.popleft()
                    elif slot_held:
                        dispatcher.release(function)
                        slot_held = False
                elif self._chains and self._may_continue() and dispatcher.acquire_up_to(function, 1):
                    slot_held = True
                    batches, done = await self._settle_and_receive(done, 1), []
                    next_batch = batches[0] if batches else None
                    if not next_batch:
                        dispatcher.release(function)
                        slot_held = False
                if not next_batch:
                    break
                current = next_batch
            if done:
                _, dead_lettered = await self._settler.settle(done, 0)
                self._count_dead_lettered(dead_lettered)
        finally:
            if slot_held:
                dispatcher.release(function)
            if prefetch is not None:  # cancelled (a forced stop) with a receive under way
                prefetch.add_done_callback(self._give_back_later)
            if ahead:  # cancelled with batches received ahead
                self._give_back_now([m for b in ahead for m in b])
            if unslotted:
                self._unslotted -= 1
            self._active -= 1
            self.wake.set()

    async def _invoke(self, batch: list[Message]) -> list[str] | None:
        """Invoke `batch`, whose slot the caller holds (released here). Returns the receipts to delete
        (what succeeded, and what filters rejected), or None when the function was throttled (the batch
        went back to the queue)."""
        function = self.route.function
        try:
            kept, event, done = self._event(batch)  # done: what filters rejected, deleted as Lambda does
        except BaseException:
            self._invoker.dispatcher.release(function)
            raise
        if not kept:
            self._invoker.dispatcher.release(function)
            return done
        self._batch_size.observe(len(kept))
        try:
            result = await self._invoker.invoke_sync(function, event, slot_held=True)
        except Throttled:
            await self._give_back(kept, done)
            self._throttles += 1
            self._throttled_until = time.monotonic() + THROTTLE_BACKOFF.delay(self._throttles)
            self._outcomes["throttled"].inc()
            return None
        self._throttles = 0
        return done + self._succeeded(kept, result)

    def _give_back_op(self, messages: list[Message], done: list[str]) -> Operation[list[Any]]:
        """One operation: return `messages`, never handed to the function, to the queue uncounted, and
        delete `done`."""
        now, queue = self._queues.clock(), self.route.queue
        return all_of([op_delete_many(queue, done), *(op_return_uncounted(queue, m.receipt, now) for m in messages)])

    async def _give_back(self, messages: list[Message], done: list[str]) -> None:
        if messages or done:
            await self._queues.store.write(self._give_back_op(messages, done))

    async def _give_back_ahead(self, ahead: collections.deque[list[Message]],
                               prefetch: asyncio.Future[list[list[Message]]] | None, done: list[str]) -> None:
        """Return what a slot received ahead, and what its receive under way brings, to the queue
        uncounted; delete `done`."""
        if prefetch is not None:
            ahead.extend(await prefetch)
        await self._give_back([m for b in ahead for m in b], done)
        ahead.clear()

    def _give_back_later(self, prefetch: asyncio.Future[list[list[Message]]]) -> None:
        if prefetch.cancelled() or prefetch.exception() is not None:
            return
        self._give_back_now([m for b in prefetch.result() for m in b])

    def _give_back_now(self, messages: list[Message]) -> None:
        """`_give_back` without waiting for the commit (from a cancelled batch task)."""
        if messages:
            with contextlib.suppress(StoreClosed):  # stopped meanwhile: the next start releases them
                self._queues.store.write(self._give_back_op(messages, []))

    def _event(self, batch: list[Message]) -> tuple[list[Message], bytes | SqsFields, list[str]]:
        """The messages to invoke with, their SQS event, and the receipts of the ones filters rejected."""
        if self._filter.is_empty:
            return batch, self._events.fields(batch), []
        kept: list[Message] = []
        records: list[dict[str, Any]] = []
        dropped: list[str] = []
        for message in batch:
            record = sqs_record(self.route.queue, message)
            # filters see the record as sent, with a JSON body parsed
            if self._filter.matches({**record, "body": _parse_json(message.body)}):
                kept.append(message)
                records.append(record)
            else:
                dropped.append(message.receipt)
        if dropped:
            self._metrics.mapping_filtered.labels(self.name).inc(len(dropped))
        return kept, batch_event(records) if kept else b"", dropped

    def _succeeded(self, batch: list[Message], result: InvocationResult) -> list[str]:
        """The receipts of what succeeded, to delete; what failed becomes visible again after the
        visibility timeout."""
        if result.error_type is not None:
            self._outcomes["failure"].inc()
            return []
        failed: set[str] | None = set()
        if self.route.report_batch_item_failures:
            failed = batch_item_failures(result.payload, {m.id for m in batch})
        if failed is None:
            log.warning("Mapping %s: invalid batchItemFailures response; the whole batch failed.", self.name)
            self._outcomes["failure"].inc()
            return []
        self._outcomes["partial" if failed else "success"].inc()
        if not failed:
            return [m.receipt for m in batch]
        return [m.receipt for m in batch if m.id not in failed]

    async def _settle_and_receive(self, done: list[str], wants: int) -> list[list[Message]]:
        """Delete `done` and receive up to `wants` batches in one commit, for the caller's slot (none:
        the queue had nothing visible). A batch past the byte cap is cut, and its later pieces run as
        batches of their own, each once it has a slot."""
        messages, dead_lettered = await self._settler.settle(done, wants)
        self._count_dead_lettered(dead_lettered)
        size = self.route.batch_size
        batches = []
        for start in range(0, len(messages), size):
            first, *extra = self._split(messages[start : start + size])
            batches.append(first)
            for piece in extra:
                self._dispatch(piece)
        return batches

    def _split(self, messages: list[Message]) -> list[list[Message]]:
        """`messages` cut into batches by the byte cap (the count cap is the receive's size)."""
        if sum([len(m.body) for m in messages]) + _RECORD_OVERHEAD * len(messages) <= self._policy.max_bytes:
            return [messages]  # the usual case, without a Batcher step per message
        batcher: Batcher[Message] = Batcher(self._policy)
        batches = []
        for message in messages:
            size = len(message.body) + _RECORD_OVERHEAD
            if not batcher.fits(size) or batcher.full:
                batches.append(batcher.flush())
            batcher.add(message, size, 0.0)
        batches.append(batcher.flush())
        return batches


class StreamMapping(_Worker):
    """One consumer per shard and lane. Lanes split a shard by partition key when
    parallelization_factor > 1, so order holds per key; each lane keeps its own checkpoint."""

    def __init__(self, route: StreamRouteSpec, config: Config, invoker: Invoker, streams: StreamStore,
                 metrics: Metrics, webhooks: WebhookDelivery, wake_function: Callable[[str], None],
                 queues_notify: Callable[[str], None]) -> None:
        super().__init__()
        self.route = route
        self.name = mapping_name(route)
        self.shards = config.streams[route.stream].shards
        self._retention = config.streams[route.stream].retention
        self._invoker = invoker
        self._streams = streams
        self._metrics = metrics
        self._webhooks = webhooks
        self._wake_function = wake_function
        self._queues_notify = queues_notify
        self._filter: Filter = compile_filters(route.filters)
        self._policy = BatchPolicy(route.batch_size, route.max_batch_bytes, route.batching_window)
        self._wakes: list[asyncio.Event] = []

    def wake_all(self) -> None:
        for event in self._wakes:
            event.set()

    async def start(self) -> None:
        checkpoints = await self._streams.checkpoints(self.name)
        lanes = self.route.parallelization_factor
        for shard in range(self.shards):
            # a lane added by a larger parallelization_factor starts where the shard's slowest lane is,
            # not at starting_position: records of keys that moved lanes must not be skipped
            existing = [seq for (s, _), seq in checkpoints.items() if s == shard]
            start: int | None = min(existing) if existing else None
            for lane in range(lanes):
                position = checkpoints.get((shard, lane))
                if position is None:
                    if start is None:
                        start = await self._streams.start_position(
                            self.route.stream, shard, self.route.starting_position,
                            self.route.starting_position_timestamp)
                    position = start
                    # remember where a new mapping starts, so a restart before its first batch keeps it
                    await self._streams.checkpoint(self.name, shard, lane, position)
                wake = asyncio.Event()
                self._wakes.append(wake)
                self._loops.append(asyncio.create_task(self._consume(shard, lane, position, wake),
                                                       name=f"mapping-{self.name}-{shard}-{lane}"))

    def _lane_of(self, record: StreamRecord) -> int:
        lanes = self.route.parallelization_factor
        return 0 if lanes == 1 else zlib.crc32(record.partition_key.encode()) % lanes

    async def _consume(self, shard: int, lane: int, checkpoint: int, wake: asyncio.Event) -> None:
        read_position = checkpoint
        batcher: Batcher[StreamRecord] = Batcher(self._policy)
        pending: list[StreamRecord] = []
        while True:
            if not pending:
                wake.clear()
                limit = max(batcher.room, 1) * self.route.parallelization_factor
                records = await self._streams.read(self.route.stream, shard, read_position, limit)
                if records:
                    read_position = records[-1].seq
                pending = [r for r in records if self._lane_of(r) == lane]
            while pending and not batcher.full:
                record = pending[0]
                size = len(record.data) + _RECORD_OVERHEAD
                if not batcher.fits(size):
                    break
                batcher.add(record, size, time.monotonic())
                pending.pop(0)
            if batcher.ready(time.monotonic()) or (batcher.items and pending):
                # one batch at a time per lane: the next starts only after this one is settled
                task = asyncio.create_task(self._handle(shard, lane, batcher.flush()))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
                await asyncio.shield(task)
                continue
            if pending:
                continue
            deadline = batcher.deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _handle(self, shard: int, lane: int, batch: list[StreamRecord]) -> None:
        """Run one batch to its end: success, partial success, or discarded after retries or age."""
        parts = [batch]
        while parts:
            part = [r for r in parts.pop(0) if self._matches(r)]
            if part:
                await self._run_part(shard, lane, part, parts)
        await self._streams.checkpoint(self.name, shard, lane, batch[-1].seq)

    def _matches(self, record: StreamRecord) -> bool:
        if self._filter.is_empty:
            return True  # no filters: no need to parse every record's data
        view = {"data": _parse_json(record.data), "partitionKey": record.partition_key}
        if self._filter.matches(view):
            return True
        self._metrics.mapping_filtered.labels(self.name).inc()
        return False

    async def _run_part(self, shard: int, lane: int, part: list[StreamRecord],
                        parts: list[list[StreamRecord]]) -> None:
        route = self.route
        attempts = invokes = throttles = 0
        result: InvocationResult | None = None
        while True:
            age = time.time() - part[0].arrival
            too_old = route.max_record_age is not None and age > route.max_record_age
            if too_old or age > self._retention:  # past retention the records are gone from the stream
                await self._discard(shard, lane, part, "RecordAgeExceeded", None, invokes)
                return
            self._metrics.mapping_batch_size.labels(self.name).observe(len(part))
            self._metrics.iterator_age.labels(self.name, shard_id(shard)).set(max(0.0, time.time() - part[-1].arrival))
            event = batch_event([kinesis_record(route.stream, r) for r in part])
            try:
                result = await self._invoker.invoke_sync(route.function, event)
            except Throttled:
                # not a failed attempt: wait and try again, for as long as the records may live
                throttles += 1
                self._metrics.mapping_batches.labels(self.name, "throttled").inc()
                await asyncio.sleep(THROTTLE_BACKOFF.delay(throttles))
                continue
            invokes += 1
            if result.error_type is None:
                failed: set[str] | None = set()
                if route.report_batch_item_failures:
                    failed = batch_item_failures(result.payload, {sequence_number(r.seq) for r in part})
                if failed == set():
                    self._metrics.mapping_batches.labels(self.name, "success").inc()
                    await self._streams.checkpoint(self.name, shard, lane, part[-1].seq)
                    return
                if failed is not None:
                    # checkpoint before the lowest failed record and retry from it (Lambda's rule)
                    lowest = min(int(identifier) for identifier in failed)
                    done = [r for r in part if r.seq < lowest]
                    if done:
                        await self._streams.checkpoint(self.name, shard, lane, done[-1].seq)
                    part = [r for r in part if r.seq >= lowest]
                    self._metrics.mapping_batches.labels(self.name, "partial").inc()
                else:
                    self._metrics.mapping_batches.labels(self.name, "failure").inc()
            else:
                self._metrics.mapping_batches.labels(self.name, "failure").inc()
                if route.bisect_batch_on_function_error and len(part) > 1:
                    # splitting does not use up the retry quota; the halves run in order
                    middle = len(part) // 2
                    parts[:0] = [part[:middle], part[middle:]]
                    return
            attempts += 1
            if 0 <= route.max_retry_attempts < attempts:
                await self._discard(shard, lane, part, "RetryAttemptsExhausted", result, invokes)
                return
            if self.stopping:
                return  # not checkpointed: the batch is retried after the restart
            await asyncio.sleep(STREAM_RETRY_BACKOFF.delay(attempts))

    async def _discard(self, shard: int, lane: int, part: list[StreamRecord], condition: str,
                       result: InvocationResult | None, invokes: int) -> None:
        """Give up on `part`: send the on-failure pointer record and move past it, in one transaction."""
        route = self.route
        ops: list[Operation[Any]] = [op_checkpoint(self.name, shard, lane, part[-1].seq)]
        destination = route.on_failure
        now = time.time()
        if destination is not None:
            record = self._failure_record(shard, part, condition, result, invokes, now)
            ops += destination_ops(destination, route.function, condition, record, now,
                                   outbox=mapping_outbox(self.name))
        await self._streams.store.write(all_of(ops))
        if destination is not None and destination.queue is not None:
            self._queues_notify(destination.queue)
        self._metrics.mapping_discarded.labels(self.name, condition,
                                               destination.kind if destination else "none").inc(len(part))
        log.warning("Mapping %s: discarded %d records of %s (%s).", self.name, len(part), shard_id(shard), condition)
        if destination is not None:
            if destination.function:
                self._wake_function(destination.function)
            elif destination.webhook is not None:
                self._webhooks.wake_outbox(mapping_outbox(self.name))

    def _failure_record(self, shard: int, part: list[StreamRecord], condition: str,
                        result: InvocationResult | None, invokes: int, now: float) -> bytes:
        """Lambda's stream on-failure record: a pointer to the batch, not its records (§5.4)."""

        def iso(seconds: float) -> str:
            stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            return f"{stamp}{int(seconds % 1 * 1000):03d}Z"

        record: dict[str, Any] = {
            "requestContext": {
                "requestId": result.request_id if result else str(uuid.uuid4()),
                "functionArn": function_arn(self.route.function),
                "condition": condition,
                "approximateInvokeCount": max(invokes, 1),
            },
        }
        if result is not None and condition != "RecordAgeExceeded":
            response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
            # an invalid batchItemFailures answer is a failure without a function error
            response["functionError"] = "Unhandled" if result.error_type else None
            record["responseContext"] = response
        record.update({
            "version": "1.0",
            "timestamp": iso(now),
            "KinesisBatchInfo": {
                "shardId": shard_id(shard),
                "startSequenceNumber": sequence_number(part[0].seq),
                "endSequenceNumber": sequence_number(part[-1].seq),
                "approximateArrivalOfFirstRecord": iso(part[0].arrival),
                "approximateArrivalOfLastRecord": iso(part[-1].arrival),
                "batchSize": len(part),
                "streamArn": stream_arn(self.route.stream),
            },
        })
        return orjson.dumps(record)

