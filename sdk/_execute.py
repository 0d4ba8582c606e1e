"""Running one scorer on one sample: the single place where outputs and errors
become a ``ScoreResult``.

The local runner, the server's event loop and its worker processes all call these
functions, so a scorer behaves the same in a unit test and in production.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ._errors import SampleError
from ._scorer import Scorer, ScoringContext
from ._types import Sample, ScoreResult, Status

__all__ = ["CONFIG_ONLY", "bind_params", "normalise_output", "run_async", "run_sync"]

CONFIG_ONLY = "arbiter_config_only"
"""Mark a Params field ``Field(..., json_schema_extra={CONFIG_ONLY: True})`` so that
requests cannot change it (a model path, a resource limit): only the server's
config sets it."""

log = logging.getLogger("arbiter.scorer")


def bind_params(
    scorer: Scorer, defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> BaseModel:
    """Merge request parameters over configured defaults and validate them.

    Raises ``SampleError`` (INVALID_INPUT) with pydantic's explanation when they do
    not fit the scorer's ``Params`` model.
    """
    merged = {**defaults, **(overrides or {})}
    model = scorer.Params
    if model.model_config.get("extra") != "allow":
        known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        unknown = sorted(set(merged) - known)
        if unknown:
            # pydantic ignores unknown keys by default; a misspelt parameter silently
            # ignored would be a silently wrong reward.
            raise SampleError(
                f"unknown params for scorer {scorer.name!r}: {', '.join(unknown)};"
                f" known: {', '.join(sorted(known)) or 'none'}"
            )
    requested = overrides or {}
    pinned = sorted(
        key
        for key, value in requested.items()
        if key in model.model_fields
        and _config_only(model.model_fields[key].json_schema_extra)
        and value != defaults.get(key, model.model_fields[key].default)
    )
    if pinned:
        raise SampleError(
            f"params {', '.join(pinned)} of scorer {scorer.name!r} are set in the server's config only"
        )
    try:
        return scorer.Params.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(params)'}: {err['msg']}" for err in exc.errors()
        )
        raise SampleError(f"invalid params for scorer {scorer.name!r}: {problems}") from exc


def _config_only(extra: Any) -> bool:
    return isinstance(extra, dict) and bool(extra.get(CONFIG_ONLY))


def normalise_output(output: Any, *, scorer: str) -> ScoreResult:
    """Turn what ``score`` returned into a result; a non-finite reward is an error."""
    if isinstance(output, ScoreResult):
        result = output
    elif isinstance(output, (bool, int, float)):
        if not math.isfinite(float(output)):
            return ScoreResult.failure(
                Status.SCORER_ERROR, f"scorer returned a non-finite reward ({output!r})", scorer=scorer
            )
        return ScoreResult(reward=float(output), scorer=scorer)
    else:
        return ScoreResult.failure(
            Status.SCORER_ERROR,
            f"scorer returned {type(output).__name__}; expected a float, bool or ScoreResult",
            scorer=scorer,
        )
    return result


def failure_from_exception(exc: BaseException, *, scorer: str) -> ScoreResult:
    """Map an exception raised inside a scorer to its status."""
    if isinstance(exc, SampleError):
        return ScoreResult.failure(exc.status, exc.reason, scorer=scorer)
    if isinstance(exc, TimeoutError):
        return ScoreResult.failure(Status.TIMEOUT, f"scorer timed out: {exc}".rstrip(": "), scorer=scorer)
    log.warning("scorer %s raised", scorer, exc_info=exc)
    return ScoreResult.failure(
        Status.SCORER_ERROR, f"scorer raised {type(exc).__name__}: {exc}", scorer=scorer
    )


def run_sync(scorer: Scorer, sample: Sample, params: BaseModel) -> ScoreResult:
    """Run a synchronous scorer; never raises for anything the scorer does."""
    started = time.perf_counter()
    try:
        result = normalise_output(_method(scorer)(sample, params), scorer=scorer.name)
    except Exception as exc:  # a bad rollout is data, not a crash
        result = failure_from_exception(exc, scorer=scorer.name)
    return _replace(
        result, scorer=result.scorer or scorer.name, scoring_ms=(time.perf_counter() - started) * 1000.0
    )


async def run_async(
    scorer: Scorer, sample: Sample, params: BaseModel, ctx: ScoringContext | None
) -> ScoreResult:
    """Run a scorer on the event loop (sync scorers are called directly)."""
    if not scorer.is_async:
        return run_sync(scorer, sample, params)
    started = time.perf_counter()
    try:
        if scorer.wants_context:
            output = await _method(scorer)(sample, params, ctx=ctx)
        else:
            output = await _method(scorer)(sample, params)
        result = normalise_output(output, scorer=scorer.name)
    except Exception as exc:
        result = failure_from_exception(exc, scorer=scorer.name)
    return _replace(
        result, scorer=result.scorer or scorer.name, scoring_ms=(time.perf_counter() - started) * 1000.0
    )


def _method(scorer: Scorer) -> Any:
    """The scorer's ``score`` method (checked by ``validate_scorer`` at load time)."""
    return scorer.score  # type: ignore[attr-defined]


def _replace(result: ScoreResult, **changes: Any) -> ScoreResult:
    return dataclasses.replace(result, **changes)
