"""Dynamic batching for model inference.

Concurrent requests (and the samples of one batch call) are gathered into model
batches. When the model is idle, a batch starts as soon as ``max_batch_size`` items
wait, or when the oldest has waited ``max_wait_ms``. While the model is busy,
items pile up; when it is free again, everything waiting is sorted by length and
cut into batches, so similar lengths share a batch and padding stays small (the
busier the server, the better the bucketing). The model runs on its own thread,
off the event loop; one slow batch delays the items queued behind it, never the
loop itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["DynamicBatcher"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T, R]):
    item: T
    length: int
    future: asyncio.Future[R] = field(repr=False)


class DynamicBatcher(Generic[T, R]):
    """Gathers ``submit``-ted items into calls of ``run_batch(items) -> results``.

    ``run_batch`` runs on a single worker thread (one model, one stream of batches);
    it must return one result per item, in order. An exception fails every item of
    that batch and no other.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self._pending: list[_Pending[T, R]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._drainer: asyncio.Task[None] | None = None
        self.batches_run = 0

    async def submit(self, item: T, length: int) -> R:
        """Queue one item (``length`` orders it for bucketing) and wait for its result."""
        loop = asyncio.get_running_loop()
        pending: _Pending[T, R] = _Pending(item, length, loop.create_future())
        self._pending.append(pending)
        if self._drainer is None:  # model idle: start on a full batch or after max_wait
            if len(self._pending) >= self.max_batch_size:
                self._start()
            elif self._timer is None:
                self._timer = loop.call_later(self.max_wait_s, self._start)
        return await pending.future

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Run batches until nothing waits; items arriving meanwhile join the next round."""
        try:
            while True:
                waiting = [p for p in self._pending if not p.future.done()]  # drop cancelled callers
                self._pending = []
                if not waiting:
                    return
                waiting.sort(key=lambda p: p.length)
                for start in range(0, len(waiting), self.max_batch_size):
                    await self._run(waiting[start : start + self.max_batch_size])
        finally:
            self._drainer = None

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.batches_run += 1
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
