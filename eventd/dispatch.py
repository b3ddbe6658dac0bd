"""Concurrency accounting: reserved caps per function and the shared unreserved pool, as Lambda.

A function with `concurrency: N` gets exactly N (a floor and a ceiling); all others share
`max_concurrency - sum(reserved)`. Taking a slot never waits: over a cap is a throttle, at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from eventd.config.model import Config

#: Lambda's TooManyRequestsException reasons (lambda-semantics.md §1.4).
RESERVED_LIMIT = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_LIMIT = "ConcurrentInvocationLimitExceeded"


@dataclass(frozen=True)
class Throttled(Exception):  # noqa: N818 - Lambda's own name for the condition
    function: str
    reason: str
    limit: int

    def __str__(self) -> str:
        if self.reason == RESERVED_LIMIT:
            return f"Rate Exceeded. Function {self.function} is at its reserved concurrency ({self.limit})."
        return f"Rate Exceeded. The unreserved concurrency ({self.limit}) is in use."


class Dispatcher:
    def __init__(self, config: Config) -> None:
        self._reserved = {name: spec.concurrency for name, spec in config.functions.items()
                          if spec.concurrency is not None}
        self._unreserved_limit = config.unreserved_concurrency()
        self._unreserved_in_use = 0
        self._in_use: dict[str, int] = dict.fromkeys(config.functions, 0)
        self._capacity_waiters: list[asyncio.Future[None]] = []
        self.max_concurrency = config.max_concurrency

    def acquire(self, function: str) -> None:
        """Take a slot for `function` or raise Throttled. Pair every success with release()."""
        in_use = self._in_use[function]
        reserved = self._reserved.get(function)
        if reserved is not None:
            if in_use >= reserved:
                raise Throttled(function, RESERVED_LIMIT, reserved)
        elif self._unreserved_in_use >= self._unreserved_limit:
            raise Throttled(function, ACCOUNT_LIMIT, self._unreserved_limit)
        else:
            self._unreserved_in_use += 1
        self._in_use[function] = in_use + 1

    def acquire_up_to(self, function: str, count: int) -> int:
        """Take as many slots as are free, at most `count`, without throttling. Pollers reserve slots
        this way before they fetch work, so two pollers can never both count the same free slot."""
        taken = 0
        while taken < count and self.free(function) > 0:
            self.acquire(function)
            taken += 1
        return taken

    def release(self, function: str) -> None:
        self._in_use[function] -= 1
        if function not in self._reserved:
            self._unreserved_in_use -= 1
        if self._capacity_waiters:
            waiters, self._capacity_waiters = self._capacity_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def free(self, function: str) -> int:
        """Slots `function` could take right now without being throttled."""
        reserved = self._reserved.get(function)
        if reserved is not None:
            return max(0, reserved - self._in_use[function])
        return max(0, self._unreserved_limit - self._unreserved_in_use)

    async def wait_for_release(self) -> None:
        """Return after the next release of any slot (pollers use it to wait for capacity)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._capacity_waiters.append(waiter)
        await waiter

    def in_use(self, function: str) -> int:
        return self._in_use[function]

    def limit(self, function: str) -> int:
        """The most `function` could run at once right now: its reservation, or the unreserved pool."""
        return self._reserved.get(function, self._unreserved_limit)

    @property
    def total_in_use(self) -> int:
        return sum(self._in_use.values())
