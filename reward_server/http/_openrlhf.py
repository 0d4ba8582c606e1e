"""OpenRLHF's remote reward model protocol (``--remote_rm_url http://host:port/get_reward``).

OpenRLHF posts ``{"query": [...], "prompts": [...], "labels": [...]}``, where each
query is the decoded prompt + response, and reads ``rewards`` (the reward),
``scores`` (used for dynamic filtering; falls back to ``rewards``) and
``extra_logs`` (per-sample numbers, logged) from the JSON answer. The shape is the
one OpenRLHF's own ``serve_rm`` answers.

Each query is cut into prompt and completion where it starts with its prompt;
labels become the sample's reference (or tests, or metadata; ``[http]
openrlhf_labels``). Every sample goes to the configured scorer
(``openrlhf_scorer``).

Outcomes: a scored sample gives its reward; a bad output (INVALID_INPUT, TIMEOUT,
SANDBOX_VIOLATION) gives 0.0, as a wrong answer would; an infrastructure failure of
any sample fails the request with HTTP 503 and the reasons, because OpenRLHF's
protocol has no way to leave one sample out and a fake 0 would be learned from.
OpenRLHF retries a failed request, then leaves the samples without a reward.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from sdk import Sample, ScoreResult, Status
from sdk._convert import request_to_proto

from ..service import RewardService
from ._common import BadRequest, error_response, read_json, score_requests

__all__ = ["OpenRlhfHandler"]

BAD_OUTPUT = frozenset({Status.INVALID_INPUT, Status.TIMEOUT, Status.SANDBOX_VIOLATION})


def split_query(query: str, prompt: str | None) -> tuple[str, str]:
    """``(prompt, completion)``: the query without its prompt when it starts with it,
    else the whole query as the completion."""
    if prompt and query.startswith(prompt):
        return prompt, query[len(prompt) :]
    return prompt or "", query


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
        for index, query in enumerate(queries):
            prompt = prompts[index] if prompts is not None else None
            if prompt is not None and not isinstance(prompt, str):
                raise BadRequest(f"prompts[{index}] must be a string")
            prompt_text, completion = split_query(query, prompt)
            try:
                sample = self._sample(prompt_text, completion, labels[index] if labels is not None else None)
                requests.append(request_to_proto(self.scorer, sample, self.params, str(index)))
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"sample {index}: {exc}") from exc
        results = await score_requests(self.service, requests)
        failed = [r for r in results if not r.ok and r.status not in BAD_OUTPUT]
        if failed:
            return error_response(
                503,
                f"{len(failed)} of {len(results)} samples could not be scored; no rewards are given"
                " rather than fake ones",
                samples=[
                    {"index": int(r.request_id), "status": r.status.name, "reason": r.reason} for r in failed
                ],
            )
        rewards = [_reward(r) for r in results]
        return web.json_response({"rewards": rewards, "scores": rewards, "extra_logs": _extra_logs(results)})

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


def _extra_logs(results: Sequence[ScoreResult]) -> dict[str, list[float]]:
    """Per-sample numbers OpenRLHF logs: whether the output was bad, and each
    composite component (0 where a sample has none)."""
    logs: dict[str, list[float]] = {"arbiter_bad_output": [float(not r.ok) for r in results]}
    names = sorted({name for r in results for name in r.components})
    for name in names:
        logs[f"arbiter_{name}"] = [float(r.components.get(name, 0.0)) for r in results]
    return logs
