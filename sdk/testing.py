"""Testing scorers without a server, and fakes for testing around them.

``LocalRunner`` scores through the same code path the server uses (parameter
binding, output normalisation, error mapping), so a passing unit test means the
scorer behaves the same when served::

    from sdk.testing import LocalRunner, assert_reward

    def test_exact():
        assert_reward(exact, 1.0, completion="42", reference="42")

The fakes (``FakeScorer``, ``FakeCpuScorer``) are ordinary scorers with knobs for
delays, errors and crashes; serve them with ``--plugin sdk.testing``.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from ._errors import SampleError
from ._execute import run_async
from ._registry import ScorerEntry
from ._scorer import Scorer, validate_scorer
from ._types import Sample, ScoreResult, Status

__all__ = ["FakeCpuScorer", "FakeScorer", "LocalRunner", "assert_reward"]


class LocalRunner:
    """Scores samples in-process with a set of scorers, by name.

    Scorers are added under their own name, or under another name with default
    params (as a server config would). CPU-bound scorers run inline here: there is
    no worker process and so no hard timeout.
    """

    def __init__(self, *scorers: Scorer | type[Scorer]) -> None:
        self._entries: dict[str, ScorerEntry] = {}
        for candidate in scorers:
            instance = validate_scorer(candidate)
            self.add(instance.name, instance)

    def add(
        self, name: str, scorer: Scorer | type[Scorer], defaults: Mapping[str, Any] | None = None
    ) -> None:
        """Make ``scorer`` reachable as ``name`` with configured ``defaults``."""
        self._entries[name] = ScorerEntry(
            name=name, scorer=validate_scorer(scorer), defaults=dict(defaults or {})
        )

    async def score_sample(
        self, scorer: str, sample: Sample, params: Mapping[str, Any] | None = None
    ) -> ScoreResult:
        """Score a built ``Sample`` (this is the ``ScoringContext`` of composites)."""
        entry = self._entries.get(scorer)
        if entry is None:
            return ScoreResult.failure(
                Status.UNKNOWN_SCORER,
                f"unknown scorer {scorer!r}; loaded: {', '.join(sorted(self._entries)) or 'none'}",
                scorer=scorer,
            )
        try:
            bound = entry.params(params)
        except SampleError as exc:
            return ScoreResult.failure(exc.status, exc.reason, scorer=scorer)
        result = await run_async(entry.scorer, sample, bound, _RunnerContext(self))
        return result if result.scorer == scorer else _renamed(result, scorer)

    async def ascore(
        self,
        scorer: str,
        completion: Any = "",
        *,
        params: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> ScoreResult:
        """Score one sample given as keyword fields (``prompt``, ``reference``, ...)."""
        return await self.score_sample(scorer, Sample.build(completion, **fields), params)

    def score(
        self,
        scorer: str,
        completion: Any = "",
        *,
        params: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> ScoreResult:
        """Blocking ``ascore``; call it outside a running event loop."""
        return asyncio.run(self.ascore(scorer, completion, params=params, **fields))


class _RunnerContext:
    def __init__(self, runner: LocalRunner) -> None:
        self._runner = runner

    async def score(
        self, scorer: str, sample: Sample, params: Mapping[str, Any] | None = None
    ) -> ScoreResult:
        return await self._runner.score_sample(scorer, sample, params)


def _renamed(result: ScoreResult, scorer: str) -> ScoreResult:
    import dataclasses

    return dataclasses.replace(result, scorer=scorer)


def assert_reward(
    scorer: Scorer | type[Scorer],
    expected: float,
    completion: Any = "",
    *,
    params: Mapping[str, Any] | None = None,
    status: Status = Status.OK,
    tolerance: float = 1e-9,
    **fields: Any,
) -> ScoreResult:
    """Score one sample with ``scorer`` alone and assert its status and reward.

    The failure message shows the status and reason, which is what you need when a
    scorer unexpectedly refuses a sample.
    """
    instance = validate_scorer(scorer)
    result = LocalRunner(instance).score(instance.name, completion, params=params, **fields)
    assert result.status is status, (
        f"expected status {status.name}, got {result.status.name}: {result.reason or '(no reason)'}"
    )
    assert math.isclose(result.reward, expected, abs_tol=tolerance), (
        f"expected reward {expected}, got {result.reward} ({result.reason or 'no reason'})"
    )
    return result


class FakeParams(BaseModel):
    """Knobs of the fake scorers. ``reward`` may also come from the sample's
    reference (``reward_from_reference``), so one batch can hold different rewards."""

    model_config = ConfigDict(extra="forbid")

    reward: float = 1.0
    reward_from_reference: bool = False
    delay_s: float = 0.0
    error: str | None = None
    fail_status: str | None = None
    crash: bool = False
    segfault: bool = False


def _fake_score(name: str, sample: Sample, params: FakeParams) -> ScoreResult:
    if params.crash:
        os._exit(13)  # simulates a scorer that kills its worker process
    if params.segfault:
        import ctypes

        ctypes.string_at(0)  # a native crash (SIGSEGV), as a broken C extension would cause
    if params.error:
        raise RuntimeError(params.error)
    if params.fail_status:
        raise SampleError(f"fake failure {params.fail_status}", Status[params.fail_status])
    reward = params.reward
    if params.reward_from_reference:
        try:
            reward = float(sample.reference or "")
        except ValueError:
            raise SampleError(f"reference {sample.reference!r} is not a number") from None
    return ScoreResult(reward=reward, details={"completion_chars": len(sample.completion_text)})


class FakeScorer(Scorer):
    """Fake scorer on the event loop: a fixed reward after an optional delay, or an error."""

    name = "fake"
    Params = FakeParams

    async def score(self, sample: Sample, params: FakeParams) -> ScoreResult:
        if params.delay_s:
            await asyncio.sleep(params.delay_s)
        if params.crash or params.segfault:
            raise SampleError("crashes are only meaningful for fake_cpu", Status.INVALID_INPUT)
        return _fake_score(self.name, sample, params)


class FakeCpuScorer(Scorer):
    """Fake CPU-bound scorer (runs in a worker process): can block, raise or crash it."""

    name = "fake_cpu"
    Params = FakeParams
    cpu_bound = True

    def score(self, sample: Sample, params: FakeParams) -> ScoreResult:
        if params.delay_s:
            time.sleep(params.delay_s)  # blocks the worker, as a hung scorer would
        return _fake_score(self.name, sample, params)
