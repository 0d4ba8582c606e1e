"""The length scorer: the penalty formula, by hand."""

from __future__ import annotations

from typing import Any

import pytest

from reward_server.scorers.length import LengthScorer
from sdk.testing import assert_reward


@pytest.mark.parametrize(
    "completion, params, reward",
    [
        pytest.param("x" * 2000, {}, 0.0, id="at-limit"),
        pytest.param("x" * 2500, {}, -500.0, id="chars-over"),
        pytest.param("x" * 2500, {"penalty_per_unit": 0.001}, -0.5, id="per-unit"),
        pytest.param("x" * 2500, {"max_penalty": 100}, -100.0, id="capped"),
        pytest.param("one two three four", {"unit": "words", "limit": 3}, -1.0, id="words"),
        pytest.param("", {"limit": 0}, 0.0, id="empty"),
    ],
)
def test_penalty(completion: str, params: dict[str, Any], reward: float) -> None:
    result = assert_reward(LengthScorer, reward, completion, params=params)
    assert result.details["excess"] >= 0


def test_negative_limit_is_refused() -> None:
    from sdk import Status

    assert_reward(LengthScorer, 0.0, "x", params={"limit": -1}, status=Status.INVALID_INPUT)
