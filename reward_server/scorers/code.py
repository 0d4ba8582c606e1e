"""The ``code`` scorer: run the model's program against the sample's test cases in
the sandbox, and decide every verdict on the trusted side.

Test formats (``sample.tests``):

* ``assert_program`` (Python). In the common shape (setup statements, then only
  ``assert <expression> == <literal>`` lines) every assert is its own case: the
  program computes the left-hand sides, and their ``repr`` is read back as a plain
  literal and compared here; the expected values never enter the program. Any other
  shape (HumanEval's ``def check(candidate)``, called on ``tests.options.entry_point``
  when the program does not call it; asserts on computed values; loops) runs as one
  case in two processes: the tests' process runs no solution code and calls the
  solution's functions in the other process over pipes, plain values crossing as
  literals (see ``_code_harness``). It passes only if the tests' process reaches
  the end of the tests, which the solution can neither see nor fake.
* ``io_cases``: the program reads each input on stdin; its stdout is compared here,
  token by token (whitespace-insensitive, numbers within a tolerance), exactly, or
  by a checker program (``tests.options.checker``) run in the sandbox.
* ``call_cases`` (Python): the harness calls ``fn_name(*inputs[i])`` and prints the
  return value as JSON; it is compared with the expected output here. Expected
  outputs never enter the sandbox, and an object whose ``__eq__`` always says yes
  has no JSON form, so it fails.

Modes: ``fraction`` of cases passed (default), ``all_or_nothing``, or
``first_failure`` (stop at the first failing case). Per-case verdicts are in
``details["cases"]``. A sample without test cases, or an assert program that asserts nothing, is
INVALID_INPUT, never a pass.

"""

from __future__ import annotations

import ast
import builtins
import json
import logging
import math
import re
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from sandbox import DockerSandbox, Execution, IsolationError, Limits, Sandbox, Verdict
from sdk import CONFIG_ONLY, Sample, SampleError, Scorer, ScoreResult, Status

from ._code_harness import ASSERT_HARNESS, CALL_HARNESS, VALUE_HARNESS

__all__ = ["CodeParams", "CodeScorer"]

log = logging.getLogger("arbiter.code")

_PINNED: JsonDict = {CONFIG_ONLY: True}
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_LANGUAGE_ALIASES = {
    "py": "python",
    "python3": "python",
    "c++": "cpp",
    "cc": "cpp",
    "js": "javascript",
    "node": "javascript",
}

CASE_PASSED = "passed"


class CodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    language: str = Field(
        "python", description="python, c, cpp or javascript (tests.options.language overrides)"
    )
    extract: Literal["last_block", "first_block", "all_blocks", "whole"] = "last_block"
    require_block: bool = Field(
        False, description="no fenced code block -> reward 0 instead of using the text"
    )
    mode: Literal["fraction", "all_or_nothing", "first_failure"] = "fraction"
    compare: Literal["tokens", "exact", "checker"] = "tokens"
    float_tolerance: float = Field(1e-6, ge=0)
    wall_s: float = Field(5.0, gt=0, le=60, json_schema_extra=_PINNED)
    cpu_s: int = Field(5, gt=0, le=60, json_schema_extra=_PINNED)
    memory_mb: int = Field(512, gt=16, le=8192, json_schema_extra=_PINNED)
    max_cases: int = Field(256, gt=0, json_schema_extra=_PINNED)
    allow_weaker_isolation: bool = Field(False, json_schema_extra=_PINNED)
    backend: Literal["process", "docker"] = Field("process", json_schema_extra=_PINNED)
    docker_images: dict[str, str] | None = Field(
        None, description="per-language images for the docker backend", json_schema_extra=_PINNED
    )


def extract_code(text: str, how: str) -> str | None:
    """The code in a completion: fenced blocks as asked, else None."""
    blocks: list[str] = [str(body) for _, body in _FENCE.findall(text)]
    if how == "whole":
        return text
    if not blocks:
        return None
    if how == "first_block":
        return blocks[0]
    if how == "all_blocks":
        return "\n\n".join(blocks)
    return blocks[-1]


def tokens_equal(expected: str, actual: str, tolerance: float) -> bool:
    """Whitespace-insensitive token comparison; numbers within ``tolerance``."""
    want, got = expected.split(), actual.split()
    if len(want) != len(got):
        return False
    for a, b in zip(want, got, strict=True):
        if a == b:
            continue
        try:
            x, y = float(a), float(b)
        except ValueError:
            return False
        if not (math.isfinite(x) and math.isfinite(y)) or not math.isclose(
            x, y, rel_tol=tolerance, abs_tol=tolerance
        ):
            return False
    return True


def json_equal(expected: Any, actual: Any, tolerance: float) -> bool:
    """Structural equality of JSON data, floats within ``tolerance`` (bools are not numbers)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            json_equal(a, b, tolerance) for a, b in zip(expected, actual, strict=True)
        )
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            json_equal(expected[k], actual[k], tolerance) for k in expected
        )
    return type(expected) is type(actual) and bool(expected == actual)


def split_value_asserts(program: str) -> tuple[str, list[tuple[str, Any]]] | None:
    """``(setup, [(expression, expected), ...])`` when the test program is setup
    statements followed only by ``assert <expression> == <literal>`` lines (the MBPP
    shape); None for any other shape, which then runs as one program."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return None
    setup: list[ast.stmt] = []
    checks: list[tuple[str, Any]] = []
    for node in tree.body:
        if isinstance(node, ast.Assert):
            test = node.test
            if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
                return None
            try:
                expected = ast.literal_eval(test.comparators[0])
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return None
            checks.append((ast.unparse(test.left), expected))
        elif checks:
            return None  # statements between asserts: keep the program's own order
        else:
            setup.append(node)
    if not checks:
        return None
    return ast.unparse(ast.Module(body=setup, type_ignores=[])), checks


def prepare_assert_program(program: str, entry_point: str | None) -> tuple[str, list[str]]:
    """The test program as the two-process harness runs it, and the names it takes
    from the solution (those it reads but never binds, builtins aside). A HumanEval
    ``check(candidate)`` that the program never calls is called on ``entry_point``;
    a program that can fail nothing is refused, never passed."""
    try:
        tree = ast.parse(program)
    except SyntaxError as exc:
        raise SampleError(f"the assert program does not parse: {exc}") from exc
    if not any(isinstance(node, (ast.Assert, ast.Raise)) for node in ast.walk(tree)):
        raise SampleError("the assert program asserts nothing; an empty suite never passes")
    defines_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)
    calls_check = any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check"
        for statement in tree.body
        if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for node in ast.walk(statement)
    )
    if defines_check and not calls_check:
        if not entry_point:
            raise SampleError(
                "the assert program defines check(candidate) but never calls it:"
                " name the function under test in tests.options.entry_point"
            )
        if not entry_point.isidentifier():
            raise SampleError(f"tests.options.entry_point {entry_point!r} is not a function name")
        program = f"{program.rstrip()}\n\ncheck({entry_point})\n"
        tree = ast.parse(program)
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    remote = sorted(loaded - bound - set(dir(builtins)))
    return program, remote


def _plain_equal(expected: Any, actual: Any) -> bool:
    """``==`` between plain literal values, as the assert would have done."""
    try:
        return bool(expected == actual)
    except Exception:
        return False


def _case_verdict(execution: Execution) -> str:
    return {
        Verdict.TIME_LIMIT: "time_limit",
        Verdict.MEMORY_LIMIT: "memory_limit",
        Verdict.OUTPUT_LIMIT: "output_limit",
        Verdict.COMPILE_ERROR: "compile_error",
        Verdict.RUNTIME_ERROR: "runtime_error",
    }.get(execution.verdict, "runtime_error")


def _last_line(stdout: bytes) -> str:
    lines = stdout.decode(errors="replace").rstrip("\n").split("\n")
    return lines[-1] if lines else ""


class CodeScorer(Scorer):
    """Runs the completion's code against the sample's tests in the sandbox (assert, stdin/stdout, calls)."""

    name = "code"
    Params = CodeParams

    def __init__(self) -> None:
        self._sandboxes: dict[tuple[Any, ...], Sandbox | DockerSandbox | IsolationError] = {}

    def setup(self, params: CodeParams) -> None:
        """Probe isolation at start-up and say what is missing. A host that cannot
        isolate refuses code samples (SCORER_ERROR with the reason) unless the config
        sets ``allow_weaker_isolation``; the other scorers keep serving."""
        sandbox = self._probe(params)
        if isinstance(sandbox, IsolationError):
            log.warning("code scorer refuses to run code: %s", sandbox)
        elif isinstance(sandbox, Sandbox) and not sandbox.report.full:
            log.warning("code scorer runs in a WEAKER sandbox: %s", "; ".join(sandbox.report.weaker))

    def close(self) -> None:
        for sandbox in self._sandboxes.values():
            if not isinstance(sandbox, IsolationError):
                sandbox.close()
        self._sandboxes.clear()

    def _probe(self, params: CodeParams) -> Sandbox | DockerSandbox | IsolationError:
        images = tuple(sorted((params.docker_images or {}).items()))
        key = (params.backend, params.allow_weaker_isolation, images)
        if key not in self._sandboxes:
            try:
                if params.backend == "docker":
                    self._sandboxes[key] = DockerSandbox(dict(images) or None)
                else:
                    self._sandboxes[key] = Sandbox(strict=not params.allow_weaker_isolation)
            except IsolationError as exc:
                self._sandboxes[key] = exc
        return self._sandboxes[key]

    def _sandbox(self, params: CodeParams) -> Sandbox | DockerSandbox:
        sandbox = self._probe(params)
        if isinstance(sandbox, IsolationError):
            raise SampleError(f"no sandbox: {sandbox}", Status.SCORER_ERROR)
        return sandbox

    async def score(self, sample: Sample, params: CodeParams) -> ScoreResult:
        tests = sample.tests
        if tests is None:
            raise SampleError("code needs test cases in the sample's tests; an empty suite never passes")
        language = str(tests.options.get("language", params.language)).lower()
        language = _LANGUAGE_ALIASES.get(language, language)
        code = extract_code(sample.completion_text, params.extract)
        if code is None:
            if params.require_block:
                return ScoreResult(reward=0.0, details={"note": "no fenced code block in the completion"})
            code = sample.completion_text
        count = len(tests.io_cases or ()) + len(tests.call_cases.inputs if tests.call_cases else ())
        if count > params.max_cases:  # never score a silent subset
            raise SampleError(f"{count} test cases; this scorer runs at most {params.max_cases} (max_cases)")
        limits = Limits(wall_s=params.wall_s, cpu_s=params.cpu_s, memory_bytes=params.memory_mb << 20)
        sandbox = self._sandbox(params)
        if tests.assert_program is not None:
            if not tests.assert_program.strip():
                raise SampleError("the assert program is empty; an empty suite never passes")
            if language != "python":
                raise SampleError("assert programs are Python; use io_cases for other languages")
            split = split_value_asserts(tests.assert_program)
            if split is not None:
                cases = await self._value_asserts(sandbox, code, *split, limits)
            else:
                entry_point = tests.options.get("entry_point")
                program, remote = prepare_assert_program(
                    tests.assert_program, entry_point if isinstance(entry_point, str) else None
                )
                cases = [await self._assert_case(sandbox, code, program, remote, limits)]
        elif tests.io_cases is not None:
            if not tests.io_cases:
                raise SampleError("io_cases is empty; an empty suite never passes")
            cases = await self._io_cases(sandbox, language, code, tests, params, limits)
        else:
            assert tests.call_cases is not None
            if not tests.call_cases.inputs:
                raise SampleError("call_cases has no cases; an empty suite never passes")
            if language != "python":
                raise SampleError("call_cases run Python solutions; use io_cases for other languages")
            cases = await self._call_cases(sandbox, code, tests.call_cases, params, limits)
        return self._result(cases, params, tests.kind)

    def _result(self, cases: list[dict[str, Any]], params: CodeParams, kind: str) -> ScoreResult:
        broken = [c for c in cases if c["verdict"] == "sandbox_error"]
        if broken:  # infrastructure, not the model: never a reward of 0
            return ScoreResult.failure(Status.SCORER_ERROR, f"sandbox failed: {broken[0]['detail']}")
        passed = sum(c["verdict"] == CASE_PASSED for c in cases)
        reward = float(passed == len(cases)) if params.mode == "all_or_nothing" else passed / len(cases)
        return ScoreResult(
            reward=reward, details={"format": kind, "passed": passed, "total": len(cases), "cases": cases}
        )

    async def _value_asserts(
        self,
        sandbox: Sandbox | DockerSandbox,
        code: str,
        setup: str,
        checks: list[tuple[str, Any]],
        limits: Limits,
    ) -> list[dict[str, Any]]:
        """Each ``assert expr == literal`` as its own case: the program computes the
        left-hand sides; the expected values never enter it and are compared here."""
        secret = secrets.token_hex(16)
        request = json.dumps({"setup": setup, "expressions": [expression for expression, _ in checks]})
        files = {"solution.py": code.encode()}
        async with sandbox.program("python", VALUE_HARNESS, files=files) as program:
            execution = await program.run(secret + "\n" + request + "\n", limits)
        if execution.verdict is Verdict.SANDBOX_ERROR:
            return [{"verdict": "sandbox_error", "detail": execution.detail}]
        values: dict[int, Any] = {}
        for line in execution.stdout.decode(errors="replace").splitlines():
            head, _, rest = line.partition(" ")
            if head != secret:
                continue
            position, _, payload = rest.partition(" ")
            if position.isdigit() and int(position) not in values:  # a check's first report counts
                try:
                    values[int(position)] = json.loads(payload)
                except json.JSONDecodeError:
                    values[int(position)] = None
        cases: list[dict[str, Any]] = []
        for index, (expression, expected) in enumerate(checks):
            if index not in values:
                verdict = "runtime_error" if execution.verdict is Verdict.OK else _case_verdict(execution)
                cases.append(
                    {"verdict": verdict, "expression": expression, "detail": _tail(execution.stderr)}
                )
                continue
            reported = values[index]
            if not isinstance(reported, dict) or "repr" not in reported:
                error = reported.get("error") if isinstance(reported, dict) else None
                cases.append(
                    {"verdict": "runtime_error", "expression": expression, "detail": str(error)[:300]}
                )
                continue
            try:
                actual = ast.literal_eval(reported["repr"])
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                # not a plain value: an object whose repr is not a literal never equals one
                cases.append({"verdict": "wrong_answer", "expression": expression})
                continue
            ok = _plain_equal(expected, actual)
            cases.append({"verdict": CASE_PASSED if ok else "wrong_answer", "expression": expression})
        return cases

    async def _assert_case(
        self, sandbox: Sandbox | DockerSandbox, code: str, tests: str, remote: list[str], limits: Limits
    ) -> dict[str, Any]:
        """The whole test program as one case, in the two-process harness: it passes
        only if the tests' process prints the secret after the tests ran to the end."""
        secret = secrets.token_hex(16)
        request = json.dumps({"tests": tests, "remote": remote})
        files = {"solution.py": code.encode()}  # the tests reach only the tests' process, on stdin
        async with sandbox.program("python", ASSERT_HARNESS, files=files) as program:
            execution = await program.run(secret + "\n" + request + "\n", limits)
        if execution.verdict is Verdict.SANDBOX_ERROR:
            return {"verdict": "sandbox_error", "detail": execution.detail}
        if execution.verdict is Verdict.OK and _last_line(execution.stdout) == secret:
            return {"verdict": CASE_PASSED}
        verdict = "wrong_answer" if execution.verdict is Verdict.OK else _case_verdict(execution)
        if b"AssertionError" in execution.stderr:
            verdict = "wrong_answer"
        return {"verdict": verdict, "detail": _tail(execution.stderr) or "the tests did not run to the end"}

    async def _io_cases(
        self,
        sandbox: Sandbox | DockerSandbox,
        language: str,
        code: str,
        tests: Any,
        params: CodeParams,
        limits: Limits,
    ) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = []
        compare = str(tests.options.get("compare", params.compare))
        checker_source = tests.options.get("checker")
        if compare == "checker" and not isinstance(checker_source, str):
            raise SampleError("compare = 'checker' needs a Python checker program in tests.options.checker")
        async with sandbox.program(language, code) as program:
            for case in tests.io_cases:
                execution = await program.run(case.input, limits)
                if execution.verdict is Verdict.SANDBOX_ERROR:
                    cases.append({"verdict": "sandbox_error", "detail": execution.detail})
                    break
                if execution.verdict is not Verdict.OK:
                    cases.append({"verdict": _case_verdict(execution), "detail": _tail(execution.stderr)})
                else:
                    actual = execution.stdout.decode(errors="replace")
                    if compare == "exact":
                        ok = actual == case.output
                    elif compare == "checker":
                        ok = await self._check(
                            sandbox, checker_source, case.input, case.output, actual, limits
                        )
                    else:
                        ok = tokens_equal(case.output, actual, params.float_tolerance)
                    cases.append({"verdict": CASE_PASSED if ok else "wrong_answer"})
                if params.mode == "first_failure" and cases[-1]["verdict"] != CASE_PASSED:
                    cases.extend({"verdict": "not_run"} for _ in tests.io_cases[len(cases) :])
                    break
        return cases

    async def _check(
        self,
        sandbox: Sandbox | DockerSandbox,
        checker: str,
        given: str,
        expected: str,
        actual: str,
        limits: Limits,
    ) -> bool:
        """A checker program (trusted, from the sample) reads input, expected and
        actual output files and exits 0 to accept."""
        files = {
            "input.txt": given.encode(),
            "expected.txt": expected.encode(),
            "actual.txt": actual.encode(),
        }
        async with sandbox.program("python", checker, files=files) as program:
            execution = await program.run(b"", limits)
        return execution.verdict is Verdict.OK

    async def _call_cases(
        self, sandbox: Sandbox | DockerSandbox, code: str, calls: Any, params: CodeParams, limits: Limits
    ) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = []
        files = {"solution.py": code.encode()}
        async with sandbox.program("python", CALL_HARNESS, files=files) as program:
            for arguments, expected in zip(calls.inputs, calls.outputs, strict=True):
                if not isinstance(arguments, list):
                    arguments = [arguments]
                secret = secrets.token_hex(16)
                stdin = secret + "\n" + json.dumps([calls.fn_name, arguments]) + "\n"
                execution = await program.run(stdin, limits)
                if execution.verdict is Verdict.SANDBOX_ERROR:
                    cases.append({"verdict": "sandbox_error", "detail": execution.detail})
                    break
                line = _last_line(execution.stdout)
                if execution.verdict is not Verdict.OK or not line.startswith(secret + " "):
                    verdict = (
                        _case_verdict(execution) if execution.verdict is not Verdict.OK else "runtime_error"
                    )
                    cases.append({"verdict": verdict, "detail": _tail(execution.stderr) or "no result"})
                else:
                    try:
                        actual = json.loads(line[len(secret) + 1 :])
                    except json.JSONDecodeError:
                        actual = object()
                    ok = json_equal(expected, actual, params.float_tolerance)
                    cases.append({"verdict": CASE_PASSED if ok else "wrong_answer"})
                if params.mode == "first_failure" and cases[-1]["verdict"] != CASE_PASSED:
                    remaining = len(calls.inputs) - len(cases)
                    cases.extend({"verdict": "not_run"} for _ in range(remaining))
                    break
        return cases


def _tail(stderr: bytes) -> str:
    return stderr.decode(errors="replace")[-300:].strip()
