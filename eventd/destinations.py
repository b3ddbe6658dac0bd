"""Where invocation records go: another function, a queue, or a webhook.

Every destination is written as a queue send inside the transaction that finishes the event, so a
record is never lost between "the event is done" and "the record is out". Webhooks are sent to an
outbox queue first; `WebhookDelivery` POSTs from there and retries with backoff until the receiver
answers 2xx: a receiver that is down delays records, it never drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from eventd.asyncevents import async_queue, new_event
from eventd.config.model import Config, DestinationSpec
from eventd.metrics import Metrics
from eventd.retry import Backoff
from eventd.store.engine import Operation
from eventd.store.queues import Message, NewMessage, QueueStore, op_send

log = logging.getLogger(__name__)

WEBHOOK_PREFIX = "webhook:"
#: Waits between delivery attempts to a webhook that failed: 1 s growing to 5 min, retried for ever.
WEBHOOK_BACKOFF = Backoff(initial=1.0, maximum=300.0, multiplier=2.0, jitter=0.1)
#: Records POSTed at once per outbox.
_WEBHOOK_BATCH = 16


def webhook_queue(function: str, key: str) -> str:
    """The outbox of `function`'s `key` destination (on_success or on_failure)."""
    return f"{WEBHOOK_PREFIX}{function}:{key}"


def destination_ops(destination: DestinationSpec, function: str, condition: str, record: bytes,
                    now: float, outbox: str | None = None) -> list[Operation[Any]]:
    """The store writes that hand `record` to `destination`, to run in the event's own transaction.

    `outbox` names the webhook outbox when the record is not a function's own (a mapping's on_failure).
    """
    origin = {"kind": "record", "fn": function, "condition": condition}
    if destination.function is not None:
        return [op_send(async_queue(destination.function), [new_event(record, destination.function)], now)]
    if destination.queue is not None:
        return [op_send(destination.queue, [NewMessage(record, meta=origin)], now)]
    key = "on_success" if condition == "Success" else "on_failure"
    return [op_send(outbox or webhook_queue(function, key), [NewMessage(record, meta=origin)], now)]


def mapping_outbox(mapping: str) -> str:
    """The webhook outbox of a stream mapping's on_failure destination."""
    return f"{WEBHOOK_PREFIX}{mapping}:on_failure"


class WebhookDelivery:
    """POSTs records from every webhook outbox; one loop per configured webhook destination."""

    def __init__(self, config: Config, queues: QueueStore, metrics: Metrics) -> None:
        self._queues = queues
        self._metrics = metrics
        self._targets: dict[str, tuple[str, Any]] = {}
        for name, spec in config.functions.items():
            for key in ("on_success", "on_failure"):
                destination: DestinationSpec | None = getattr(spec.async_, key)
                if destination is not None and destination.webhook is not None:
                    self._targets[webhook_queue(name, key)] = (name, destination.webhook)
        from eventd.config import mapping_name

        for route in config.routes:
            on_failure = getattr(route, "on_failure", None)
            if on_failure is not None and on_failure.webhook is not None:
                self._targets[mapping_outbox(mapping_name(route))] = (route.function, on_failure.webhook)
        self._wake = {queue: asyncio.Event() for queue in self._targets}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def wake(self, function: str) -> None:
        for key in ("on_success", "on_failure"):
            self.wake_outbox(webhook_queue(function, key))

    def wake_outbox(self, outbox: str) -> None:
        event = self._wake.get(outbox)
        if event is not None:
            event.set()

    async def start(self) -> None:
        if not self._targets:
            return
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._deliver(queue), name=queue) for queue in self._targets]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    async def _deliver(self, queue: str) -> None:
        function, webhook = self._targets[queue]
        lease = webhook.timeout + 30.0
        while True:
            self._wake[queue].clear()
            try:
                messages = await self._queues.receive(queue, _WEBHOOK_BATCH, lease)
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not end delivery
                log.error("Cannot read webhook outbox %s: %s.", queue, exc)
                messages = []
            if messages:
                await asyncio.gather(*(self._post(queue, function, webhook, m) for m in messages))
                continue
            await self._queues.wait_for_visible(queue, self._wake[queue])

    async def _post(self, queue: str, function: str, webhook: Any, message: Message) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json", **webhook.headers}
        try:
            async with self._session.post(webhook.url, data=message.body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=webhook.timeout)) as response:
                ok, detail = 200 <= response.status < 300, f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, detail = False, str(exc) or type(exc).__name__
        if ok:
            await self._queues.delete(queue, message.receipt)
            self._metrics.destination_deliveries.labels(function, "webhook").inc()
            return
        delay = WEBHOOK_BACKOFF.delay(message.receive_count)
        self._metrics.destination_failures.labels(function, "webhook").inc()
        log.warning("Webhook %s for %s failed (%s); retrying in %.0f s.", webhook.url, function, detail, delay)
        await self._queues.change_visibility(queue, message.receipt, delay)
