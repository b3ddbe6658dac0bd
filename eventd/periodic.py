"""A job run every few seconds in the background: housekeeping such as gauge refreshes and retention
sweeps. A failing round is logged and the next one runs as usual.

A job whose cost grows with the data (a scan of every queued message, say) is given `max_share`: the
pause after a round stretches so that the job is busy at most that share of the time. At a large
backlog its results are then older, rather than its rounds taking a core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval: float, job: Callable[[], Awaitable[None]],
                 max_share: float | None = None) -> None:
        self.name = name
        self.interval = interval
        self.max_share = max_share
        self._job = job
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def pause_after(self, took: float) -> float:
        """Seconds to wait after a round that took `took` seconds."""
        if self.max_share is None:
            return self.interval
        return max(self.interval, took * (1 / self.max_share - 1))

    async def _loop(self) -> None:
        pause = self.interval
        while True:
            await asyncio.sleep(pause)
            started = time.monotonic()
            try:
                await self._job()
            except Exception as exc:  # noqa: BLE001 - housekeeping: log, and try again next round
                log.warning("%s failed: %s.", self.name, exc)
            pause = self.pause_after(time.monotonic() - started)
