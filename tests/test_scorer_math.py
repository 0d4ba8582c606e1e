"""The math scorer in-process: what counts as the same answer, and what is refused."""

from __future__ import annotations

import threading

import pytest

from reward_server.scorers.math import MathScorer
from sdk import ScoreResult, Status
from sdk.testing import LocalRunner, assert_reward


@pytest.mark.parametrize(
    "completion, reference, reward",
    [
        pytest.param("The answer is \\boxed{\\frac{1}{2}}", "0.5", 1.0, id="latex-fraction-vs-decimal"),
        pytest.param("\\boxed{0.5}", "\\frac{1}{2}", 1.0, id="decimal-vs-latex-fraction"),
        pytest.param("So we get $1/2$.", "0.5", 1.0, id="plain-fraction"),
        pytest.param("\\boxed{3}", "0.5", 0.0, id="wrong"),
        pytest.param("\\boxed{5 \\text{ cm}}", "5", 1.0, id="units-stripped"),
        pytest.param("\\boxed{\\{1,2\\}}", "\\{2,1\\}", 1.0, id="sets-unordered"),
        pytest.param("\\boxed{[1, 2)}", "[1,2)", 1.0, id="interval"),
        pytest.param("\\boxed{(1, 2]}", "[1,2)", 0.0, id="interval-wrong-ends"),
        pytest.param("$\\boxed{50\\%}$", "50", 1.0, id="percent"),
        pytest.param("The final answer is 42.", "42", 1.0, id="final-answer-phrase"),
        pytest.param("The answer is $(x+1)^2$", "x^2+2x+1", 1.0, id="bare-gold-expression"),
        pytest.param("x^2+2x+1", "(x+1)^2", 1.0, id="sympy-plain-expressions"),
        pytest.param("x^2+2x+2", "(x+1)^2", 0.0, id="sympy-plain-unequal"),
        pytest.param("[1,2)", "[1,2)", 1.0, id="bare-interval-completion"),
        pytest.param("\\{1,2\\}", "\\{2,1\\}", 1.0, id="bare-set-completion"),
        pytest.param("", "2", 0.0, id="empty-completion"),
        pytest.param("I do not know", "2", 0.0, id="no-answer"),
    ],
)
def test_answers(completion: str, reference: str, reward: float) -> None:
    assert_reward(MathScorer, reward, completion, reference=reference)


def test_chat_completion_uses_last_assistant_message() -> None:
    chat = [
        {"role": "assistant", "content": "\\boxed{7}"},
        {"role": "user", "content": "sure?"},
        {"role": "assistant", "content": "Yes: \\boxed{8}"},
    ]
    assert_reward(MathScorer, 1.0, chat, reference="8")


def test_boxed_only_extraction_ignores_unboxed_answers() -> None:
    assert_reward(
        MathScorer, 0.0, "The final answer is 42.", reference="42", params={"answer_extraction": "boxed"}
    )
    assert_reward(MathScorer, 1.0, "so \\boxed{42}", reference="42", params={"answer_extraction": "boxed"})


def test_bare_expression_completion_is_read_without_sympy() -> None:
    result = assert_reward(MathScorer, 1.0, "x^2+2x+1", reference="(x+1)^2", params={"fallback_sympy": False})
    assert result.details["decided_by"] == "math_verify"


@pytest.mark.parametrize(
    "completion, reference",
    [
        pytest.param("2*x", "x*2", id="math-verify-reads-only-2"),
        pytest.param("sqrt(2)/2", "1/sqrt(2)", id="math-verify-reads-nothing"),
    ],
)
def test_sympy_decides_what_math_verify_cannot(completion: str, reference: str) -> None:
    result = assert_reward(MathScorer, 1.0, completion, reference=reference)
    assert result.details["decided_by"] == "sympy"
    assert result.details["extracted"] == [str(result.details["extracted"][0])]
    assert_reward(MathScorer, 0.0, completion, reference=reference, params={"fallback_sympy": False})


def test_fractional_time_budget_is_accepted() -> None:
    assert_reward(MathScorer, 1.0, "\\boxed{2}", reference="2", params={"timeout_s": 0.5})


def test_details_say_what_was_extracted_and_who_decided() -> None:
    result = assert_reward(MathScorer, 1.0, "\\boxed{\\frac{1}{2}}", reference="0.5")
    assert result.details["decided_by"] == "math_verify"
    assert result.details["extracted"]
    nothing = assert_reward(MathScorer, 0.0, "no idea", reference="2")
    assert nothing.details["extracted"] is None


@pytest.mark.parametrize("reference", [None, "", "   "], ids=["none", "empty", "blank"])
def test_missing_reference_is_invalid_input(reference: str | None) -> None:
    assert_reward(MathScorer, 0.0, "\\boxed{2}", reference=reference, status=Status.INVALID_INPUT)


def test_unparsable_reference_is_invalid_input() -> None:
    result = assert_reward(MathScorer, 0.0, "\\boxed{2}", reference="???", status=Status.INVALID_INPUT)
    assert "could not be parsed" in result.reason


def test_sympy_path_never_evaluates_names() -> None:
    # parse_expr uses eval: words other than a few functions never reach it
    assert_reward(MathScorer, 0.0, "exit()", reference="1")
    assert_reward(MathScorer, 0.0, "\\boxed{x.func}", reference="1")


def test_pathological_expression_is_a_timeout_not_a_zero() -> None:
    result = assert_reward(
        MathScorer,
        0.0,
        "\\boxed{9^{9^{9^{9}}}}",
        reference="1",
        params={"timeout_s": 1},
        status=Status.TIMEOUT,
    )
    assert "1s" in result.reason


def test_works_off_the_main_thread() -> None:
    # math-verify's alarms only work on the main thread; elsewhere they are switched off
    results: list[ScoreResult] = []
    thread = threading.Thread(
        target=lambda: results.append(LocalRunner(MathScorer).score("math", "\\boxed{2}", reference="2"))
    )
    thread.start()
    thread.join()
    assert results[0].status is Status.OK and results[0].reward == 1.0
