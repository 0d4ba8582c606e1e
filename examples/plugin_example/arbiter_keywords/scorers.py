"""Two small scorers, one per style the SDK offers.

``keywords`` (a decorated function): the share of required keywords the completion
mentions. ``starts_with_answer`` (a class): 1.0 when the completion opens with the
reference answer, for tasks that want the answer before the explanation.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from sdk import Sample, SampleError, Scorer, ScoreResult, scorer


class KeywordParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(default_factory=list, description="words the completion must mention")
    case_sensitive: bool = False
    whole_words: bool = True


@scorer("keywords", params=KeywordParams)
def keywords(sample: Sample, params: KeywordParams) -> ScoreResult:
    """Share of the required keywords that the completion mentions."""
    if not params.keywords:
        raise SampleError("keywords needs a non-empty params.keywords list")
    flags = 0 if params.case_sensitive else re.IGNORECASE
    text = sample.completion_text
    found = [
        word
        for word in params.keywords
        if re.search(rf"\b{re.escape(word)}\b" if params.whole_words else re.escape(word), text, flags)
    ]
    missing = [w for w in params.keywords if w not in found]
    return ScoreResult(reward=len(found) / len(params.keywords), details={"missing": missing})


class StartsWithAnswer(Scorer):
    """1.0 when the completion opens with the reference answer (answer first, then reasons)."""

    name = "starts_with_answer"

    def score(self, sample: Sample, params: BaseModel) -> float:
        if not sample.reference:
            raise SampleError("starts_with_answer needs the answer in the sample's reference")
        return float(sample.completion_text.lstrip().lower().startswith(sample.reference.strip().lower()))
