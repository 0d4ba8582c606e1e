"""The ``length`` scorer: a penalty for output beyond a length limit.

    reward = -min(max_penalty, penalty_per_unit * max(0, length - limit))

It is 0 within the limit and negative past it, so a composite adds it with a
positive weight: weight 0.0001 with ``limit = 2000`` is "- 0.0001 x max(0, len - 2000)".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sdk import Sample, Scorer, ScoreResult

__all__ = ["LengthParams", "LengthScorer"]


class LengthParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(2000, ge=0, description="length allowed without penalty")
    unit: Literal["chars", "words"] = "chars"
    penalty_per_unit: float = Field(1.0, ge=0, description="penalty per unit beyond the limit")
    max_penalty: float | None = Field(None, ge=0, description="cap on the penalty (positive number)")


class LengthScorer(Scorer):
    """Penalty (negative reward) for completions longer than a limit, in chars or words."""

    name = "length"
    Params = LengthParams

    def score(self, sample: Sample, params: LengthParams) -> ScoreResult:
        text = sample.completion_text
        length = len(text) if params.unit == "chars" else len(text.split())
        excess = max(0, length - params.limit)
        penalty = params.penalty_per_unit * excess
        if params.max_penalty is not None:
            penalty = min(penalty, params.max_penalty)
        return ScoreResult(reward=-penalty, details={"length": length, "excess": excess, "unit": params.unit})
