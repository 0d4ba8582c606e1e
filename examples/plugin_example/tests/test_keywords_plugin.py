"""The example plugin, tested the two ways a plugin author would: the scorer alone
with the SDK's local runner, and served by a real server that found it through
its entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from arbiter_keywords.scorers import StartsWithAnswer, keywords
from reward_server.embedded import EmbeddedServer
from sdk import ENTRY_POINT_GROUP, RewardClient, Status
from sdk.testing import LocalRunner, assert_reward


def test_keywords_share() -> None:
    result = assert_reward(keywords, 0.5, "Paris is in France", params={"keywords": ["paris", "berlin"]})
    assert result.details["missing"] == ["berlin"]


@pytest.mark.parametrize(
    "completion, params, expected",
    [
        pytest.param("Parisian", {"keywords": ["paris"]}, 0.0, id="whole-word-by-default"),
        pytest.param("Parisian", {"keywords": ["paris"], "whole_words": False}, 1.0, id="substring"),
        pytest.param("paris", {"keywords": ["Paris"], "case_sensitive": True}, 0.0, id="case-sensitive"),
        pytest.param("PARIS", {"keywords": ["Paris"]}, 1.0, id="case-insensitive-by-default"),
        pytest.param("I like C++ and C#.", {"keywords": ["C++", "C#"]}, 1.0, id="symbols-at-word-edges"),
        pytest.param("I like C++x", {"keywords": ["C++"]}, 0.0, id="symbol-keyword-inside-a-word"),
    ],
)
def test_keywords_matching_rules(completion: str, params: dict[str, object], expected: float) -> None:
    assert_reward(keywords, expected, completion, params=params)


def test_keywords_without_keywords_is_invalid_input() -> None:
    result = assert_reward(keywords, 0.0, "x", status=Status.INVALID_INPUT)
    assert "params.keywords" in result.reason


@pytest.mark.parametrize(
    "completion, reference, expected",
    [
        pytest.param("42, because 6 x 7", "42", 1.0, id="answer-first"),
        pytest.param("  Yes. It is.", "yes", 1.0, id="leading-space-and-case"),
        pytest.param("Because 6 x 7, 42", "42", 0.0, id="answer-last"),
        pytest.param("420 is wrong", "42", 0.0, id="longer-number-is-not-the-answer"),
    ],
)
def test_starts_with_answer(completion: str, reference: str, expected: float) -> None:
    assert_reward(StartsWithAnswer, expected, completion, reference=reference)


def test_starts_with_answer_needs_a_reference() -> None:
    assert_reward(StartsWithAnswer, 0.0, "42", status=Status.INVALID_INPUT)


def test_configured_defaults_as_a_server_would_apply_them() -> None:
    runner = LocalRunner(StartsWithAnswer)
    runner.add("colours", keywords, defaults={"keywords": ["red", "green", "blue"]})
    assert runner.score("colours", "red, green").reward == pytest.approx(2 / 3)
    assert runner.score("colours", "red", params={"keywords": ["red"]}).reward == 1.0
    assert runner.score("starts_with_answer", "4 apples", reference="4").reward == 1.0


def _installed() -> bool:
    return any(p.value == "arbiter_keywords.scorers" for p in entry_points(group=ENTRY_POINT_GROUP))


@pytest.mark.skipif(
    not _installed(),
    reason="arbiter-plugin-example is not installed (no arbiter.scorers entry point):"
    " pip install -e examples/plugin_example",
)
def test_served_through_its_entry_point() -> None:
    with EmbeddedServer() as server, RewardClient(server.target) as client:
        infos = {info.name: info for info in client.list_scorers()}
        results = client.score_batch(
            [
                {
                    "scorer": "keywords",
                    "completion": "red and blue",
                    "params": {"keywords": ["red", "green"]},
                },
                {"scorer": "starts_with_answer", "completion": "42, since 6 x 7", "reference": "42"},
                {"scorer": "keywords", "completion": "red"},
            ]
        )
    assert {"keywords", "starts_with_answer"} <= set(infos)
    assert infos["keywords"].description == "Share of the required keywords that the completion mentions."
    assert "keywords" in infos["keywords"].params_schema["properties"]
    assert [(r.status, r.reward) for r in results[:2]] == [(Status.OK, 0.5), (Status.OK, 1.0)]
    assert results[0].details["missing"] == ["green"]
    assert results[2].status is Status.INVALID_INPUT  # a bad sample is data, not a crash
