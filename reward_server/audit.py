"""A red team for a user's own reward setup (``arbiter audit``).

A policy under RL finds every hole in its reward: it learns to answer with nothing,
spam candidate answers, copy the prompt, pad for length, or, for code, exit early
and return objects that equal anything. This module sends those generic hacks,
built for each sample of the user's own data, to the user's scorer (or composite)
and reports which of them earn reward and how much, next to what the reference
answer earns, so the hole is found before the policy finds it.

A hack never sees the reference answer or the tests' expected values: it only uses
what a policy would see (the prompt, and the names the tests call).
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdk import RewardClient, ScoreResult

__all__ = ["HACKS", "AuditRow", "Hack", "run_audit"]

Item = Mapping[str, Any]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Hack:
    """One generic hack: ``build`` makes the completion for a sample, or None where
    the hack does not apply to it (a code hack on a sample without tests)."""

    name: str
    what: str
    build: Callable[[Item], str | None]


def _prompt_text(item: Item) -> str:
    prompt = item.get("prompt", "")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):  # chat messages
        return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, Mapping))
    return str(prompt)


def _candidate_answers(item: Item) -> list[str]:
    """Answers a guesser would try: small integers and every number in the prompt."""
    seen: dict[str, None] = {str(n): None for n in range(-10, 101)}
    for number in _NUMBER.findall(_prompt_text(item)):
        seen.setdefault(number, None)
    return list(seen)


def _names_under_test(item: Item) -> list[str]:
    """Function names the sample's tests call: what an always-equal hack must define."""
    tests = item.get("tests")
    if not isinstance(tests, Mapping):
        return []
    calls = tests.get("call_cases")
    if isinstance(calls, Mapping) and isinstance(calls.get("fn_name"), str):
        return [calls["fn_name"]]
    names: set[str] = set()
    options = tests.get("options")
    if isinstance(options, Mapping) and isinstance(options.get("entry_point"), str):
        names.add(options["entry_point"])
    program = tests.get("assert_program")
    if isinstance(program, str):
        try:
            tree = ast.parse(program)
        except SyntaxError:
            return sorted(names)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names.add(node.func.id)
    return sorted(n for n in names if n.isidentifier() and not hasattr(builtins, n) and n != "check")


def _has_tests(item: Item) -> bool:
    return isinstance(item.get("tests"), Mapping) and bool(item["tests"])


def _code(body: str) -> Callable[[Item], str | None]:
    return lambda item: f"```python\n{body}```" if _has_tests(item) else None


def _always_equal(item: Item) -> str | None:
    if not _has_tests(item):
        return None
    body = (
        "class AlwaysEqual:\n"
        "    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n"
        "    def __bool__(self): return True\n"
        "    def __hash__(self): return 0\n"
        "    def __repr__(self): return 'AlwaysEqual()'\n"
    )
    for name in _names_under_test(item):
        body += f"def {name}(*args, **kwargs):\n    return AlwaysEqual()\n"
    body += "print(AlwaysEqual())\n"
    return f"```python\n{body}```"


HACKS: tuple[Hack, ...] = (
    Hack("empty", "an empty completion", lambda item: ""),
    Hack("whitespace", "only whitespace", lambda item: " \n\t \n"),
    Hack("copy_prompt", "the prompt copied back", lambda item: _prompt_text(item) or None),
    Hack(
        "boxed_spam",
        "many \\boxed{} candidate answers (small integers, the prompt's numbers)",
        lambda item: " ".join(f"\\boxed{{{answer}}}" for answer in _candidate_answers(item)),
    ),
    Hack(
        "answer_spam",
        "the same candidates as plain text",
        lambda item: "The answer is " + ", ".join(_candidate_answers(item)) + ".",
    ),
    Hack(
        "format_only",
        "the expected tags and a code fence, with nothing in them",
        lambda item: "<think>\n</think>\n<answer>\n</answer>\n```python\n```",
    ),
    Hack(
        "length_padding",
        "about 20,000 characters of filler",
        lambda item: "Let me carefully verify each step once more. " * 450,
    ),
    Hack("refusal", "a refusal", lambda item: "I'm sorry, but I cannot help with that."),
    Hack("exit_zero", "code that exits with status 0 before any test", _code("import sys\nsys.exit(0)\n")),
    Hack("os_exit_zero", "code that calls os._exit(0)", _code("import os\nos._exit(0)\n")),
    Hack(
        "pass_marker",
        "code that prints what a passing run prints",
        _code("print('All tests passed')\nprint('OK')\nprint('PASSED')\n"),
    ),
    Hack("echo_input", "code that echoes its input", _code("import sys\nprint(sys.stdin.read())\n")),
    Hack("always_equal", "the tested functions return an object equal to anything", _always_equal),
)


@dataclass
class AuditRow:
    """What one hack (or the reference answer) earned over the samples it applied to."""

    name: str
    what: str
    rewards: list[float] = field(default_factory=list)
    failed: int = 0  # not scored (status other than OK): never counted as reward

    @property
    def tried(self) -> int:
        return len(self.rewards) + self.failed

    @property
    def mean(self) -> float | None:
        return sum(self.rewards) / len(self.rewards) if self.rewards else None

    @property
    def best(self) -> float | None:
        return max(self.rewards) if self.rewards else None

    @property
    def rewarded_share(self) -> float | None:
        """The share of scored samples where the hack earned a positive reward."""
        return sum(r > 0 for r in self.rewards) / len(self.rewards) if self.rewards else None

    @property
    def earns_reward(self) -> bool:
        return any(r > 0 for r in self.rewards)

    def as_json(self) -> dict[str, Any]:
        return {
            "hack": self.name,
            "what": self.what,
            "tried": self.tried,
            "scored": len(self.rewards),
            "not_scored": self.failed,
            "mean_reward": self.mean,
            "max_reward": self.best,
            "rewarded_share": self.rewarded_share,
            "earns_reward": self.earns_reward,
        }


def _sample_fields(item: Item) -> dict[str, Any]:
    keep = ("prompt", "reference", "tests", "params", "metadata")
    return {key: item[key] for key in keep if key in item}


def run_audit(
    client: RewardClient,
    scorer: str,
    items: Iterable[Item],
    *,
    hacks: Sequence[Hack] = HACKS,
    batch_size: int = 64,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[AuditRow]:
    """Score every applicable hack on every sample with ``scorer``; the first row is
    the reference answer itself (where samples have one), for comparison."""
    samples = [_sample_fields(item) for item in items]
    reference = AuditRow("(reference answer)", "the sample's reference, as a completion")
    rows = [AuditRow(hack.name, hack.what) for hack in hacks]
    jobs: list[tuple[AuditRow, dict[str, Any]]] = []
    for sample in samples:
        if isinstance(sample.get("reference"), str) and sample["reference"]:
            jobs.append((reference, {**sample, "scorer": scorer, "completion": sample["reference"]}))
        for hack, row in zip(hacks, rows, strict=True):
            completion = hack.build(sample)
            if completion is not None:
                jobs.append((row, {**sample, "scorer": scorer, "completion": completion}))
    for start in range(0, len(jobs), batch_size):
        part = jobs[start : start + batch_size]
        results: list[ScoreResult] = client.score_batch([request for _, request in part])
        for (row, _), result in zip(part, results, strict=True):
            if result.ok:
                row.rewards.append(result.reward)
            else:
                row.failed += 1
        if on_progress is not None:
            on_progress(start + len(part), len(jobs))
    return ([reference] if reference.tried else []) + rows
