"""Keeps the queue gauges fresh: reads queue stats off the loop every few seconds, so a Prometheus
scrape reads a cache and never waits on the disk."""

from __future__ import annotations

from eventd.asyncevents import ASYNC_PREFIX
from eventd.config.model import Config
from eventd.destinations import WEBHOOK_PREFIX
from eventd.metrics import Metrics, QueueGauge
from eventd.periodic import Periodic
from eventd.store.queues import QueueStats, QueueStore

REFRESH_S = 2.0
#: Most of the time the refresh may keep the store's reader thread busy. Its query reads every queued
#: message (0.8 s per million): at a backlog of a million, a refresh every 2 s would take 40% of a
#: core; it runs every 16 s instead, and the gauges are that much older.
REFRESH_MAX_SHARE = 0.05


class QueueGauges:
    def __init__(self, config: Config, queues: QueueStore, metrics: Metrics) -> None:
        self._config = config
        self._queues = queues
        self._cache: dict[str, QueueGauge] = {}
        self._refresher = Periodic("Queue gauge refresh", REFRESH_S, self.refresh, REFRESH_MAX_SHARE)
        metrics.watch_queues(lambda: self._cache)

    async def start(self) -> None:
        await self.refresh()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    async def refresh(self) -> None:
        stats = await self._queues.stats()
        now = self._queues.clock()
        empty = QueueStats(0, 0, 0, None)
        cache: dict[str, QueueGauge] = {}
        names = {f"{ASYNC_PREFIX}{f}" for f in self._config.functions} | set(self._config.queues) | set(stats)
        for name in sorted(names):
            s = stats.get(name, empty)
            if name.startswith(ASYNC_PREFIX):
                kind, label = "async", name.removeprefix(ASYNC_PREFIX)
            elif name.startswith(WEBHOOK_PREFIX):
                kind, label = "webhook", name
            else:
                kind, label = "queue", name
            age = max(0.0, now - s.oldest_sent_at) if s.oldest_sent_at is not None else 0.0
            cache[name] = QueueGauge(kind, label, s.visible, s.in_flight, s.delayed, age)
        self._cache = cache

    def get(self, name: str) -> QueueGauge | None:
        return self._cache.get(name)
