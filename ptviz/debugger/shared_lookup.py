"""One database lookup shared by every viewer of a server (consumers.py).

200 viewers of one session each checking its lease (or their link) on a timer made one
query per viewer per interval on Django's one thread for synchronous work; a cache alone
did not stop them, since the viewers whose timers fell due while the cached answer was
stale all queried at once. Here an answer younger than `ttl` is shared, and a lookup in
flight is awaited by everyone who asks for the same key meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

MAX_KEYS = 10_000  # sessions and links come and go: past this, the stale ones are dropped


class SharedLookup:
    def __init__(self, ttl: float, keep: Callable[[Any], bool] = lambda value: True):
        self.ttl = ttl
        self.keep = keep  # whether an answer may be shared (else every asker looks again)
        self.values: dict[Any, tuple[float, Any]] = {}
        self.flight: dict[Any, asyncio.Task] = {}

    async def get(self, key, fetch: Callable[[], Awaitable[Any]]):
        now = time.monotonic()
        hit = self.values.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        loop = asyncio.get_running_loop()
        task = self.flight.get(key)
        if task is None or task.done() or task.get_loop() is not loop:
            task = self.flight[key] = loop.create_task(fetch())
            task.add_done_callback(lambda done, key=key: self._landed(key, done))
        # (shielded: one asker cancelled, say its viewer left, does not cancel the others')
        return await asyncio.shield(task)

    def _landed(self, key, task: asyncio.Task) -> None:
        if self.flight.get(key) is task:
            del self.flight[key]
        if task.cancelled() or task.exception() is not None or not self.keep(task.result()):
            return
        now = time.monotonic()
        if len(self.values) > MAX_KEYS:
            for old in [k for k, (when, _v) in self.values.items() if now - when >= self.ttl]:
                del self.values[old]
        self.values[key] = (now, task.result())
