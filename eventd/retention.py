"""Deletes what has outlived its retention: queue messages (SQS `retention`) and stream records
(Kinesis `retention`). Runs every minute, off the hot path."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from eventd.config.model import Config
from eventd.store.queues import QueueStore, op_expire
from eventd.store.streams import StreamStore

log = logging.getLogger(__name__)

INTERVAL_S = 60.0


class Retention:
    def __init__(self, config: Config, queues: QueueStore, streams: StreamStore) -> None:
        self._config = config
        self._queues = queues
        self._streams = streams
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep(self) -> None:
        now = self._queues.clock()
        for name, queue in self._config.queues.items():
            expired = await self._queues.store.write(op_expire(name, now - queue.retention))
            if expired:
                log.info("Queue %s: deleted %d messages older than its retention.", name, expired)
        for name, stream in self._config.streams.items():
            await self._streams.trim(name, now - stream.retention)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - retention is housekeeping: log and try next time
                log.warning("Retention sweep failed: %s.", exc)
            await asyncio.sleep(INTERVAL_S)
