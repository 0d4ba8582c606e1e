"""The SDK on its own: defining scorers, validation at load time, the registry,
the local runner and the data types."""

from __future__ import annotations

import pickle
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from sdk import (
    Sample,
    SampleError,
    Scorer,
    ScorerDefinitionError,
    ScoreResult,
    ScorerRegistry,
    Status,
    TestSuite,
    scorer,
)
from sdk.testing import FakeScorer, LocalRunner, assert_reward


class ExactParams(BaseModel):
    ignore_case: bool = True


@scorer("exact", params=ExactParams)
def exact(sample: Sample, params: ExactParams) -> float:
    """Reward 1 when the completion equals the reference."""
    got, want = sample.completion_text.strip(), sample.reference or ""
    if params.ignore_case:
        got, want = got.lower(), want.lower()
    return float(got == want)


class Shout(Scorer):
    """Async class-based scorer: the share of upper-case letters."""

    name = "shout"

    async def score(self, sample: Sample, params: BaseModel) -> ScoreResult:
        letters = [c for c in sample.completion_text if c.isalpha()]
        share = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
        return ScoreResult(reward=share, details={"letters": len(letters)})


def test_function_scorer_scores_and_takes_params() -> None:
    assert_reward(exact, 1.0, "Paris", reference="paris")
    assert_reward(exact, 0.0, "Paris", reference="paris", params={"ignore_case": False})
    assert exact.description == "Reward 1 when the completion equals the reference."


def test_class_scorer_async() -> None:
    result = assert_reward(Shout, 0.5, "ABcd")
    assert result.details == {"letters": 4}


def test_unknown_or_wrong_params_are_invalid_input() -> None:
    runner = LocalRunner(exact)
    unknown = runner.score("exact", "x", params={"ignore_kase": True})
    assert unknown.status is Status.INVALID_INPUT and "ignore_kase" in unknown.reason
    wrong = runner.score("exact", "x", params={"ignore_case": "maybe"})
    assert wrong.status is Status.INVALID_INPUT and "ignore_case" in wrong.reason


def test_scorer_errors_become_statuses() -> None:
    @scorer("raises")
    def raises(sample: Sample, params: BaseModel) -> float:
        raise KeyError("boom")

    @scorer("rejects")
    def rejects(sample: Sample, params: BaseModel) -> float:
        raise SampleError("no reference given")

    @scorer("nan")
    def nan(sample: Sample, params: BaseModel) -> float:
        return float("nan")

    @scorer("wrong-type")
    def wrong_type(sample: Sample, params: BaseModel) -> str:
        return "1.0"

    runner = LocalRunner(raises, rejects, nan, wrong_type)
    assert runner.score("raises").status is Status.SCORER_ERROR
    assert runner.score("rejects").status is Status.INVALID_INPUT
    nan_result = runner.score("nan")
    assert nan_result.status is Status.SCORER_ERROR and "non-finite" in nan_result.reason
    assert runner.score("wrong-type").status is Status.SCORER_ERROR
    assert runner.score("missing").status is Status.UNKNOWN_SCORER


@pytest.mark.parametrize(
    "make, message",
    [
        pytest.param(lambda: scorer("Bad Name")(lambda s, p: 1.0), "name", id="bad-name"),
        pytest.param(lambda: scorer("one-arg")(lambda s: 1.0), "sample, params", id="wrong-arity"),
        pytest.param(lambda: scorer("ctx-sync")(lambda s, p, ctx: 1.0), "async def", id="ctx-needs-async"),
        pytest.param(
            lambda: scorer("params", params=dict)(lambda s, p: 1.0), "BaseModel", id="params-not-model"
        ),
    ],
)
def test_definition_errors_say_how_to_fix(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScorerDefinitionError, match=message):
        make()


def test_cpu_bound_scorers_must_be_sync() -> None:
    class AsyncCpu(Scorer):
        name = "async-cpu"
        cpu_bound = True

        async def score(self, sample: Sample, params: BaseModel) -> float:
            return 1.0

    with pytest.raises(ScorerDefinitionError, match="plain 'def'"):
        ScorerRegistry().add(AsyncCpu)


def test_function_scorers_pickle_by_reference() -> None:
    assert pickle.loads(pickle.dumps(exact)) is exact


def test_registry_loads_a_module_and_refuses_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_scorers.py").write_text(
        textwrap.dedent(
            """
            from sdk import Scorer, scorer

            @scorer("greeting")
            def greeting(sample, params):
                return float(sample.completion_text.startswith("Hello"))

            class Polite(Scorer):
                name = "polite"
                def score(self, sample, params):
                    return float("please" in sample.completion_text)
            """
        )
    )
    (tmp_path / "empty_module.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ScorerRegistry()
    assert sorted(s.name for s in registry.load_module("my_scorers")) == ["greeting", "polite"]
    with pytest.raises(ScorerDefinitionError, match="defines no scorers"):
        registry.load_module("empty_module")
    with pytest.raises(ScorerDefinitionError, match="cannot import"):
        registry.load_module("no_such_module_here")

    @scorer("greeting")
    def other_greeting(sample: Sample, params: BaseModel) -> float:
        return 0.0

    with pytest.raises(ScorerDefinitionError, match="two scorers are named 'greeting'"):
        registry.add(other_greeting)
    sys.modules.pop("my_scorers", None)


def test_local_runner_with_named_defaults() -> None:
    runner = LocalRunner(FakeScorer)
    runner.add("half", FakeScorer, {"reward": 0.5})
    assert runner.score("half").reward == 0.5
    assert runner.score("half", params={"reward": 0.25}).reward == 0.25
    with pytest.raises(ScorerDefinitionError, match="bogus"):
        runner.add("broken", FakeScorer, {"bogus": 1})


@pytest.mark.parametrize(
    "tests, kind",
    [
        pytest.param({"assert_program": "assert f(1) == 2"}, "assert_program", id="assert"),
        pytest.param({"io_cases": [{"input": "1\n", "output": "2\n"}]}, "io_cases", id="io"),
        pytest.param(
            {"call_cases": {"fn_name": "f", "inputs": [[1]], "outputs": [2]}}, "call_cases", id="call"
        ),
    ],
)
def test_test_suite_forms_round_trip(tests: dict, kind: str) -> None:  # type: ignore[type-arg]
    suite = TestSuite.from_value(tests)
    assert suite.kind == kind
    assert suite.to_dict() == tests


@pytest.mark.parametrize(
    "tests, message",
    [
        pytest.param({}, "exactly one", id="empty"),
        pytest.param({"assert_program": "x", "io_cases": []}, "exactly one", id="two-kinds"),
        pytest.param(
            {"call_cases": {"fn_name": "f", "inputs": [[1]], "outputs": []}}, "pair up", id="unpaired"
        ),
        pytest.param({"io_cases": [{"input": 1, "output": "2"}]}, "string", id="io-types"),
        pytest.param({"unit_tests": "x"}, "unknown", id="unknown-key"),
    ],
)
def test_test_suite_errors(tests: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises((TypeError, ValueError), match=message):
        TestSuite.from_value(tests)


def test_sample_text_views_of_chats() -> None:
    sample = Sample.build(
        [
            {"role": "assistant", "content": "first"},
            {"role": "user", "content": "more"},
            {"role": "assistant", "content": "final"},
        ],
        prompt=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    assert sample.completion_text == "final"
    assert sample.prompt_text == "be brief\nhi"
    with pytest.raises(TypeError, match="completion"):
        Sample.build(12)


def test_status_groups() -> None:
    assert not Status.OK.is_infrastructure_failure
    assert not Status.TIMEOUT.is_infrastructure_failure
    assert Status.SCORER_ERROR.is_infrastructure_failure
    assert Status.OVERLOADED.is_infrastructure_failure
    with pytest.raises(ValueError):
        ScoreResult(reward=float("inf"))
