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


def test_details_hold_length_and_excess() -> None:
    # 2300 chars, limit 2000, 0.0001 per char: -0.0001 x (2300 - 2000) = -0.03
    result = assert_reward(LengthScorer, -0.03, "x" * 2300, params={"penalty_per_unit": 0.0001})
    assert result.details["length"] == 2300 and result.details["excess"] == 300
