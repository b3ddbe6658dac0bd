"""Batch policy: when a batch of records is ready. Pure (sans-IO): no asyncio; the caller passes the time.

A batch is ready when it holds `max_records`, when one more record would take it past `max_bytes`,
or when `window` seconds have passed since its first record, whichever comes first (Lambda's rule:
count, bytes or window). The window timer starts with the first record, so a quiet source still
flushes on time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    max_records: int
    max_bytes: int
    window: float = 0.0


@dataclass
class Batcher(Generic[T]):
    policy: BatchPolicy
    items: list[T] = field(default_factory=list)
    size: int = 0
    started_at: float | None = None

    def fits(self, size: int) -> bool:
        """Whether a record of `size` bytes can join without passing the byte cap. An empty batch takes
        any record, so one oversized record still travels (alone) rather than blocking the source."""
        return not self.items or self.size + size <= self.policy.max_bytes

    def add(self, item: T, size: int, now: float) -> None:
        if self.started_at is None:
            self.started_at = now
        self.items.append(item)
        self.size += size

    @property
    def full(self) -> bool:
        return len(self.items) >= self.policy.max_records or self.size >= self.policy.max_bytes

    @property
    def room(self) -> int:
        """Records the batch can still take by count."""
        return max(0, self.policy.max_records - len(self.items))

    def deadline(self) -> float | None:
        """When the window closes: the time by which this batch must be flushed (None when empty)."""
        return None if self.started_at is None else self.started_at + self.policy.window

    def ready(self, now: float) -> bool:
        if not self.items:
            return False
        deadline = self.deadline()
        return self.full or (deadline is not None and now >= deadline)

    def flush(self) -> list[T]:
        items, self.items, self.size, self.started_at = self.items, [], 0, None
        return items
