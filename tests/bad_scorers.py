"""Scorers that break their contract, for tests of the server's defences."""

from __future__ import annotations

from pydantic import BaseModel

from sdk import Sample, ScoreResult, scorer


@scorer("bad_components")
def bad_components(sample: Sample, params: BaseModel) -> ScoreResult:
    """Returns a component that is not a number."""
    return ScoreResult(reward=1.0, components={"oops": "not a number"})  # type: ignore[dict-item]


@scorer("contains_reference")
def contains_reference(sample: Sample, params: BaseModel) -> float:
    """A naive correctness check (the reference appears anywhere): answer spam beats it."""
    return float(bool(sample.reference) and str(sample.reference) in sample.completion_text)
