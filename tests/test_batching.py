"""The dynamic batcher on its own: batch formation, length bucketing, failures
confined to their batch, and cancelled callers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from reward_server.batching import DynamicBatcher


class Recorder:
    def __init__(self, fail_on: int | None = None, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.delay_s = delay_s

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        time.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("model failed")
        return [item * 10 for item in items]


async def test_full_batches_go_at_once_and_results_match_their_items() -> None:
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_batch_size=4, max_wait_ms=10_000)
    started = time.perf_counter()
    results = await asyncio.gather(*(batcher.submit(i, length=i) for i in range(8)))
    assert results == [i * 10 for i in range(8)]
    assert time.perf_counter() - started < 5  # never waited for the 10 s timer
    assert sorted(len(b) for b in recorder.batches) == [4, 4]
    batcher.close()


async def test_a_partial_batch_leaves_after_max_wait() -> None:
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_batch_size=64, max_wait_ms=20)
    results = await asyncio.gather(*(batcher.submit(i, length=1) for i in range(3)))
    assert results == [0, 10, 20] and recorder.batches == [[0, 1, 2]]
    batcher.close()


async def test_items_waiting_for_a_busy_model_are_bucketed_by_length() -> None:
    recorder = Recorder(delay_s=0.3)
    batcher = DynamicBatcher(recorder, max_batch_size=3, max_wait_ms=5)
    first = asyncio.ensure_future(batcher.submit(50, length=50))
    await asyncio.sleep(0.1)  # the model is now busy with [50]
    rest = [asyncio.ensure_future(batcher.submit(n, length=n)) for n in (1, 49, 2, 48, 3)]
    await asyncio.gather(first, *rest)
    assert recorder.batches == [[50], [1, 2, 3], [48, 49]]
    batcher.close()


async def test_a_failing_batch_fails_only_its_items() -> None:
    recorder = Recorder(fail_on=1)
    batcher = DynamicBatcher(recorder, max_batch_size=2, max_wait_ms=10_000)
    outcomes = await asyncio.gather(*(batcher.submit(i, length=i) for i in range(4)), return_exceptions=True)
    assert isinstance(outcomes[0], RuntimeError) and isinstance(outcomes[1], RuntimeError)
    assert outcomes[2:] == [20, 30]
    batcher.close()


async def test_cancelled_callers_are_dropped() -> None:
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_batch_size=8, max_wait_ms=30)
    gone = asyncio.ensure_future(batcher.submit(99, length=1))
    kept = asyncio.ensure_future(batcher.submit(1, length=1))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == 10
    assert recorder.batches == [[1]]
    batcher.close()


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DynamicBatcher(Recorder(), max_batch_size=0)
