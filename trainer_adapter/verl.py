"""Arbiter as verl's custom reward function.

verl calls ``compute_score(data_source=..., solution_str=..., ground_truth=...,
extra_info=...)`` once per response (``custom_reward_function.path`` pointing at
``pkg://trainer_adapter.verl``, ``name: compute_score``). This one scores the response on the reward
server, with the scorer the data source is routed to::

    custom_reward_function:
      path: pkg://trainer_adapter.verl   # imported as a module (a file path would not be)
      name: compute_score
      reward_kwargs:
        target: 127.0.0.1:50051
        routes: {"openai/gsm8k": "math", "codecontests": {"scorer": "code", "ground_truth": "tests"}}

Routes come from, first to last: ``reward_kwargs`` (``routes``), ``configure(...)``,
the ``ARBITER_VERL_ROUTES`` environment variable (JSON). A route is a scorer name,
or ``{"scorer", "params", "ground_truth"}`` where ``ground_truth`` says what verl's
ground truth becomes: ``"reference"`` (the default; text), ``"tests"`` (a test
suite: Arbiter's own form, or verl's code form ``{"inputs": [...], "outputs":
[...], "fn_name"?}``, either as JSON text), or ``"none"``. The key ``"*"`` routes
every other data source. ``ARBITER_TARGET`` and ``ARBITER_TOKEN`` give the
server's address and token.

Returns a float: the reward of a scored sample, 0.0 for a bad output (TIMEOUT,
SANDBOX_VIOLATION). A sample that cannot be scored raises ``RewardServerError``
with the reason: an unusable request (INVALID_INPUT: no ground truth, bad params
or tests, a data or config problem) or an infrastructure failure (the server
cannot be reached within ``max_wait_s``, a scorer crashed, no route for the data
source). verl has no way to leave one sample out, and a fake 0 would be learned
from.

Nothing heavy is imported: the SDK client only, created on first use, one per
target and token, shared by verl's threads.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdk import ClientError, RewardClient, Status

from .rewards import RewardServerError, reward_of

__all__ = ["ROUTES_ENV", "Route", "compute_score", "configure"]

ROUTES_ENV = "ARBITER_VERL_ROUTES"
TARGET_ENV = "ARBITER_TARGET"
TOKEN_ENV = "ARBITER_TOKEN"
_GROUND_TRUTH = ("reference", "tests", "none")


@dataclass(frozen=True)
class Route:
    """Where a data source's samples go."""

    scorer: str
    params: Mapping[str, Any] = field(default_factory=dict)
    ground_truth: str = "reference"

    @classmethod
    def parse(cls, data_source: str, value: Any) -> Route:
        if isinstance(value, Route):
            return value
        if isinstance(value, str) and value:
            return cls(scorer=value)
        if isinstance(value, Mapping) and isinstance(value.get("scorer"), str):
            unknown = set(value) - {"scorer", "params", "ground_truth"}
            ground_truth = value.get("ground_truth", "reference")
            if (
                unknown
                or ground_truth not in _GROUND_TRUTH
                or not isinstance(value.get("params", {}), Mapping)
            ):
                raise ValueError(
                    f"route for {data_source!r}: {value!r}; use a scorer name or"
                    f' {{"scorer", "params": {{...}}, "ground_truth": one of {_GROUND_TRUTH}}}'
                )
            return cls(value["scorer"], _plain(value.get("params", {})), ground_truth)
        raise ValueError(f"route for {data_source!r} must be a scorer name or a table with a scorer")


@dataclass
class _Settings:
    routes: dict[str, Route] = field(default_factory=dict)
    target: str | None = None
    token: str | None = None
    max_wait_s: float = 300.0


_settings = _Settings()
_clients: dict[tuple[str, str | None, float], RewardClient] = {}
_lock = threading.Lock()


def configure(
    routes: Mapping[str, Any] | None = None,
    *,
    target: str | None = None,
    token: str | None = None,
    max_wait_s: float | None = None,
) -> None:
    """Set the routes (data source -> scorer) and server for this process."""
    parsed = {source: Route.parse(source, value) for source, value in _plain(routes or {}).items()}
    with _lock:
        if routes is not None:
            _settings.routes = parsed
        if target is not None:
            _settings.target = target
        if token is not None:
            _settings.token = token
        if max_wait_s is not None:
            _settings.max_wait_s = max_wait_s


def _routes(explicit: Mapping[str, Any] | str | None) -> dict[str, Route]:
    if explicit is not None:
        raw = json.loads(explicit) if isinstance(explicit, str) else _plain(explicit)
        if not isinstance(raw, Mapping):
            raise ValueError('routes must be a table {"data_source": "scorer", ...}')
        return {source: Route.parse(source, value) for source, value in raw.items()}
    if _settings.routes:
        return _settings.routes
    env = os.environ.get(ROUTES_ENV)
    if env:
        try:
            raw = json.loads(env)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{ROUTES_ENV} is not JSON: {exc}") from exc
        if not isinstance(raw, Mapping):
            raise ValueError(f'{ROUTES_ENV} must be a JSON object {{"data_source": "scorer", ...}}')
        return {source: Route.parse(source, value) for source, value in raw.items()}
    return {}


def _client(target: str, token: str | None, max_wait_s: float) -> RewardClient:
    key = (target, token, max_wait_s)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = RewardClient(target, token=token, timeout=max_wait_s, wait_for_ready=True)
            _clients[key] = client
        return client


def tests_from_ground_truth(ground_truth: Any) -> Any:
    """A test suite from verl's ground truth: Arbiter's own form, or verl's code
    form ``{"inputs": [...], "outputs": [...]}`` (stdin/stdout cases) with an
    optional ``fn_name`` (function calls), either one possibly as JSON text."""
    value = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if not isinstance(value, Mapping):
        raise ValueError(f"ground truth for a code route must be a JSON object, not {type(value).__name__}")
    if "inputs" in value and "outputs" in value:
        if value.get("fn_name"):
            return {
                "call_cases": {
                    "fn_name": value["fn_name"],
                    "inputs": value["inputs"],
                    "outputs": value["outputs"],
                }
            }
        return {
            "io_cases": [
                {"input": i, "output": o} for i, o in zip(value["inputs"], value["outputs"], strict=True)
            ]
        }
    return dict(value)


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    routes: Mapping[str, Any] | str | None = None,
    target: str | None = None,
    token: str | None = None,
    max_wait_s: float | None = None,
    **_verl_kwargs: Any,
) -> float:
    """verl's ``compute_score``: the reward of ``solution_str`` from the scorer
    ``data_source`` is routed to. See the module docstring."""
    table = _routes(routes)
    route = table.get(data_source) or table.get("*")
    if route is None:
        known = ", ".join(sorted(table)) or "none (set ARBITER_VERL_ROUTES or call configure)"
        raise RewardServerError(
            f"no Arbiter scorer is routed for data source {data_source!r}; routes: {known}"
        )
    address = target or _settings.target or os.environ.get(TARGET_ENV) or "127.0.0.1:50051"
    wait = max_wait_s if max_wait_s is not None else _settings.max_wait_s
    item: dict[str, Any] = {"scorer": route.scorer, "completion": solution_str, "params": dict(route.params)}
    if ground_truth is not None and route.ground_truth == "reference":
        item["reference"] = ground_truth if isinstance(ground_truth, str) else json.dumps(ground_truth)
    elif ground_truth is not None and route.ground_truth == "tests":
        item["tests"] = tests_from_ground_truth(ground_truth)
    if extra_info:
        item["metadata"] = {"data_source": data_source, **_jsonable(extra_info)}
    client = _client(address, token or _settings.token or os.environ.get(TOKEN_ENV), wait)
    try:
        (result,) = client.score_batch([item])
    except ClientError as exc:
        raise RewardServerError(f"reward server {address} gave no reward within {wait:g}s: {exc}") from exc
    reward = reward_of(result)
    if reward is None:
        status = Status(result.status)
        kind = (
            "the request is unusable, a data or config problem (ground truth, route params or tests)"
            if status is Status.INVALID_INPUT
            else "the reward server failed"
        )
        raise RewardServerError(
            f"scorer {route.scorer!r} could not score a {data_source!r} sample"
            f" ({status.name}: {kind}): {result.reason}"
        )
    return reward


def _plain(value: Any) -> Any:
    """Plain JSON containers from any Mapping or Sequence: verl hands ``reward_kwargs``
    over as OmegaConf DictConfig and ListConfig, which protobuf's Struct refuses."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        return [_plain(item) for item in value]
    return value


def _jsonable(extra_info: Mapping[str, Any]) -> dict[str, Any]:
    """verl's extra_info, as JSON data (numpy values and the like as text)."""
    data: dict[str, Any] = json.loads(json.dumps(dict(extra_info), default=str))
    return data
