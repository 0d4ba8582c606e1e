"""The ``composite`` scorer: a weighted combination of named scorers, configured
rather than coded.

    reward = clip( sum_i weight_i * reward_i )

A component can be *gated* by others: it counts only if each gate passes (its
reward reaches the gate's ``pass_threshold``), which expresses "correctness counts
only if the format is right"; gated components are not even scored when a gate
fails. When a ``required`` component fails, the whole reward is
``required_fail_reward`` (default 0, not clipped). The reference example, as TOML::

    [scorers.code_reward]
    type = "composite"
    [[scorers.code_reward.params.components]]
    scorer = "code"
    weight = 1.0                                  # fraction of tests passed
    [[scorers.code_reward.params.components]]
    scorer = "format"
    weight = 0.2
    params = { tags = ["think", "answer"] }
    [[scorers.code_reward.params.components]]
    scorer = "length"
    weight = 0.0001                               # length gives -max(0, len - limit)
    params = { limit = 2000 }

A component that fails for infrastructure reasons fails the composite with that
status (never a silent 0). A component whose output was bad (TIMEOUT,
SANDBOX_VIOLATION) counts as reward 0; an INVALID_INPUT component fails the
composite unless ``invalid_component_as_zero`` is set.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sdk import Sample, SampleError, Scorer, ScoreResult, ScoringContext, Status

__all__ = ["CompositeParams", "CompositeScorer", "Component"]

_BAD_OUTPUT = frozenset({Status.TIMEOUT, Status.SANDBOX_VIOLATION})


class Component(BaseModel):
    """One part of a composite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scorer: str = Field(description="name of a loaded scorer")
    name: str | None = Field(None, description="label in the result's components; defaults to scorer")
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict, description="parameters for this component")
    pass_threshold: float = Field(1.0, description="reward at or above which this component 'passes'")
    gated_by: list[str] = Field(default_factory=list, description="components that must pass first")

    @property
    def label(self) -> str:
        return self.name or self.scorer


class CompositeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    components: list[Component] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list, description="components that must pass")
    required_fail_reward: float = 0.0
    clip: tuple[float, float] | None = Field(None, description="[low, high] bounds of the total")
    invalid_component_as_zero: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> CompositeParams:
        labels = [c.label for c in self.components]
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        if duplicates:
            raise ValueError(f"component labels must be unique; give 'name' to: {', '.join(duplicates)}")
        known = set(labels)
        for component in self.components:
            missing = set(component.gated_by) - known
            if missing:
                raise ValueError(f"component {component.label!r} is gated by unknown {sorted(missing)}")
        missing = set(self.required) - known
        if missing:
            raise ValueError(f"required names unknown components {sorted(missing)}")
        if self.clip is not None and self.clip[0] > self.clip[1]:
            raise ValueError("clip must be [low, high] with low <= high")
        _rounds(self.components)  # raises on gate cycles
        return self


def _rounds(components: list[Component]) -> list[list[Component]]:
    """Components in rounds: each round depends only on earlier ones."""
    done: set[str] = set()
    rounds: list[list[Component]] = []
    pending = list(components)
    while pending:
        ready = [c for c in pending if set(c.gated_by) <= done]
        if not ready:
            raise ValueError(f"gates form a cycle among {sorted(c.label for c in pending)}")
        rounds.append(ready)
        done.update(c.label for c in ready)
        pending = [c for c in pending if c.label not in done]
    return rounds


class CompositeScorer(Scorer):
    """Weighted sum of other scorers, with gates, required components and clipping."""

    name = "composite"
    Params = CompositeParams

    async def score(self, sample: Sample, params: CompositeParams, ctx: ScoringContext) -> ScoreResult:
        if not params.components:
            raise SampleError("composite needs at least one component (params.components)")
        results: dict[str, ScoreResult] = {}
        passed: dict[str, bool] = {}
        skipped: list[str] = []
        for round_ in _rounds(params.components):
            runnable = []
            for component in round_:
                if all(passed[g] for g in component.gated_by):
                    runnable.append(component)
                else:
                    skipped.append(component.label)
                    passed[component.label] = False
            outcomes = await asyncio.gather(*(ctx.score(c.scorer, sample, c.params) for c in runnable))
            for component, outcome in zip(runnable, outcomes, strict=True):
                failure = self._failure(component, outcome, params)
                if failure is not None:
                    return failure
                results[component.label] = outcome
                passed[component.label] = outcome.ok and outcome.reward >= component.pass_threshold

        components = {label: (r.reward if r.ok else 0.0) for label, r in results.items()}
        total = sum(c.weight * components.get(c.label, 0.0) for c in params.components)
        if params.clip is not None:
            total = min(max(total, params.clip[0]), params.clip[1])
        failed_required = [label for label in params.required if not passed.get(label, False)]
        if failed_required:
            total = params.required_fail_reward  # an explicit override: not clipped
        details: dict[str, Any] = {
            "components": {
                label: {"status": r.status.name, "reason": r.reason, "details": dict(r.details)}
                for label, r in results.items()
            },
            "weights": {c.label: c.weight for c in params.components},
        }
        if skipped:
            details["gated_out"] = skipped
            components.update({label: 0.0 for label in skipped})
        if failed_required:
            details["failed_required"] = failed_required
        return ScoreResult(reward=total, components=components, details=details)

    @staticmethod
    def _failure(component: Component, outcome: ScoreResult, params: CompositeParams) -> ScoreResult | None:
        if outcome.ok or outcome.status in _BAD_OUTPUT:
            return None
        if outcome.status is Status.INVALID_INPUT and params.invalid_component_as_zero:
            return None
        return ScoreResult.failure(
            outcome.status,
            f"component {component.label!r} ({component.scorer}): {outcome.reason}",
            details={"failed_component": component.label},
        )
