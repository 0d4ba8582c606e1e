"""Scorers that break their contract, for tests of the server's defences."""

from __future__ import annotations

from pydantic import BaseModel

from sdk import Sample, ScoreResult, scorer


@scorer("bad_components")
def bad_components(sample: Sample, params: BaseModel) -> ScoreResult:
    """Returns a component that is not a number."""
    return ScoreResult(reward=1.0, components={"oops": "not a number"})  # type: ignore[dict-item]
