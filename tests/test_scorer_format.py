"""The format scorer in-process: each check, partial credit, and hostile patterns."""

from __future__ import annotations

import time
from typing import Any

import pytest

from reward_server.scorers.format import FormatScorer
from sdk import Status
from sdk.testing import assert_reward

THINK_ANSWER = "<think>2+2 is 4</think>\n<answer>4</answer>"


@pytest.mark.parametrize(
    "completion, params, reward",
    [
        pytest.param("answer: 42", {"pattern": r"\d+"}, 1.0, id="search"),
        pytest.param("answer: 42", {"pattern": r"\d+", "mode": "match"}, 0.0, id="match-anchors-start"),
        pytest.param("42", {"pattern": r"\d+", "mode": "fullmatch"}, 1.0, id="fullmatch"),
        pytest.param("ANSWER", {"pattern": "answer", "flags": ["IGNORECASE"]}, 1.0, id="flags"),
        pytest.param(THINK_ANSWER, {"tags": ["think", "answer"]}, 1.0, id="tags"),
        pytest.param("<answer>4</answer>", {"tags": ["think", "answer"]}, 0.0, id="tag-missing"),
        pytest.param(
            "<answer>4</answer><think>x</think>", {"tags": ["think", "answer"]}, 0.0, id="tags-out-of-order"
        ),
        pytest.param(
            "<answer>4</answer><think>x</think>",
            {"tags": ["think", "answer"], "tags_in_order": False},
            1.0,
            id="tags-any-order",
        ),
        pytest.param(
            THINK_ANSWER + "<answer>5</answer>",
            {"tags": ["answer"], "exactly_once": True},
            0.0,
            id="tag-repeated",
        ),
        pytest.param('{"a": 1}', {"json": True}, 1.0, id="json"),
        pytest.param('Here:\n```json\n{"a": 1}\n```', {"json": True}, 1.0, id="json-fenced"),
        pytest.param('{"a": 1', {"json": True}, 0.0, id="json-invalid"),
        pytest.param('{"a": 1}', {"json_schema": {"type": "object", "required": ["a"]}}, 1.0, id="schema-ok"),
        pytest.param(
            '{"b": 1}', {"json_schema": {"type": "object", "required": ["a"]}}, 0.0, id="schema-fails"
        ),
        pytest.param("", {"pattern": r"\d"}, 0.0, id="empty-completion"),
    ],
)
def test_checks(completion: str, params: dict[str, Any], reward: float) -> None:
    assert_reward(FormatScorer, reward, completion, params=params)


def test_partial_credit_is_the_fraction_of_checks_passed() -> None:
    params = {"pattern": r"\d+", "tags": ["think", "answer"], "json": True, "partial_credit": True}
    result = assert_reward(FormatScorer, 2 / 3, THINK_ANSWER, params=params)
    assert result.details["checks"] == {"pattern": True, "tags": True, "json": False}


def test_catastrophic_pattern_is_a_timeout_quickly() -> None:
    started = time.perf_counter()
    assert_reward(FormatScorer, 0.0, "a" * 60 + "b", params={"pattern": r"(a|aa)+$"}, status=Status.TIMEOUT)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "params, message",
    [
        pytest.param({}, "at least one check", id="no-checks"),
        pytest.param({"pattern": "("}, "invalid pattern", id="bad-regex"),
        pytest.param({"json_schema": {"type": 12}}, "not a valid schema", id="bad-schema"),
    ],
)
def test_bad_params_are_invalid_input(params: dict[str, Any], message: str) -> None:
    result = assert_reward(FormatScorer, 0.0, "{}", params=params, status=Status.INVALID_INPUT)
    assert message in result.reason


def test_catastrophic_pattern_inside_a_json_schema_is_a_timeout() -> None:
    schema = {"properties": {"a": {"type": "string", "pattern": "^(a|aa)+$"}}}
    started = time.perf_counter()
    completion = '{"a": "' + "a" * 60 + '!"}'
    assert_reward(FormatScorer, 0.0, completion, params={"json_schema": schema}, status=Status.TIMEOUT)
    assert time.perf_counter() - started < 1.0
    keyed = {"patternProperties": {"^(a|aa)+$": {"type": "integer"}}}
    assert_reward(
        FormatScorer, 0.0, '{"' + "a" * 60 + '!": 1}', params={"json_schema": keyed}, status=Status.TIMEOUT
    )
    assert_reward(FormatScorer, 1.0, '{"a": "aaa"}', params={"json_schema": schema})
