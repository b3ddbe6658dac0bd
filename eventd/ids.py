"""Ids in UUID form that are cheap to make and sort by creation within a daemon run: a random
prefix per run and a counter. Unique like uuid4's, without a system call per id, and they land next
to each other in the store's indexes instead of on random pages."""

from __future__ import annotations

import itertools
import uuid


class SequentialIds:
    def __init__(self) -> None:
        self._prefix = str(uuid.uuid4())[:24]
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"

    def take(self, count: int) -> list[str]:
        """`count` ids at once (a batch of messages): one counter step each, without a call per id."""
        prefix, counter = self._prefix, self._counter
        return [f"{prefix}{next(counter):012x}" for _ in range(count)]


#: Message ids for everything the store enqueues without an id of its own.
message_ids = SequentialIds()
