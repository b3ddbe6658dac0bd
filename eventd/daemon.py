"""Start order, signals, readiness and the graceful drain of a running eventd.

Start: state dir -> logging -> store -> API listener (health answers from here on) -> fork server and
warm pools -> async runners -> mappings -> push sources (HTTP routes, file watches, schedules) ->
READY=1 (and /readyz 200).
Stop (SIGTERM/SIGINT): STOPPING=1 -> stop listening and stop taking async events -> in-flight
invocations finish (up to `drain_timeout`) -> handler processes stopped -> store closed. A second
signal skips the wait. Async events not finished stay in the store and run after the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sqlite3
import time

from eventd.api import MAX_SYNC_PAYLOAD, ApiState, build_api, error_page
from eventd.asyncq import AsyncInvocations
from eventd.config.model import Config, parse_listen
from eventd.gauges import QueueGauges
from eventd.httpserver import HttpServer
from eventd.invoke import Invoker
from eventd.logs import DaemonLogging
from eventd.mappings import Mappings
from eventd.metrics import Metrics
from eventd.retention import Retention
from eventd.sources import PushSources
from eventd.sources.http import RouteSecretError
from eventd.store.engine import Store
from eventd.store.queues import QueueStore
from eventd.store.streams import StreamStore
from eventd.systemd import notify, watchdog, watchdog_interval

log = logging.getLogger(__name__)

#: the SQLite file under state_dir that holds queues, async events and DLQs
STORE_FILE = "eventd.db"
EXIT_OK = 0
#: a route's secret is missing at start: the same exit code as an invalid config
EXIT_CONFIG = 78
#: the listener could not be bound, or another start-up step failed (uvicorn's STARTUP_FAILURE)
EXIT_STARTUP = 3


class Daemon:
    def __init__(self, config: Config, config_name: str) -> None:
        self.config = config
        self.config_name = config_name
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    def request_stop(self) -> None:
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    async def run(self) -> int:
        config = self.config
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.error("Cannot create state_dir %s: %s.", config.state_dir, exc.strerror)
            return EXIT_STARTUP
        with DaemonLogging(config.log_level, config.state_dir / "logs") as logs:
            return await self._run(logs)

    async def _run(self, logs: DaemonLogging) -> int:
        config = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._handle_hup)
        metrics = Metrics()
        store = Store(config.state_dir / STORE_FILE, config.durability)
        store.on_commit = metrics.observe_commit
        try:
            await store.open()
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            log.error("Cannot open the store %s: %s.", store.path, exc)
            return EXIT_STARTUP
        queues = QueueStore(store)
        streams = StreamStore(store, queues.clock)
        invoker = Invoker(config, metrics, logs)
        asyncq = AsyncInvocations(config, invoker, queues, metrics)
        mappings = Mappings(config, invoker, queues, streams, metrics, asyncq.webhooks, asyncq.wake)
        gauges = QueueGauges(config, queues, metrics)
        retention = Retention(config, queues, streams)
        try:
            sources = PushSources(config, invoker, asyncq, queues, metrics)
        except RouteSecretError as exc:
            log.error("Cannot start: %s.", exc)
            await store.close()
            return EXIT_CONFIG
        state = ApiState(invoker, metrics, asyncq, sources=sources, queues=queues, streams=streams,
                         mappings=mappings)
        api = build_api(state)
        listener = HttpServer(api.handle, max_body=MAX_SYNC_PAYLOAD, error_page=error_page, app=state, name="API")
        host, port = parse_listen(config.listen)
        try:
            await listener.start(host, port)
        except OSError as exc:
            log.error("Cannot listen on %s: %s.", config.listen, exc.strerror or exc)
            await store.close()
            return EXIT_STARTUP
        state.ready["listening"] = True
        log.info("Listening on http://%s (config %s, %d functions, store %s).", config.listen, self.config_name,
                 len(config.functions), store.path)
        started = time.perf_counter()
        await invoker.start()
        await asyncq.start()
        await mappings.start()
        try:
            await sources.start()
        except OSError as exc:
            log.error("Cannot start the push sources: %s.", exc.strerror or exc)
            await mappings.stop(0)
            await asyncq.stop(0)
            await invoker.stop()
            await listener.stop(0)
            await store.close()
            return EXIT_STARTUP
        await gauges.start()
        await retention.start()
        warm = sum(spec.warm for spec in config.functions.values())
        up = sum(pool.counts()["idle"] for pool in invoker.pools.values())
        log.info("Ready: %d of %d warm processes started in %.0f ms.", up, warm, (time.perf_counter() - started) * 1000)
        state.ready["running"] = True
        _tune_gc()
        notify("READY=1", f"STATUS=Serving {len(config.functions)} functions on {config.listen}")
        pinger = None
        interval = watchdog_interval()
        if interval:
            pinger = asyncio.create_task(watchdog(interval))
        await self._stop.wait()

        notify("STOPPING=1", "STATUS=Draining")
        state.ready["draining"] = True
        in_flight = invoker.dispatcher.total_in_use
        log.info("Stopping: waiting up to %.0f s for %d in-flight invocations.", config.drain_timeout, in_flight)
        # stop taking work from both doors at once, and give both the same drain deadline
        drain = asyncio.gather(listener.stop(config.drain_timeout), sources.stop(), asyncq.stop(config.drain_timeout),
                               mappings.stop(config.drain_timeout))
        forced = asyncio.create_task(self._force.wait())
        await asyncio.wait({drain, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            log.warning("Second stop signal: not waiting for %d invocations.", invoker.dispatcher.total_in_use)
            drain.cancel()
        forced.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        if pinger:
            pinger.cancel()
        await gauges.stop()
        await retention.stop()
        await invoker.stop()
        await store.close()
        log.info("Stopped.")
        return EXIT_OK

    def _handle_hup(self) -> None:
        log.warning("SIGHUP: configuration reload is not supported yet; restart eventd to apply changes.")


def _tune_gc() -> None:
    """The objects made at start-up (modules, config, pools, routes) live as long as the daemon: freeze
    them out of the cyclic collector's scans. The hot paths allocate many short-lived containers (event
    dicts, futures, frames) that die by reference counting, yet every 700 of them set off a young
    collection: at 15,000 queue messages/s those collections took about 6% of the event loop's
    thread. Collect young objects every 20,000 allocations instead; garbage cycles wait a little longer."""
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def run(config: Config, config_name: str) -> int:
    """Run the daemon on uvloop until it is stopped; returns the process exit code."""
    import uvloop

    return uvloop.run(_main(config, config_name))


async def _main(config: Config, config_name: str) -> int:
    return await Daemon(config, config_name).run()
