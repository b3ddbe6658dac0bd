"""Deletes what has outlived its retention: queue messages (SQS `retention`) and stream records
(Kinesis `retention`). Runs every minute, off the hot path."""

from __future__ import annotations

import logging

from eventd.config.model import Config
from eventd.periodic import Periodic
from eventd.store.queues import QueueStore
from eventd.store.streams import StreamStore

log = logging.getLogger(__name__)

INTERVAL_S = 60.0


class Retention:
    def __init__(self, config: Config, queues: QueueStore, streams: StreamStore) -> None:
        self._config = config
        self._queues = queues
        self._streams = streams
        self._sweeper = Periodic("Retention sweep", INTERVAL_S, self.sweep)

    async def start(self) -> None:
        await self.sweep()
        self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()

    async def sweep(self) -> None:
        now = self._queues.clock()
        for name, queue in self._config.queues.items():
            expired = await self._queues.expire(name, now - queue.retention)
            if expired:
                log.info("Queue %s: deleted %d messages older than its retention.", name, expired)
        for name, stream in self._config.streams.items():
            await self._streams.trim(name, now - stream.retention)
