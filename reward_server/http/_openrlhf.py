"""OpenRLHF's remote reward model protocol (``--remote_rm_url http://host:port/get_reward``).

OpenRLHF posts ``{"query": [...], "prompts": [...], "labels": [...]}``, where each
query is the decoded prompt + response, and reads ``rewards`` (the reward),
``scores`` (used for dynamic filtering; falls back to ``rewards``) and
``extra_logs`` (per-sample numbers, logged) from the JSON answer. The shape is the
one OpenRLHF's own ``serve_rm`` answers.

Each query is cut into prompt and completion (``split_query``): where it starts
with its prompt, the prompt is cut off; OpenRLHF may truncate a long prompt from
the left, so where the query starts with the end of its prompt (an overlap of at
least ``MIN_OVERLAP`` characters, the longest one) it is cut there. A query that
does neither is refused (HTTP 422): scoring it would put the prompt inside the
completion. Without ``prompts`` the whole query is the completion. Labels become
the sample's reference (or tests, or metadata; ``[http] openrlhf_labels``). Every
sample goes to the configured scorer (``openrlhf_scorer``), checked with its
params (``openrlhf_params``) at start-up.

Outcomes: a scored sample gives its reward; a bad output (TIMEOUT,
SANDBOX_VIOLATION) gives 0.0, as a wrong answer would. An unusable sample
(INVALID_INPUT: bad params, a missing or malformed label, a query that does not
hold its prompt) fails the request with HTTP 422 naming the samples and reasons:
it is a data or config problem, never a reward. An infrastructure failure of any
sample fails the request with HTTP 503 and the reasons. OpenRLHF's protocol has
no way to leave one sample out, and a fake 0 would be learned from; OpenRLHF
retries a failed request, then leaves the samples without a reward.

``extra_logs`` has the same keys in every answer of one server (OpenRLHF
concatenates them across requests): ``arbiter_bad_output``, and one
``arbiter_<label>`` per component of the configured scorer when it is a composite
(0.0 where a sample has none).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from sdk import Sample, SampleError, ScoreResult, Status
from sdk._convert import request_to_proto

from ..config import ConfigError
from ..scorers.composite import CompositeParams
from ..service import RewardService
from ._common import BadRequest, error_response, read_json, score_requests

__all__ = ["MIN_OVERLAP", "OpenRlhfHandler", "split_query"]

MIN_OVERLAP = 16  # characters of a left-truncated prompt that must still lead the query


class Unsplittable(ValueError):
    """The query does not hold its prompt where it can be found."""


def prompt_overlap(prompt: str, query: str) -> int:
    """The length of the longest suffix of ``prompt`` that is a prefix of ``query``,
    in O(len(prompt) + len(query)): Knuth-Morris-Pratt's prefix function of the
    query's head, run over the prompt."""
    pattern = query[: len(prompt)]
    if not pattern:
        return 0
    failure = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = failure[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        failure[i] = k
    matched = 0
    for char in prompt:
        if matched == len(pattern):
            matched = failure[matched - 1]
        while matched and char != pattern[matched]:
            matched = failure[matched - 1]
        if char == pattern[matched]:
            matched += 1
    return matched


def split_query(query: str, prompt: str | None) -> tuple[str, str]:
    """``(prompt, completion)``: the query without its prompt, or without the end
    of a prompt OpenRLHF truncated from the left (at least ``MIN_OVERLAP``
    characters of it). Unsplittable when the query holds neither; without a
    prompt the whole query is the completion."""
    if not prompt:
        return "", query
    if query.startswith(prompt):
        return prompt, query[len(prompt) :]
    overlap = prompt_overlap(prompt, query)
    if overlap >= MIN_OVERLAP:
        return prompt, query[overlap:]
    raise Unsplittable(
        "the query starts neither with its prompt nor with the end of it (at least"
        f" {MIN_OVERLAP} characters), so the response cannot be told apart from the prompt"
    )


def served_components(service: RewardService, scorer: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """Check ``[http] openrlhf_scorer`` and ``openrlhf_params`` against the served
    scorers (ConfigError saying what is wrong), and return the component labels
    of that scorer when it is a composite."""
    served = service.dispatcher.scorers.get(scorer)
    if served is None:
        known = ", ".join(sorted(service.dispatcher.scorers)) or "none"
        raise ConfigError(f"[http] openrlhf_scorer = {scorer!r} is not a served scorer; served: {known}")
    try:
        bound = served.entry.params(params)
    except SampleError as exc:
        raise ConfigError(f"[http] openrlhf_params do not fit scorer {scorer!r}: {exc.reason}") from exc
    if isinstance(bound, CompositeParams):
        return tuple(dict.fromkeys(component.label for component in bound.components))
    return ()


class OpenRlhfHandler:
    def __init__(
        self,
        service: RewardService,
        *,
        scorer: str,
        params: Mapping[str, Any],
        labels: str,
        max_batch_size: int,
    ) -> None:
        self.service = service
        self.scorer = scorer
        self.params = dict(params)
        self.labels = labels
        self.max_batch_size = max_batch_size
        self.components = served_components(service, scorer, self.params)

    async def get_reward(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, Mapping):
            raise BadRequest(
                'the body must be a JSON object {"query": [...], "prompts": [...], "labels": [...]}'
            )
        queries = _strings(body.get("query"), "query")
        if queries is None:
            raise BadRequest('"query" must be a list of strings (prompt + response)')
        prompts = _optional_list(body.get("prompts"), len(queries), "prompts")
        labels = _optional_list(body.get("labels"), len(queries), "labels")
        if len(queries) > self.max_batch_size:
            raise BadRequest(
                f"{len(queries)} queries exceed max_batch_size={self.max_batch_size}; split them"
            )
        requests = []
        refused: list[dict[str, Any]] = []
        for index, query in enumerate(queries):
            prompt = prompts[index] if prompts is not None else None
            if prompt is not None and not isinstance(prompt, str):
                raise BadRequest(f"prompts[{index}] must be a string")
            try:
                prompt_text, completion = split_query(query, prompt)
                sample = self._sample(prompt_text, completion, labels[index] if labels is not None else None)
                requests.append(request_to_proto(self.scorer, sample, self.params, str(index)))
            except (TypeError, ValueError) as exc:
                refused.append({"index": index, "status": "INVALID_INPUT", "reason": str(exc)})
        if refused:
            return _unusable(refused, len(queries))
        results = await score_requests(self.service, requests)
        # Unusable first: retrying the request cannot fix it.
        invalid = [r for r in results if r.status is Status.INVALID_INPUT]
        if invalid:
            return _unusable([_failure(r) for r in invalid], len(results))
        failed = [r for r in results if not r.ok and not r.status.is_bad_output]
        if failed:
            return error_response(
                503,
                f"{len(failed)} of {len(results)} samples could not be scored; no rewards are given"
                " rather than fake ones",
                samples=[_failure(r) for r in failed],
            )
        rewards = [_reward(r) for r in results]
        return web.json_response(
            {"rewards": rewards, "scores": rewards, "extra_logs": self._extra_logs(results)}
        )

    def _sample(self, prompt: str, completion: str, label: Any) -> Sample:
        if label is None or self.labels == "ignore":
            return Sample.build(completion, prompt=prompt)
        if self.labels == "reference":
            reference = label if isinstance(label, str) else json.dumps(label)
            return Sample.build(completion, prompt=prompt, reference=reference)
        if self.labels == "tests":
            tests = json.loads(label) if isinstance(label, str) else label
            return Sample.build(completion, prompt=prompt, tests=tests)
        return Sample.build(completion, prompt=prompt, metadata={"label": label})

    def _extra_logs(self, results: Sequence[ScoreResult]) -> dict[str, list[float]]:
        """Per-sample numbers OpenRLHF logs, under keys fixed at start-up: OpenRLHF
        concatenates them across requests and fails on a key one answer lacks."""
        logs: dict[str, list[float]] = {
            "arbiter_bad_output": [float(r.status.is_bad_output) for r in results]
        }
        for name in self.components:
            logs[f"arbiter_{name}"] = [float(r.components.get(name, 0.0)) for r in results]
        return logs


def _failure(result: ScoreResult) -> dict[str, Any]:
    return {"index": int(result.request_id), "status": result.status.name, "reason": result.reason}


def _unusable(samples: list[dict[str, Any]], total: int) -> web.Response:
    return error_response(
        422,
        f"{len(samples)} of {total} samples are unusable (a data or config problem, not the model's"
        " output); no rewards are given rather than fake ones",
        samples=samples,
    )


def _strings(value: Any, name: str) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _optional_list(value: Any, length: int, name: str) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != length:
        raise BadRequest(f'"{name}" must be a list as long as "query" ({length})')
    return value


def _reward(result: ScoreResult) -> float:
    return result.reward if result.ok else 0.0
