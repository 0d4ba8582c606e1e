"""The ``math`` scorer: is the completion's final answer equal to the reference?

math-verify does the work (LaTeX and plain answers, ``\\boxed{}``, fractions vs
decimals, sets and intervals, units stripped); a small sympy path decides plain
expressions math-verify cannot parse. The gold answer is the sample's reference.

Time limits. math-verify bounds its own work with ``signal.alarm``, which works
only on a process's main thread and with whole seconds. The server runs this
scorer in worker processes, on their main thread, so those alarms are used and a
slow comparison becomes a TIMEOUT result. ``timeout_s`` is one budget for the whole
sample (parsing both sides, comparing, the sympy path), rounded up to whole seconds
for each alarm. Anywhere else (a thread of a user's
program) the alarms are switched off and the caller must bound the call: the
server's worker pool also kills a worker that overruns the scorer's ``timeout_s``.

A timeout is a TIMEOUT status, never a reward of 0: math-verify's own habit of
returning False on timeout is turned off (``raise_on_error``).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

import regex
import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from math_verify.utils import timeout as mv_timeout
from pydantic import BaseModel, ConfigDict, Field
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from sdk import Sample, SampleError, Scorer, ScoreResult

__all__ = ["MathParams", "MathScorer"]

T = TypeVar("T")

_LATEX_MARKERS = ("$", "\\(", "\\[", "\\boxed")
# The sympy path evaluates text with parse_expr (which uses eval), so it accepts
# only short arithmetic: digits, operators, brackets, single-letter variables and
# a few function names. Anything else is left to math-verify alone.
_PLAIN = regex.compile(r"^[0-9A-Za-z+\-*/^().,\s]{1,200}$")
_WORDS = regex.compile(r"[A-Za-z]+")
_FUNCTIONS = frozenset({"sqrt", "sin", "cos", "tan", "log", "ln", "exp", "pi", "E", "I"})
_BAD_DOT = regex.compile(r"(?<!\d)\.|\.(?!\d)")
_BOXED = regex.compile(r"\\boxed\s*\{((?:[^{}]|\{(?1)\})*)\}")
_BARE_MAX = 200
_PROSE = regex.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_TRANSFORMS = (*standard_transformations, implicit_multiplication_application, convert_xor)


class _DropTimeoutDisabledNotice(logging.Filter):
    """math-verify warns whenever its alarms are off; here they are off on purpose,
    because every call is bounded by ``_bounded`` or by the worker pool's hard kill."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledNotice())


class MathParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="time budget per sample on a main thread (math-verify's alarms; whole seconds each)",
    )
    float_rounding: int = Field(6, ge=0, le=30)
    numeric_precision: int = Field(15, ge=1, le=100)
    strict: bool = Field(True, description="math-verify strict mode (variables matter)")
    answer_extraction: Literal["auto", "boxed"] = Field(
        "auto",
        description="'boxed': only a \\boxed{} answer counts;"
        " 'auto': also final-answer phrases and bare values",
    )
    fallback_sympy: bool = Field(
        True, description="decide plain expressions with sympy when math-verify cannot"
    )


class _Budget:
    """What is left of ``timeout_s`` for one sample; ``None`` off the main thread,
    where alarms cannot work and the caller (the worker pool) bounds the call."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def alarm_seconds(self) -> int | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"math-verify gave up after {self.seconds:g}s")
        return max(1, math.ceil(left))


def _bounded(fn: Callable[[], T], budget: _Budget) -> T:
    """Run ``fn`` under math-verify's alarm when allowed, converting its timeout."""
    seconds = budget.alarm_seconds()
    try:
        if seconds is None:
            return fn()
        return cast(T, mv_timeout(seconds)(fn)())
    except TimeoutException as exc:
        raise TimeoutError(f"math-verify gave up after {budget.seconds:g}s") from exc


def _is_plain(text: str) -> bool:
    if not _PLAIN.match(text) or _BAD_DOT.search(text):
        return False
    return all(len(word) == 1 or word in _FUNCTIONS for word in _WORDS.findall(text))


def _is_bare_answer(text: str) -> bool:
    """Short, one line, no LaTeX delimiters and no prose (words outside ``\\commands``)."""
    stripped = text.strip()
    return (
        0 < len(stripped) <= _BARE_MAX
        and "\n" not in stripped
        and not any(marker in stripped for marker in _LATEX_MARKERS)
        and not _PROSE.search(stripped)
    )


def _sympy(text: str) -> Any:
    return parse_expr(text.replace("ln", "log"), transformations=_TRANSFORMS, evaluate=True)


class MathScorer(Scorer):
    """Final-answer equivalence with math-verify (LaTeX, boxed, fractions, sets, units), plus sympy."""

    name = "math"
    Params = MathParams
    cpu_bound = True

    def score(self, sample: Sample, params: MathParams) -> ScoreResult:
        gold_text = (sample.reference or "").strip()
        if not gold_text:
            raise SampleError("math needs the gold answer in the sample's reference")
        completion = sample.completion_text
        on_main_thread = threading.current_thread() is threading.main_thread()
        budget = _Budget(params.timeout_s if on_main_thread else None)
        gold = self._parse_gold(gold_text, budget)
        answer = self._parse_answer(completion, params, budget)
        details: dict[str, Any] = {"gold": [str(g) for g in gold], "extracted": [str(a) for a in answer]}
        if gold and answer:
            equal = self._verify(gold, answer, params, budget, details)
            if equal or not params.fallback_sympy:
                details["decided_by"] = "math_verify"
                return ScoreResult(reward=float(equal), details=details)
        if params.fallback_sympy:
            decided = self._sympy_equal(gold_text, completion, budget)
            if decided is not None:
                equal, sympy_gold, sympy_answer = decided
                details.update(gold=[sympy_gold], extracted=[sympy_answer], decided_by="sympy")
                return ScoreResult(reward=float(equal), details=details)
        if not gold:
            raise SampleError(f"reference {gold_text[:200]!r} could not be parsed as a math answer")
        details["decided_by"] = "math_verify"
        if not answer:
            details["extracted"] = None
            details["note"] = "no answer found in the completion"
        return ScoreResult(reward=0.0, details=details)

    @staticmethod
    def _parse_gold(text: str, budget: _Budget) -> list[Any]:
        # A bare "x^2+2x+1" parses to nothing with LaTeX extraction: try it in $...$ too.
        # No fallback to the raw string: a gold answer that is not math is refused.
        candidates = [text] if text.startswith(_LATEX_MARKERS) else [f"${text}$", text]
        for candidate in candidates:
            parsed: list[Any] = _bounded(
                functools.partial(parse, candidate, fallback_mode="no_fallback", parsing_timeout=None),
                budget,
            )
            if parsed:
                return parsed
        return []

    @staticmethod
    def _parse_answer(text: str, params: MathParams, budget: _Budget) -> list[Any]:
        if not text.strip():
            return []
        if params.answer_extraction == "boxed":
            config: list[Any] = [
                LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)
            ]
        else:
            config = [LatexExtractionConfig(), ExprExtractionConfig()]
        parsed: list[Any] = _bounded(
            lambda: parse(text, extraction_config=config, parsing_timeout=None), budget
        )
        if params.answer_extraction == "boxed" and "\\boxed" not in text:
            return []
        if not parsed and _is_bare_answer(text):
            # A completion that is only an answer ("[1,2)", "x^2+2x+1") has no
            # delimiters for the LaTeX extraction to anchor on; read it as math.
            wrapped = f"${text.strip()}$"
            parsed = _bounded(lambda: parse(wrapped, extraction_config=config, parsing_timeout=None), budget)
        return parsed

    @staticmethod
    def _verify(
        gold: list[Any], answer: list[Any], params: MathParams, budget: _Budget, details: dict[str, Any]
    ) -> bool:
        try:
            return bool(
                _bounded(
                    lambda: verify(
                        gold,
                        answer,
                        float_rounding=params.float_rounding,
                        numeric_precision=params.numeric_precision,
                        strict=params.strict,
                        timeout_seconds=None,
                        raise_on_error=True,
                    ),
                    budget,
                )
            )
        except TimeoutError:
            raise
        except Exception as exc:  # math-verify's own rule: a comparison that errors is unequal
            details["comparison_error"] = f"{type(exc).__name__}: {exc}"[:300]
            return False

    @staticmethod
    def _sympy_equal(gold_text: str, completion: str, budget: _Budget) -> tuple[bool, str, str] | None:
        """(equal, gold, answer) when both sides are plain expressions sympy can read; else None."""
        boxed = _BOXED.findall(completion)
        answer_text = boxed[-1].strip() if boxed else completion.strip()
        if not (_is_plain(gold_text) and _is_plain(answer_text)):
            return None

        def compare() -> tuple[bool, str, str] | None:
            try:
                gold, answer = _sympy(gold_text), _sympy(answer_text)
                equal = sympy.simplify(gold - answer) == 0 or gold.equals(answer) is True
            except Exception:  # not an expression sympy can compare: undecided (the alarm is a BaseException)
                return None
            return bool(equal), str(gold), str(answer)

        return _bounded(compare, budget)
