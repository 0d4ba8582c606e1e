"""Plain data types shared by scorers, the client and the server.

They are frozen dataclasses: a sample or result is a value, safe to pass between
threads, pickle into worker processes and compare in tests.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "CallCases",
    "Content",
    "IoCase",
    "Message",
    "Sample",
    "ScoreResult",
    "ScorerInfo",
    "Status",
    "TestSuite",
    "content_from_value",
]


class Status(enum.IntEnum):
    """Outcome of scoring one sample (numbers match ``arbiter.reward.v1.Status``).

    Three groups, kept apart on purpose:

    * scored: ``OK`` (any reward, 0 included);
    * the model's output was bad: ``TIMEOUT``, ``SANDBOX_VIOLATION``
      (``is_bad_output``); a trainer may treat these as a reward of 0;
    * the request was unusable: ``INVALID_INPUT`` (a missing reference, bad params,
      malformed tests, an oversized sample); a fix of the data or config, never a
      reward: trainers leave the sample out, as for
    * the infrastructure failing: ``SCORER_ERROR``, ``UNKNOWN_SCORER``, ``OVERLOADED``,
      ``DEADLINE_EXCEEDED``, ``INTERNAL`` (``is_infrastructure_failure``); a trainer
      must not learn from these.
    """

    UNSPECIFIED = 0
    OK = 1
    INVALID_INPUT = 2
    TIMEOUT = 3
    SCORER_ERROR = 4
    SANDBOX_VIOLATION = 5
    UNKNOWN_SCORER = 6
    OVERLOADED = 7
    DEADLINE_EXCEEDED = 8
    INTERNAL = 9

    @property
    def is_infrastructure_failure(self) -> bool:
        """True when the service failed: no reward should be learned from this result."""
        return self in _INFRASTRUCTURE_FAILURES

    @property
    def is_bad_output(self) -> bool:
        """True when the model's output itself failed (too slow, broke sandbox rules):
        worth a reward of 0, like a wrong answer."""
        return self in _BAD_OUTPUTS


_BAD_OUTPUTS = frozenset({Status.TIMEOUT, Status.SANDBOX_VIOLATION})
_INFRASTRUCTURE_FAILURES = frozenset(
    {
        Status.UNSPECIFIED,
        Status.SCORER_ERROR,
        Status.UNKNOWN_SCORER,
        Status.OVERLOADED,
        Status.DEADLINE_EXCEEDED,
        Status.INTERNAL,
    }
)


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str


Content = Union[str, tuple[Message, ...]]
"""Text, or a conversation as a tuple of messages."""


def content_from_value(value: Any, *, field_name: str) -> Content:
    """Accept text, ``Message`` objects or ``{"role", "content"}`` dicts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        messages = []
        for index, item in enumerate(value):
            if isinstance(item, Message):
                messages.append(item)
            elif isinstance(item, Mapping) and isinstance(item.get("role"), str):
                content = item.get("content", "")
                if not isinstance(content, str):
                    raise TypeError(f"{field_name}[{index}].content must be a string")
                messages.append(Message(role=item["role"], content=content))
            else:
                raise TypeError(
                    f"{field_name}[{index}] must be a Message or a dict with 'role' and 'content'"
                )
        return tuple(messages)
    raise TypeError(f"{field_name} must be a string or a list of chat messages, not {type(value).__name__}")


@dataclass(frozen=True)
class IoCase:
    """One stdin/stdout case."""

    input: str
    output: str


@dataclass(frozen=True)
class CallCases:
    """Function-call cases: ``fn_name(*inputs[i]) == outputs[i]``, values as JSON data."""

    fn_name: str
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]


@dataclass(frozen=True)
class TestSuite:
    """Structured test cases for code scorers; exactly one kind is set.

    In the client a suite is written as a dict: ``{"assert_program": str}``,
    ``{"io_cases": [{"input": str, "output": str}, ...]}`` or
    ``{"call_cases": {"fn_name": str, "inputs": [...], "outputs": [...]}}``, plus an
    optional ``"options"`` dict.
    """

    __test__ = False  # not a pytest test class

    assert_program: str | None = None
    io_cases: tuple[IoCase, ...] | None = None
    call_cases: CallCases | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds = [k for k in ("assert_program", "io_cases", "call_cases") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a test suite needs exactly one of assert_program, io_cases, call_cases"
                f" (got {', '.join(kinds) or 'none'})"
            )

    @property
    def kind(self) -> str:
        """``"assert_program"``, ``"io_cases"`` or ``"call_cases"``."""
        if self.assert_program is not None:
            return "assert_program"
        return "io_cases" if self.io_cases is not None else "call_cases"

    @classmethod
    def from_value(cls, value: TestSuite | Mapping[str, Any]) -> TestSuite:
        """Build from the client's dict form (or pass a suite through)."""
        if isinstance(value, TestSuite):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"tests must be a dict, not {type(value).__name__}")
        unknown = set(value) - {"assert_program", "io_cases", "call_cases", "options"}
        if unknown:
            raise ValueError(f"unknown test suite keys: {', '.join(sorted(unknown))}")
        options = value.get("options") or {}
        if not isinstance(options, Mapping):
            raise TypeError("tests.options must be a dict")
        io_cases = None
        if value.get("io_cases") is not None:
            io_cases = tuple(_io_case(case, i) for i, case in enumerate(value["io_cases"]))
        call_cases = None
        if value.get("call_cases") is not None:
            call_cases = _call_cases(value["call_cases"])
        program = value.get("assert_program")
        if program is not None and not isinstance(program, str):
            raise TypeError("tests.assert_program must be a string")
        return cls(assert_program=program, io_cases=io_cases, call_cases=call_cases, options=dict(options))

    def to_dict(self) -> dict[str, Any]:
        """The client's dict form."""
        out: dict[str, Any] = {}
        if self.assert_program is not None:
            out["assert_program"] = self.assert_program
        if self.io_cases is not None:
            out["io_cases"] = [{"input": c.input, "output": c.output} for c in self.io_cases]
        if self.call_cases is not None:
            out["call_cases"] = {
                "fn_name": self.call_cases.fn_name,
                "inputs": list(self.call_cases.inputs),
                "outputs": list(self.call_cases.outputs),
            }
        if self.options:
            out["options"] = dict(self.options)
        return out


def _io_case(case: Any, index: int) -> IoCase:
    if isinstance(case, IoCase):
        return case
    if (
        not isinstance(case, Mapping)
        or not isinstance(case.get("input"), str)
        or not isinstance(case.get("output"), str)
    ):
        raise TypeError(f"tests.io_cases[{index}] must be a dict with string 'input' and 'output'")
    return IoCase(input=case["input"], output=case["output"])


def _call_cases(value: Any) -> CallCases:
    if isinstance(value, CallCases):
        return value
    if not isinstance(value, Mapping) or not isinstance(value.get("fn_name"), str):
        raise TypeError("tests.call_cases must be a dict with a string 'fn_name'")
    inputs, outputs = value.get("inputs", []), value.get("outputs", [])
    if not isinstance(inputs, Sequence) or not isinstance(outputs, Sequence):
        raise TypeError("tests.call_cases inputs and outputs must be lists")
    if len(inputs) != len(outputs):
        raise ValueError(
            f"tests.call_cases has {len(inputs)} inputs but {len(outputs)} outputs; they must pair up"
        )
    return CallCases(fn_name=value["fn_name"], inputs=tuple(inputs), outputs=tuple(outputs))


@dataclass(frozen=True)
class Sample:
    """Everything a scorer may look at for one model output."""

    completion: Content = ""
    prompt: Content = ""
    reference: str | None = None
    tests: TestSuite | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        completion: Any = "",
        *,
        prompt: Any = "",
        reference: str | None = None,
        tests: TestSuite | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Sample:
        """Build from loose client-side values, checking their types."""
        if reference is not None and not isinstance(reference, str):
            raise TypeError(f"reference must be a string, not {type(reference).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        return cls(
            completion=content_from_value(completion, field_name="completion"),
            prompt=content_from_value(prompt, field_name="prompt"),
            reference=reference,
            tests=None if tests is None else TestSuite.from_value(tests),
            metadata=dict(metadata or {}),
        )

    @property
    def completion_text(self) -> str:
        """The completion as text: the last assistant message of a conversation."""
        return _as_text(self.completion)

    @property
    def prompt_text(self) -> str:
        """The prompt as text: a conversation's messages joined by newlines."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(m.content for m in self.prompt)


def _as_text(content: Content) -> str:
    if isinstance(content, str):
        return content
    for message in reversed(content):
        if message.role == "assistant":
            return message.content
    return content[-1].content if content else ""


@dataclass(frozen=True)
class ScoreResult:
    """The outcome of scoring one sample.

    ``reward`` is meaningful only when ``status`` is ``Status.OK``; otherwise it is
    0.0 and ``reason`` says why. ``components`` holds the unweighted rewards of a
    composite's parts.
    """

    reward: float
    status: Status = Status.OK
    reason: str = ""
    components: Mapping[str, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    scorer: str = ""
    queued_ms: float = 0.0
    scoring_ms: float = 0.0
    request_id: str = ""

    @property
    def ok(self) -> bool:
        """True when the sample was scored."""
        return self.status is Status.OK

    @classmethod
    def failure(cls, status: Status, reason: str, *, scorer: str = "", **extra: Any) -> ScoreResult:
        """A result with no reward: ``status`` and its ``reason``."""
        if status is Status.OK:
            raise ValueError("a failure needs a status other than OK")
        return cls(reward=0.0, status=status, reason=reason, scorer=scorer, **extra)

    def __post_init__(self) -> None:
        if not isinstance(self.reward, (int, float)) or not math.isfinite(self.reward):
            raise ValueError(f"reward must be a finite number, not {self.reward!r}")
        for name, value in self.components.items():
            if not isinstance(name, str) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"components must map names to finite numbers; got {name!r}: {value!r}")


@dataclass(frozen=True)
class ScorerInfo:
    """What the server says about one loaded scorer."""

    name: str
    type: str
    description: str
    params_schema: Mapping[str, Any]
    default_params: Mapping[str, Any]
    cpu_bound: bool
