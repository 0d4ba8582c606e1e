"""Dispatch: from (scorer name, sample, params) to a result, within limits.

The one place that decides where a scorer runs (event loop or worker process),
applies per-scorer concurrency limits and time limits, honours the request's
deadline, and records per-sample metrics. It never raises for a sample: every
outcome is a ``ScoreResult`` with a status. It is also the ``ScoringContext`` that
composite scorers use to reach other scorers.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdk import Sample, SampleError, ScorerEntry, ScoreResult, Status
from sdk._execute import run_async, run_sync

from .metrics import Metrics
from .workers import WorkerPool

__all__ = ["Dispatcher", "ServedScorer"]

log = logging.getLogger("arbiter.dispatch")

MAX_NESTING = 8

# Absolute deadline (loop time) of the request being served, so that scorers that
# call other scorers (composites) inherit it.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("arbiter_deadline", default=None)
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("arbiter_depth", default=0)


@dataclass
class ServedScorer:
    """A named scorer with the limits the server applies to it."""

    entry: ScorerEntry
    timeout_s: float
    max_concurrency: int
    description: str

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_concurrency)

    @property
    def name(self) -> str:
        return self.entry.name


class Dispatcher:
    def __init__(
        self, scorers: Mapping[str, ServedScorer], pool: WorkerPool | None, metrics: Metrics
    ) -> None:
        self.scorers = dict(scorers)
        self.pool = pool
        self.metrics = metrics

    async def score_request(
        self, scorer: str, sample: Sample, params: Mapping[str, Any] | None, *, deadline: float | None
    ) -> ScoreResult:
        """Score one sample of a request whose absolute deadline (loop time) is ``deadline``."""
        token = _deadline.set(deadline)
        try:
            return await self.score(scorer, sample, params)
        finally:
            _deadline.reset(token)

    async def score(
        self, scorer: str, sample: Sample, params: Mapping[str, Any] | None = None
    ) -> ScoreResult:
        """``ScoringContext.score``: used by requests and by composite scorers."""
        served = self.scorers.get(scorer)
        if served is None:
            result = ScoreResult.failure(
                Status.UNKNOWN_SCORER,
                f"unknown scorer {scorer!r}; loaded: {', '.join(sorted(self.scorers)) or 'none'}",
                scorer=scorer,
            )
            return self._record(result, scorer, label="(unknown)")  # bounded metric cardinality
        depth = _depth.get()
        if depth >= MAX_NESTING:
            result = ScoreResult.failure(
                Status.INVALID_INPUT,
                f"scorers nest more than {MAX_NESTING} deep (a composite that includes itself?)",
                scorer=scorer,
            )
            return self._record(result, scorer)
        token = _depth.set(depth + 1)
        try:
            result = await self._score_served(served, sample, params)
        except Exception as exc:  # a bug here must cost one sample, not the call
            log.exception("dispatch failed for scorer %s", scorer)
            result = ScoreResult.failure(Status.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            _depth.reset(token)
        return self._record(result, scorer)

    async def _score_served(
        self, served: ServedScorer, sample: Sample, params: Mapping[str, Any] | None
    ) -> ScoreResult:
        try:
            bound = served.entry.params(params)
        except SampleError as exc:
            return ScoreResult.failure(exc.status, exc.reason)
        loop = asyncio.get_running_loop()
        deadline = _deadline.get()
        queued_at = loop.time()
        remaining = None if deadline is None else deadline - queued_at
        if remaining is not None and remaining <= 0:
            return ScoreResult.failure(Status.DEADLINE_EXCEEDED, "the request's deadline had passed")
        # Calls made by a scorer (composite components) take no slot: their outer call
        # holds one, and a composite nested in itself would otherwise wait on itself.
        nested = _depth.get() > 1
        try:
            if nested:
                pass
            elif served.slots.locked():
                await asyncio.wait_for(served.slots.acquire(), remaining)
            else:
                await served.slots.acquire()  # free slot: no timer task needed
        except TimeoutError:
            return ScoreResult.failure(
                Status.DEADLINE_EXCEEDED,
                f"deadline passed while waiting for a free slot (max_concurrency={served.max_concurrency})",
            )
        try:
            started = loop.time()
            queued_ms = (started - queued_at) * 1000.0
            self.metrics.queue_seconds.labels(served.name).observe(started - queued_at)
            result = await self._run(served, sample, bound, deadline)
            # one copy: this name (callers see the name they asked for) and queue time
            return dataclasses.replace(result, scorer=served.name, queued_ms=result.queued_ms + queued_ms)
        finally:
            if not nested:
                served.slots.release()

    async def _run(
        self, served: ServedScorer, sample: Sample, params: Any, deadline: float | None
    ) -> ScoreResult:
        scorer = served.entry.scorer
        if scorer.cpu_bound:
            if self.pool is None:
                return ScoreResult.failure(Status.INTERNAL, "no worker pool for a CPU-bound scorer")
            result = await self.pool.run(scorer, sample, params, served.timeout_s, deadline)
            self.metrics.worker_restarts.set(self.pool.restarts)
            return result
        if not scorer.is_async:
            # A plain function on the loop cannot be interrupted; a timer would only
            # cost a task per sample. CPU-heavy scorers belong in workers (cpu_bound).
            return run_sync(scorer, sample, params)
        loop = asyncio.get_running_loop()
        budget = served.timeout_s
        deadline_binds = deadline is not None and deadline - loop.time() < budget
        if deadline is not None:
            budget = min(budget, max(0.0, deadline - loop.time()))
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(run_async(scorer, sample, params, self), budget)
        except TimeoutError:
            if deadline_binds:
                return ScoreResult.failure(
                    Status.DEADLINE_EXCEEDED, "the request's deadline passed while scoring"
                )
            return ScoreResult.failure(
                Status.TIMEOUT,
                f"scoring took longer than {budget:g}s",
                scoring_ms=(time.perf_counter() - started) * 1000.0,
            )

    def _record(self, result: ScoreResult, scorer: str, label: str | None = None) -> ScoreResult:
        if result.scorer != scorer:  # failures decided before scoring carry no name yet
            result = dataclasses.replace(result, scorer=scorer)
        component = _depth.get() > 0  # called by a scorer (a composite's component), not by a request
        self.metrics.count_sample(
            label or scorer, result.status.name, result.scoring_ms / 1000.0, component=component
        )
        return result
