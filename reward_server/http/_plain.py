"""Plain JSON mirrors of ``Score``, ``ScoreBatch`` and ``ListScorers``.

A sample is the dict the Python client takes (``scorer``, ``completion``,
``prompt``, ``reference``, ``tests``, ``params``, ``metadata``, ``request_id``)::

    POST /v1/score        {"scorer": "math", "completion": "\\\\boxed{2}", "reference": "2"}
    ->                    {"request_id": "", "reward": 1.0, "status": "OK", ...}
    POST /v1/score_batch  {"requests": [{...}, {...}]}
    ->                    {"results": [{...}, {...}]}   (in order; each with its status)
    GET  /v1/scorers      {"scorers": [{"name", "type", "description", "params_schema", ...}]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from sdk._channel import prepare_batch

from ..service import RewardService
from ._common import BadRequest, read_json, result_json, score_requests

__all__ = ["PlainHandler"]


class PlainHandler:
    def __init__(self, service: RewardService, *, max_batch_size: int) -> None:
        self.service = service
        self.max_batch_size = max_batch_size

    async def score(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, Mapping):
            raise BadRequest("the body must be a JSON object: one sample")
        body = _with_text_request_id(body, "the sample")
        # One sample alone: a sample the client library would refuse is a bad request here.
        batch = prepare_batch([body])
        if batch.results[0] is not None:
            raise BadRequest(batch.results[0].reason.removeprefix("rejected by the client: "))
        sample = batch.requests[0]
        sample.request_id = str(body.get("request_id", ""))
        (result,) = await score_requests(self.service, [sample])
        return web.json_response(result_json(result))

    async def score_batch(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        items = body.get("requests") if isinstance(body, Mapping) else None
        if not isinstance(items, list):
            raise BadRequest('the body must be a JSON object {"requests": [sample, ...]}')
        if len(items) > self.max_batch_size:
            raise BadRequest(
                f"batch of {len(items)} samples exceeds max_batch_size={self.max_batch_size}; split it"
            )
        items = [
            _with_text_request_id(item, f"requests[{index}]") if isinstance(item, Mapping) else item
            for index, item in enumerate(items)
        ]
        # Samples that cannot be built get INVALID_INPUT on their own, as in the client.
        batch = prepare_batch(items)
        scored = await score_requests(self.service, batch.requests)
        for position, result in zip(batch.positions, scored, strict=True):
            batch.results[position] = result
        results = [r for r in batch.results if r is not None]
        return web.json_response({"results": [result_json(r) for r in results]})

    async def scorers(self, request: web.Request) -> web.Response:
        infos: list[dict[str, Any]] = []
        for name, served in sorted(self.service.dispatcher.scorers.items()):
            scorer = served.entry.scorer
            infos.append(
                {
                    "name": name,
                    "type": scorer.name,
                    "description": served.description,
                    "params_schema": scorer.Params.model_json_schema(),
                    "default_params": json.loads(json.dumps(dict(served.entry.defaults), default=repr)),
                    "cpu_bound": scorer.cpu_bound,
                }
            )
        return web.json_response({"scorers": infos})


def _with_text_request_id(item: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """JSON clients often number their samples: an integer ``request_id`` is taken
    as its decimal text; any other non-text id is a bad request."""
    request_id = item.get("request_id")
    if request_id is None or isinstance(request_id, str):
        return item
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        return {**item, "request_id": str(request_id)}
    raise BadRequest(f"{where}: request_id must be a string or an integer, not {type(request_id).__name__}")
