"""File watches: files created, changed, moved or deleted in a folder become S3-style notifications,
invoked asynchronously (so they inherit retries, destinations and DLQs).

watchdog does the watching: inotify where it works, a polling observer for NFS and some container
mounts. A file fires once it is complete: when its writer closes it (inotify's close-after-write), or
once it has been left unchanged for `settle` (polling, renames into the folder, writers that never
close). A durable index of what was seen makes a restart fire, once each, for what changed while
eventd was down, and keeps a file from firing twice for the same content.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from eventd.asyncevents import async_queue, new_event
from eventd.config.model import FilesRouteSpec
from eventd.events import s3_record
from eventd.metrics import Metrics
from eventd.store.engine import Operation
from eventd.store.queues import QueueStore, op_send

log = logging.getLogger(__name__)

#: Files above this size get an eTag made from size and mtime instead of reading them whole for an MD5.
MAX_ETAG_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Seen:
    size: int
    mtime_ns: int


def _op_index(source: str, key: str, seen: Seen | None) -> Operation[None]:
    def run(conn: sqlite3.Connection) -> None:
        if seen is None:
            conn.execute("DELETE FROM file_index WHERE source = ? AND key = ?", (source, key))
        else:
            conn.execute(
                "INSERT INTO file_index (source, key, size, mtime_ns) VALUES (?,?,?,?) "
                "ON CONFLICT (source, key) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns",
                (source, key, seen.size, seen.mtime_ns),
            )

    return run


def _read_index(source: str) -> Callable[[sqlite3.Connection], dict[str, Seen]]:
    def run(conn: sqlite3.Connection) -> dict[str, Seen]:
        rows = conn.execute("SELECT key, size, mtime_ns FROM file_index WHERE source = ?", (source,)).fetchall()
        return {key: Seen(size, mtime) for key, size, mtime in rows}

    return run


class _Bridge(FileSystemEventHandler):
    """watchdog calls this from its own thread; hand each event to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: Callable[[FileSystemEvent], None]) -> None:
        self._loop = loop
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                self._loop.call_soon_threadsafe(self._sink, event)


class FileWatch:
    def __init__(self, route: FilesRouteSpec, name: str, queues: QueueStore, metrics: Metrics,
                 wake_function: Callable[[str], None]) -> None:
        self.route = route
        self.spec = route.files
        self.name = name
        self.bucket = route.name or self.spec.path.name or "files"
        self.root = self.spec.path
        self._queues = queues
        self._metrics = metrics
        self._wake_function = wake_function
        self._index: dict[str, Seen] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._observer: BaseObserver | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: what is watching: inotify or poll (auto falls back to polling where inotify is unavailable)
        self.mode = self.spec.mode

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._index = await self._queues.store.read(_read_index(self.name))
        # watch first, then scan: a change between the two is seen twice and fires once (the index)
        self._observer = await asyncio.to_thread(self._start_observer)
        await self._catch_up()

    async def stop(self) -> None:
        if self._observer is not None:
            observer = self._observer
            await asyncio.to_thread(lambda: (observer.stop(), observer.join(5)))
        for timer in self._timers.values():
            timer.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _start_observer(self) -> BaseObserver:
        assert self._loop is not None
        bridge = _Bridge(self._loop, self._on_event)
        if self.spec.mode != "poll":
            try:
                observer: BaseObserver = Observer()
                observer.schedule(bridge, str(self.root), recursive=self.spec.recursive)
                observer.start()
                self.mode = "inotify"
                return observer
            except OSError as exc:
                if self.spec.mode == "inotify":
                    raise
                log.warning("Watch %s: inotify is not available (%s); polling every %gs instead.",
                            self.name, exc, self.spec.poll_interval)
        observer = PollingObserver(timeout=self.spec.poll_interval)
        observer.schedule(bridge, str(self.root), recursive=self.spec.recursive)
        observer.start()
        self.mode = "poll"
        return observer

    # --- events -----------------------------------------------------------------------------------

    def _key(self, path: str) -> str | None:
        """The object key of `path` (relative, with /), or None when the route's filters exclude it."""
        try:
            key = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        if not self.spec.recursive and "/" in key:
            return None
        if not key.startswith(self.spec.prefix) or not key.endswith(self.spec.suffix):
            return None
        if self.spec.glob is not None and not fnmatch.fnmatch(key, self.spec.glob):
            return None
        return key

    def _on_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            old, new = self._key(str(event.src_path)), self._key(str(event.dest_path))
            if old is not None:
                self._spawn(self._removed(old))
            if new is not None:
                self._cancel(new)
                self._spawn(self._settled(new, moved=True))  # a rename is complete at once
            return
        key = self._key(str(event.src_path))
        if key is None:
            return
        if isinstance(event, FileClosedEvent):
            self._cancel(key)
            self._spawn(self._settled(key))
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
            # not complete until closed, or left alone for `settle`
            self._cancel(key)
            assert self._loop is not None
            self._timers[key] = self._loop.call_later(self.spec.settle, lambda: self._spawn(self._settled(key)))
        elif isinstance(event, FileDeletedEvent):
            self._cancel(key)
            self._spawn(self._removed(key))

    def _cancel(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settled(self, key: str, moved: bool = False) -> None:
        self._timers.pop(key, None)
        async with self._lock:  # one change at a time: the index decides what is new
            path = self.root / key
            try:
                stat = await asyncio.to_thread(os.stat, path)
            except FileNotFoundError:
                return
            seen = Seen(stat.st_size, stat.st_mtime_ns)
            before = self._index.get(key)
            if before == seen:
                return  # this content has fired already
            kind = "moved" if moved else "created" if before is None else "modified"
            if kind == "moved" and "moved" not in self.spec.events:
                kind = "created" if before is None else "modified"
            name = "ObjectCreated:Copy" if kind == "moved" else "ObjectCreated:Put"
            etag = await asyncio.to_thread(_etag, path, seen)
            await self._commit(key, seen, kind, name, etag)

    async def _removed(self, key: str) -> None:
        self._cancel(key)
        async with self._lock:
            if key not in self._index:
                return
            await self._commit(key, None, "deleted", "ObjectRemoved:Delete", None)

    async def _commit(self, key: str, seen: Seen | None, kind: str, event_name: str, etag: str | None) -> None:
        """Fire (if the route wants this kind) and record the file's state, in one transaction."""
        ops: list[Operation[Any]] = [_op_index(self.name, key, seen)]
        fire = kind in self.spec.events
        if fire:
            now = time.time()
            record = s3_record(self.bucket, self.name, key, event_name, now, f"{time.time_ns():020X}",
                               size=seen.size if seen else None, etag=etag)
            payload = orjson.dumps({"Records": [record]})
            ops.append(op_send(async_queue(self.route.function), [new_event(payload, self.route.function)], now))
        await self._queues.transact(*ops)
        if seen is None:
            self._index.pop(key, None)
        else:
            self._index[key] = seen
        if fire:
            self._metrics.file_events.labels(self.name, kind).inc()
            self._metrics.async_received.labels(self.route.function).inc()
            self._wake_function(self.route.function)

    async def _catch_up(self) -> None:
        """Fire for what changed while eventd was not watching: new and changed files, and (if
        subscribed) files that are gone."""
        found = await asyncio.to_thread(self._scan)
        for key, seen in sorted(found.items()):
            if self._index.get(key) != seen:
                await self._settled(key)
        for key in sorted(set(self._index) - set(found)):
            await self._removed(key)

    def _scan(self) -> dict[str, Seen]:
        found: dict[str, Seen] = {}
        walker = os.walk(self.root) if self.spec.recursive else [(str(self.root), [], os.listdir(self.root))]
        for folder, _, names in walker:
            for file_name in names:
                path = os.path.join(folder, file_name)
                key = self._key(path)
                if key is None:
                    continue
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                if os.path.isfile(path):
                    found[key] = Seen(stat.st_size, stat.st_mtime_ns)
        return found


def _etag(path: Path, seen: Seen) -> str:
    """The MD5 of the content, as S3's eTag for a simple upload; big files get a cheaper stand-in."""
    if seen.size > MAX_ETAG_BYTES:
        return f"{seen.size:x}-{seen.mtime_ns:x}"
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return f"{seen.size:x}-{seen.mtime_ns:x}"
    return digest.hexdigest()
