"""Arbiter scorers as TRL reward functions (``GRPOTrainer`` / ``RLOOTrainer``
``reward_funcs``), or for any loop that calls ``f(prompts=..., completions=...)``.

``server_reward("math", target, columns={"reference": "answer"})`` returns an async
reward function. TRL runs async reward functions concurrently; each call sends the
whole group of completions to the server in one ``ScoreBatch``.

What comes back per completion:

* the reward, for a scored sample (status OK);
* ``0.0`` when the model's output was bad (TIMEOUT, SANDBOX_VIOLATION): a wrong
  answer is worth nothing;
* ``None`` when the sample could not be scored: the request was unusable
  (INVALID_INPUT: a missing reference, bad params or tests, which is a data or
  config problem, logged as a warning) or the infrastructure failed (a scorer
  crashed, the server was overloaded). TRL turns it into NaN and leaves it out,
  rather than learning from a fake zero.

Several rewards: TRL (1.12) leaves a sample out only when *every* reward function
returned None for it, and sums the others (``nansum``), so one failed reward among
several silently counts as 0. ``combined_reward([...])`` scores every configured
scorer in one reward function (concurrently) and returns the weighted sum, or None
for the whole sample when any part could not be scored; pass it alone, with TRL's
``reward_weights`` left at ``[1.0]``. ``arbiter train grpo`` does this.

Failure counts and the mean of each composite component are logged through TRL's
``log_metric``. While the server restarts, calls wait (gRPC wait-for-ready) up to
``max_wait_s``; past that the function raises instead of inventing rewards.

The function is a small picklable object (TRL and accelerate may copy it) with its
own ``__name__`` (TRL names its reward metrics after it) that ``inspect`` reports
as a coroutine function, which is how TRL decides to run it concurrently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import types
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sdk import AsyncRewardClient, ClientError, ScoreResult, Status

log = logging.getLogger("arbiter.trainer")

__all__ = [
    "CombinedReward",
    "RewardServerError",
    "ServerReward",
    "Targets",
    "combined_reward",
    "server_reward",
]

SAMPLE_FIELDS = ("reference", "tests", "metadata", "prompt")


class RewardServerError(RuntimeError):
    """The reward server could not be reached within the allowed wait."""


Targets = str | Sequence[str]  # one server, or replicas (round-robin, see RewardClient)


@dataclass(frozen=True)
class RewardConfig:
    scorer: str
    targets: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    params_json: str  # JSON text: hashable, so configs can key the client cache
    token: str | None
    max_wait_s: float
    name: str

    @property
    def where(self) -> str:
        return ",".join(self.targets)


def server_reward(
    scorer: str,
    target: Targets = "127.0.0.1:50051",
    *,
    columns: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    token: str | None = None,
    max_wait_s: float = 300.0,
    name: str | None = None,
) -> Callable[..., Any]:
    """A TRL reward function scored by ``scorer`` on the server at ``target`` (or
    spread round-robin over a list of replicas).

    ``columns`` maps sample fields (``reference``, ``tests``, ``metadata``,
    ``prompt``) to dataset columns, e.g. ``{"reference": "answer"}``; TRL passes
    every dataset column to reward functions. By default the prompt is the one TRL
    passes.
    """
    return ServerReward(
        reward_config(
            scorer, target, columns=columns, params=params, token=token, max_wait_s=max_wait_s, name=name
        )
    )


def reward_config(
    scorer: str,
    target: Targets,
    *,
    columns: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    token: str | None = None,
    max_wait_s: float = 300.0,
    name: str | None = None,
) -> RewardConfig:
    """The validated settings of one server reward (what ``server_reward`` wraps)."""
    columns = dict(columns or {})
    unknown = set(columns) - set(SAMPLE_FIELDS)
    if unknown:
        raise ValueError(f"columns maps unknown sample fields {sorted(unknown)}; use {SAMPLE_FIELDS}")
    targets = (target,) if isinstance(target, str) else tuple(target)
    if not targets:
        raise ValueError("no reward server address given")
    return RewardConfig(
        scorer=scorer,
        targets=targets,
        columns=tuple(sorted(columns.items())),
        params_json=json.dumps(dict(params or {}), sort_keys=True),
        token=token,
        max_wait_s=max_wait_s,
        name=name or f"arbiter_{scorer}",
    )


class _AsyncRewardFunction:
    """What TRL needs of a reward object: a ``__name__``, and to look like an ``async def``."""

    # Python 3.11 has no inspect.markcoroutinefunction: it recognises a coroutine
    # function by a function-like shape (these attributes) and the code's flags.
    __defaults__ = None
    __kwdefaults__ = None
    __annotations__: dict[str, Any] = {}
    __name__: str
    __call__: Callable[..., Any]

    @property
    def __code__(self) -> types.CodeType:
        code: types.CodeType = type(self).__call__.__code__
        return code


class ServerReward(_AsyncRewardFunction):
    """The reward function ``server_reward`` returns."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        self.__name__ = config.name

    async def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        return await score_completions(self.config, prompts, completions, log_metric, **kwargs)

    def __repr__(self) -> str:
        return f"<arbiter reward {self.__name__}: {self.config.scorer} at {self.config.where}>"


def combined_reward(parts: Sequence[tuple[RewardConfig, float]], *, name: str = "arbiter") -> CombinedReward:
    """One TRL reward function for several server rewards: ``(reward_config(...), weight)``
    pairs, scored concurrently; the weighted sum, or None when any part is None."""
    if not parts:
        raise ValueError("combined_reward needs at least one reward")
    names = [config.name for config, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"reward names must differ (they name the logged metrics): {names}")
    return CombinedReward(tuple(parts), name)


class CombinedReward(_AsyncRewardFunction):
    """The reward function ``combined_reward`` returns (module docstring)."""

    def __init__(self, parts: tuple[tuple[RewardConfig, float], ...], name: str) -> None:
        self.parts = parts
        self.__name__ = name

    async def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        per_part = await asyncio.gather(
            *(
                score_completions(config, prompts, completions, log_metric, **kwargs)
                for config, _ in self.parts
            )
        )
        totals: list[float | None] = []
        for values in zip(*per_part, strict=True):
            scored = [value for value in values if value is not None]
            if len(scored) < len(values):
                totals.append(None)  # one part unscored: the sum would be a fake reward
            else:
                totals.append(
                    sum(weight * value for (_, weight), value in zip(self.parts, scored, strict=True))
                )
        if log_metric is not None:
            for (config, _), part in zip(self.parts, per_part, strict=True):
                part_scored = [value for value in part if value is not None]
                if part_scored:
                    log_metric(f"{config.name}/mean", sum(part_scored) / len(part_scored))
            log_metric(f"{self.__name__}/left_out", float(sum(total is None for total in totals)))
        return totals

    def __repr__(self) -> str:
        parts = ", ".join(f"{weight:g} x {config.scorer}" for config, weight in self.parts)
        return f"<arbiter reward {self.__name__}: {parts}>"


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[RewardConfig, AsyncRewardClient]] = (
    weakref.WeakKeyDictionary()
)
_clients_lock = threading.Lock()


def _client(config: RewardConfig) -> AsyncRewardClient:
    """One client per config and event loop (TRL runs async rewards on its own loop
    thread); a loop's clients go away with it."""
    loop = asyncio.get_running_loop()
    with _clients_lock:
        per_loop = _clients.setdefault(loop, {})
        client = per_loop.get(config)
        if client is None:
            client = AsyncRewardClient(
                list(config.targets), token=config.token, timeout=config.max_wait_s, wait_for_ready=True
            )
            per_loop[config] = client
        return client


async def close_clients() -> None:
    """Close the clients made on the running event loop (for callers that own their loop)."""
    loop = asyncio.get_running_loop()
    with _clients_lock:
        clients = list(_clients.pop(loop, {}).values())
    for client in clients:
        await client.close()


def _text(value: Any) -> Any:
    """TRL completions are strings, or ``[{"role": "assistant", "content": ...}]``."""
    return value if isinstance(value, str) else list(value)


async def score_completions(
    config: RewardConfig,
    prompts: Sequence[Any] | None = None,
    completions: Sequence[Any] = (),
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """Score one batch of completions; see the module docstring for the contract."""
    columns = dict(config.columns)
    params = json.loads(config.params_json) or None
    items = []
    for index, completion in enumerate(completions):
        item: dict[str, Any] = {"scorer": config.scorer, "completion": _text(completion), "params": params}
        if prompts is not None and "prompt" not in columns:
            item["prompt"] = _text(prompts[index])
        for field, column in columns.items():
            values = kwargs.get(column)
            if values is None:
                raise KeyError(
                    f"dataset column {column!r} (for {field}) was not passed to the reward function"
                )
            value = values[index]
            # Datasets keep numeric answers as numbers (GSM8K's 42); a reference is text.
            if field == "reference" and isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            item[field] = value
        items.append(item)
    try:
        results = await _client(config).score_batch(items)
    except ClientError as exc:
        raise RewardServerError(
            f"reward server {config.where} gave no rewards within {config.max_wait_s:g}s: {exc}"
        ) from exc
    if log_metric is not None:
        _log(config.name, results, log_metric)
    return [reward_of(result) for result in results]


def reward_of(result: ScoreResult) -> float | None:
    """The reward to learn from: the score, 0.0 for a bad output, None otherwise (an
    unusable request or an infrastructure failure: nothing to learn from)."""
    if result.ok:
        return result.reward
    if result.status.is_bad_output:
        return 0.0
    return None


def _log(name: str, results: Sequence[ScoreResult], log_metric: Callable[[str, float], None]) -> None:
    log_metric(
        f"{name}/infrastructure_failures", float(sum(r.status.is_infrastructure_failure for r in results))
    )
    log_metric(f"{name}/bad_outputs", float(sum(r.status.is_bad_output for r in results)))
    invalid = [r for r in results if r.status is Status.INVALID_INPUT]
    log_metric(f"{name}/invalid_inputs", float(len(invalid)))
    if invalid:  # a data or config problem, not the model's: say so where people look
        log.warning(
            "%s: %d of %d samples were refused as unusable (left out, not scored 0): %s",
            name,
            len(invalid),
            len(results),
            invalid[0].reason,
        )
    components: dict[str, list[float]] = defaultdict(list)
    for result in results:
        if result.ok:
            for component, value in result.components.items():
                components[component].append(value)
    for component, values in components.items():
        log_metric(f"{name}/{component}", sum(values) / len(values))
