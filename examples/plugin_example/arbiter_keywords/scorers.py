"""Two small scorers, one per style the SDK offers.

``keywords`` (a decorated function): the share of required keywords the completion
mentions. ``starts_with_answer`` (a class): 1.0 when the completion opens with the
reference answer, for tasks that want the answer before the explanation.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from sdk import NoParams, Sample, SampleError, Scorer, ScoreResult, scorer


class KeywordParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(default_factory=list, description="words the completion must mention")
    case_sensitive: bool = False
    whole_words: bool = True


def _pattern(word: str, whole_words: bool) -> str:
    # Look-arounds rather than \b, so keywords that start or end with a symbol ("C++", ".NET") still
    # match as whole words.
    return rf"(?<!\w){re.escape(word)}(?!\w)" if whole_words else re.escape(word)


@scorer("keywords", params=KeywordParams)
def keywords(sample: Sample, params: KeywordParams) -> ScoreResult:
    """Share of the required keywords that the completion mentions."""
    if not params.keywords:
        raise SampleError("keywords needs a non-empty params.keywords list")
    flags = 0 if params.case_sensitive else re.IGNORECASE
    text = sample.completion_text
    missing = [w for w in params.keywords if not re.search(_pattern(w, params.whole_words), text, flags)]
    found = len(params.keywords) - len(missing)
    return ScoreResult(reward=found / len(params.keywords), details={"missing": missing})


class StartsWithAnswer(Scorer):
    """1.0 when the completion opens with the reference answer (answer first, then reasons)."""

    name = "starts_with_answer"

    def score(self, sample: Sample, params: NoParams) -> float:
        answer = (sample.reference or "").strip().lower()
        if not answer:
            raise SampleError("starts_with_answer needs the answer in the sample's reference")
        text = sample.completion_text.lstrip().lower()
        # "42" opens "42, because..." but not "420": the answer must end at a word boundary.
        return float(text.startswith(answer) and not text[len(answer) : len(answer) + 1].isalnum())
