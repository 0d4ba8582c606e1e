"""The example plugin, tested the two ways a plugin author would: the scorer alone
with the SDK's local runner, and served by a real server that found it through
its entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from arbiter_keywords.scorers import StartsWithAnswer, keywords
from reward_server.embedded import EmbeddedServer
from sdk import RewardClient, Status
from sdk.testing import assert_reward


def test_keywords_share() -> None:
    result = assert_reward(keywords, 0.5, "Paris is in France", params={"keywords": ["paris", "berlin"]})
    assert result.details["missing"] == ["berlin"]


def test_keywords_whole_words_and_case() -> None:
    assert_reward(keywords, 0.0, "Parisian", params={"keywords": ["paris"]})
    assert_reward(keywords, 1.0, "Parisian", params={"keywords": ["paris"], "whole_words": False})
    assert_reward(keywords, 0.0, "paris", params={"keywords": ["Paris"], "case_sensitive": True})


def test_keywords_without_keywords_is_invalid_input() -> None:
    assert_reward(keywords, 0.0, "x", status=Status.INVALID_INPUT)


def test_starts_with_answer() -> None:
    assert_reward(StartsWithAnswer, 1.0, "42, because 6 x 7", reference="42")
    assert_reward(StartsWithAnswer, 0.0, "Because 6 x 7, 42", reference="42")


def _installed() -> bool:
    return any(p.value == "arbiter_keywords.scorers" for p in entry_points(group="arbiter.scorers"))


@pytest.mark.skipif(not _installed(), reason="package not installed: pip install -e examples/plugin_example")
def test_served_through_its_entry_point() -> None:
    with EmbeddedServer() as server, RewardClient(server.target) as client:
        names = {info.name for info in client.list_scorers()}
        assert {"keywords", "starts_with_answer"} <= names
        result = client.score(
            scorer="keywords", completion="red and blue", params={"keywords": ["red", "green"]}
        )
    assert (result.status, result.reward) == (Status.OK, 0.5)
