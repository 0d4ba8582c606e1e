"""The format scorer in-process: each check, partial credit, and hostile patterns."""

from __future__ import annotations

import time
from typing import Any

import pytest

from reward_server.scorers.format import FormatScorer
from sdk import Status
from sdk.testing import assert_reward

THINK_ANSWER = "<think>2+2 is 4</think>\n<answer>4</answer>"
STRING_PATTERN = {"properties": {"a": {"type": "string", "pattern": "^x"}}}
PATTERN_KEYS = {"patternProperties": {"^a": {"type": "integer"}}, "additionalProperties": False}
LOCAL_REF = {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
NESTED = {"items": {"$ref": "#"}}


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
        pytest.param("{}", {"json_valid": True}, 1.0, id="json-by-field-name"),
        pytest.param('{"a": "x1"}', {"json_schema": STRING_PATTERN}, 1.0, id="schema-pattern-ok"),
        pytest.param('{"a": "1x"}', {"json_schema": STRING_PATTERN}, 0.0, id="schema-pattern-fails"),
        pytest.param('{"ab": 1}', {"json_schema": PATTERN_KEYS}, 1.0, id="schema-pattern-keys-ok"),
        pytest.param('{"ab": 1, "z": 2}', {"json_schema": PATTERN_KEYS}, 0.0, id="schema-extra-key"),
        pytest.param('{"ab": "1"}', {"json_schema": PATTERN_KEYS}, 0.0, id="schema-pattern-key-type"),
        pytest.param('{"a": 1}', {"json_schema": LOCAL_REF}, 1.0, id="schema-local-ref-ok"),
        pytest.param('{"a": "1"}', {"json_schema": LOCAL_REF}, 0.0, id="schema-local-ref-fails"),
        pytest.param("[" * 900 + "]" * 900, {"json_schema": NESTED}, 0.0, id="schema-too-deep"),
        pytest.param("[" * 5000 + "]" * 5000, {"json": True}, 0.0, id="json-too-deep"),
    ],
)
def test_checks(completion: str, params: dict[str, Any], reward: float) -> None:
    assert_reward(FormatScorer, reward, completion, params=params)


def test_partial_credit_is_the_fraction_of_checks_passed() -> None:
    params = {"pattern": r"\d+", "tags": ["think", "answer"], "json": True, "partial_credit": True}
    result = assert_reward(FormatScorer, 2 / 3, THINK_ANSWER, params=params)
    assert result.details["checks"] == {"pattern": True, "tags": True, "json": False}


# (a+)+$ is the textbook case, but the regex module defuses it; (a|aa)+$ it cannot.
@pytest.mark.parametrize(
    "completion, params",
    [
        pytest.param("a" * 60 + "b", {"pattern": r"(a|aa)+$"}, id="pattern"),
        pytest.param(
            '{"' + "a" * 60 + 'b": 1}',
            # additionalProperties matches keys against patternProperties with re too;
            # first here, it ran exponentially before patternProperties could time out
            {"json_schema": {"additionalProperties": {}, "patternProperties": {"^(a|aa)+$": {}}}},
            id="schema-additional-properties",
        ),
    ],
)
def test_catastrophic_pattern_is_a_timeout_quickly(completion: str, params: dict[str, Any]) -> None:
    started = time.perf_counter()
    result = assert_reward(FormatScorer, 0.0, completion, params=params, status=Status.TIMEOUT)
    assert time.perf_counter() - started < 1.0
    assert "0.1s" in result.reason


@pytest.mark.parametrize(
    "params, message",
    [
        pytest.param({}, "at least one check", id="no-checks"),
        pytest.param({"pattern": "("}, "invalid pattern", id="bad-regex"),
        pytest.param({"json_schema": {"type": 12}}, "not a valid schema", id="bad-schema"),
        pytest.param({"json_schema": {"pattern": "(?<"}}, "not a valid schema", id="bad-schema-regex"),
        pytest.param({"json_schema": {"$ref": "#/$defs/none"}}, "does not resolve", id="dangling-ref"),
        # never fetched: a request must not make the server open URLs (or block its loop on one)
        pytest.param({"json_schema": {"$ref": "http://127.0.0.1:9/s.json"}}, "not fetched", id="remote-ref"),
        pytest.param(
            {"json_schema": {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}},
            "not supported",
            id="unevaluated-with-pattern-properties",
        ),
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
