"""Pieces every endpoint shares: JSON errors, body parsing, scoring through the
gRPC service's own per-sample path, and results as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from sdk import ScoreResult
from sdk._convert import result_from_proto
from sdk._proto import reward_pb2 as pb

from ..service import RewardService

__all__ = ["OPEN_PATHS", "BadRequest", "error_response", "read_json", "result_json", "score_requests"]

OPEN_PATHS = frozenset({"/health"})


class BadRequest(Exception):
    """The request as a whole is unusable; answered 400 (or ``status``) with the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    422: "INVALID_ARGUMENT",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    code = _CODES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


async def read_json(request: web.Request) -> Any:
    """The body as JSON; BadRequest when it is not JSON or is JSON no sample could
    be (nested past the parser's recursion limit, an integer of more than 4300
    digits). Oversized bodies raise aiohttp's 413, which the error middleware answers."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadRequest("the body is JSON nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise BadRequest(f"the body is not usable JSON: {exc}") from exc


async def score_requests(service: RewardService, requests: Sequence[pb.ScoreRequest]) -> list[ScoreResult]:
    """Score each request exactly as the gRPC service scores a sample of
    ``ScoreBatch``: size limit, decoding, dispatch, never an exception per sample."""
    responses = await service.score_many(requests, None)
    return [result_from_proto(r.result, r.request_id) for r in responses]


def result_json(result: ScoreResult) -> dict[str, Any]:
    """A result as JSON. ``reward`` is null unless the sample was scored (OK), so
    that no client can mistake a failure for a reward of 0."""
    return {
        "request_id": result.request_id,
        "scorer": result.scorer,
        "reward": result.reward if result.ok else None,
        "status": result.status.name,
        "reason": result.reason,
        "components": dict(result.components),
        "details": dict(result.details),
        "queued_ms": result.queued_ms,
        "scoring_ms": result.scoring_ms,
    }
