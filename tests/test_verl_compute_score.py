"""verl's compute_score hook against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from reward_server.embedded import EmbeddedServer
from trainer_adapter import RewardServerError, verl


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(plugins=["sdk.testing"], token="t0ken") as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verl, "_settings", verl._Settings())
    monkeypatch.delenv(verl.ROUTES_ENV, raising=False)


def test_routes_from_reward_kwargs(server: EmbeddedServer) -> None:
    kwargs = {"target": server.target, "token": "t0ken", "routes": {"openai/gsm8k": "math"}}
    # verl calls with keywords, plus its own extras
    right = verl.compute_score(
        data_source="openai/gsm8k",
        solution_str="so the answer is \\boxed{72}",
        ground_truth="72",
        extra_info={"index": 3, "split": "train"},
        reward_router_address=None,
        **kwargs,
    )
    wrong = verl.compute_score("openai/gsm8k", "\\boxed{71}", "72", {}, **kwargs)
    assert (right, wrong) == (1.0, 0.0)
    assert isinstance(right, float)


def test_routes_from_environment_with_code_tests(
    server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = {"codecontests": {"scorer": "code", "ground_truth": "tests"}, "*": "math"}
    monkeypatch.setenv(verl.ROUTES_ENV, json.dumps(routes))
    monkeypatch.setenv(verl.TARGET_ENV, server.target)
    monkeypatch.setenv(verl.TOKEN_ENV, "t0ken")
    ground_truth = json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})  # verl's code form
    solution = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert verl.compute_score("codecontests", solution, ground_truth) == 1.0
    half = "```python\nprint(3)\n```"
    assert verl.compute_score("codecontests", half, ground_truth) == 0.5
    assert verl.compute_score("anything/else", "\\boxed{2}", "2") == 1.0


def test_configure_and_params(server: EmbeddedServer) -> None:
    verl.configure(
        {"toy": {"scorer": "fake", "params": {"reward": 0.25}}}, target=server.target, token="t0ken"
    )
    assert verl.compute_score("toy", "anything", None) == 0.25


def test_infrastructure_failure_raises_instead_of_zero(server: EmbeddedServer) -> None:
    verl.configure(
        {"toy": {"scorer": "fake", "params": {"error": "boom"}}}, target=server.target, token="t0ken"
    )
    with pytest.raises(RewardServerError, match=r"SCORER_ERROR.*boom"):
        verl.compute_score("toy", "x", None)


def test_unrouted_data_source_raises(server: EmbeddedServer) -> None:
    verl.configure({"a": "math"}, target=server.target, token="t0ken")
    with pytest.raises(RewardServerError, match="scorer is routed for data source 'b'"):
        verl.compute_score("b", "x", "1")


def test_unreachable_server_raises() -> None:
    verl.configure({"a": "math"}, target="127.0.0.1:1", max_wait_s=0.5)
    with pytest.raises(RewardServerError, match="gave no reward"):
        verl.compute_score("a", "x", "1")


def test_bad_route_is_refused_when_configured() -> None:
    with pytest.raises(ValueError, match="route for 'a'"):
        verl.configure({"a": {"scorer": "math", "ground_truth": "answer"}})


class Config(Mapping[str, Any]):
    """A mapping that is no dict, as OmegaConf's DictConfig (verl's reward_kwargs) is."""

    def __init__(self, **items: Any) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class Items(Sequence[Any]):
    """A sequence that is no list, as OmegaConf's ListConfig is."""

    def __init__(self, *items: Any) -> None:
        self._items = items

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)


def test_routes_as_omegaconf_containers(server: EmbeddedServer) -> None:
    route = Config(scorer="format", params=Config(tags=Items("answer")))
    kwargs = {"target": server.target, "token": "t0ken", "routes": Config(tagged=route)}
    assert verl.compute_score("tagged", "<answer>4</answer>", None, **kwargs) == 1.0
    assert verl.compute_score("tagged", "4", None, **kwargs) == 0.0
    verl.configure(Config(tagged=route), target=server.target, token="t0ken")
    assert verl.compute_score("tagged", "<answer>4</answer>", None) == 1.0


def test_unusable_sample_raises_naming_source_status_and_reason(server: EmbeddedServer) -> None:
    verl.configure({"openai/gsm8k": "math"}, target=server.target, token="t0ken")
    with pytest.raises(RewardServerError) as caught:
        verl.compute_score("openai/gsm8k", "\\boxed{2}", None)  # no ground truth: never a 0
    message = str(caught.value)
    assert "'openai/gsm8k'" in message and "INVALID_INPUT" in message
    assert "data or config problem" in message and "reference" in message
