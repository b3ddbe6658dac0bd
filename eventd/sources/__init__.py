"""Push sources: HTTP routes, file watches and schedules. Each turns what happened into a Lambda event
and hands it to the one door: `Invoker.invoke_sync` (HTTP, sync) or the async queue (the rest)."""

from __future__ import annotations

import logging
from typing import Any

from eventd.asyncq import AsyncInvocations
from eventd.config import mapping_name
from eventd.config.model import Config, FilesRouteSpec, HttpRouteSpec, ScheduleRouteSpec, parse_listen
from eventd.invoke import Invoker
from eventd.metrics import Metrics
from eventd.sources.files import FileWatch
from eventd.sources.http import HttpSource
from eventd.sources.schedule import ScheduleSource
from eventd.store.queues import QueueStore

log = logging.getLogger(__name__)


class PushSources:
    """Every push source of the config, started after the async runners and stopped before them."""

    def __init__(self, config: Config, invoker: Invoker, asyncq: AsyncInvocations, queues: QueueStore,
                 metrics: Metrics) -> None:
        http_routes: list[tuple[str, HttpRouteSpec]] = []
        self.watches: list[FileWatch] = []
        self.schedules: list[ScheduleSource] = []
        for index, route in enumerate(config.routes):
            if not route.enabled:
                continue
            name = mapping_name(route, index)
            if isinstance(route, HttpRouteSpec):
                http_routes.append((name, route))
            elif isinstance(route, FilesRouteSpec):
                self.watches.append(FileWatch(route, name, queues, metrics, asyncq.wake))
            elif isinstance(route, ScheduleRouteSpec):
                self.schedules.append(ScheduleSource(route, name, queues, metrics, asyncq.wake))
        self.http_listen = config.http.listen
        self.http = (HttpSource(http_routes, parse_listen(config.http.listen), invoker, asyncq, metrics,
                                config.drain_timeout) if http_routes else None)

    async def start(self) -> None:
        if self.http is not None:
            await self.http.start()
            log.info("HTTP routes listening on http://%s (%d routes).", self.http_listen, len(self.http.routes))
        for watch in self.watches:
            await watch.start()
        for schedule in self.schedules:
            await schedule.start()

    async def stop(self) -> None:
        # the public listener first: stop taking requests before the slower watches wind down
        if self.http is not None:
            await self.http.stop()
        for schedule in self.schedules:
            await schedule.stop()
        for watch in self.watches:
            await watch.stop()

    def status(self) -> dict[str, Any]:
        return {
            "watches": [{"name": w.name, "path": str(w.root), "mode": w.mode, "function": w.route.function}
                        for w in self.watches],
            "schedules": [{"name": s.name, "expression": s.route.schedule, "timezone": s.route.timezone,
                           "next_fire": s.next_fire(), "function": s.route.function} for s in self.schedules],
        }
