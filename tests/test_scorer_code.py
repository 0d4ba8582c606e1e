"""The code scorer through the real server: every test format, the languages
present here, each verdict, the scoring modes, and reward hacks that must score 0."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sandbox import LANGUAGES
from sdk import RewardClient, Status
from tests.processes import sandbox_processes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the code sandbox needs root for full isolation")

ADD = "```python\ndef add(a, b):\n    return a + b\n```"
ADD_TESTS = {"assert_program": "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"}


def score(client: RewardClient, completion: str, tests: dict[str, Any], **params: Any):  # type: ignore[no-untyped-def]
    return client.score(scorer="code", completion=completion, tests=tests, params=params or None)


def test_assert_program_pass_and_fail(client: RewardClient) -> None:
    passed = score(client, "Here you go:\n" + ADD, ADD_TESTS)
    assert (passed.status, passed.reward) == (Status.OK, 1.0), passed.reason
    wrong = score(client, "```python\ndef add(a, b):\n    return a - b\n```", ADD_TESTS)
    assert wrong.reward == 0.0 and wrong.details["cases"][0]["verdict"] == "wrong_answer"


def test_io_cases_token_comparison_and_partial_credit(client: RewardClient) -> None:
    tests = {
        "io_cases": [
            {"input": "2 3\n", "output": "5\n"},
            {"input": "1.5 1.25\n", "output": "2.75"},  # numbers within tolerance
            {"input": "10 10\n", "output": "  20  \n\n"},  # whitespace-insensitive
            {"input": "1 1\n", "output": "3"},  # wrong
        ]
    }
    program = (
        "```python\na, b = map(float, input().split())\nr = a + b\nprint(int(r) if r == int(r) else r)\n```"
    )
    result = score(client, program, tests)
    assert result.reward == pytest.approx(0.75)
    assert [c["verdict"] for c in result.details["cases"]] == ["passed", "passed", "passed", "wrong_answer"]
    exact = score(client, program, {"io_cases": [{"input": "2 3", "output": "5"}]}, compare="exact")
    assert exact.reward == 0.0  # "5\n" != "5"


def test_io_cases_with_a_checker_program(client: RewardClient) -> None:
    checker = (
        "given = open('input.txt').read().split()\n"
        "actual = open('actual.txt').read().split()\n"
        "raise SystemExit(0 if sorted(actual) == sorted(given) else 1)\n"
    )
    tests = {
        "io_cases": [{"input": "3 1 2", "output": ""}],
        "options": {"compare": "checker", "checker": checker},
    }
    assert score(client, "print(*sorted(input().split()))", tests).reward == 1.0
    assert score(client, "print('1 1 1')", tests).reward == 0.0


def test_call_cases_compared_outside_the_sandbox(client: RewardClient) -> None:
    tests = {
        "call_cases": {
            "fn_name": "add",
            "inputs": [[1, 2], [0.1, 0.2], [[1], [2]]],
            "outputs": [3, 0.3, [1, 2]],
        }
    }
    result = score(client, ADD, tests)
    assert result.reward == 1.0, result.details
    leetcode = "class Solution:\n    def add(self, a, b):\n        return a + b\n"
    assert (
        score(client, leetcode, {"call_cases": {"fn_name": "add", "inputs": [[2, 2]], "outputs": [4]}}).reward
        == 1.0
    )


LANGUAGE_PROGRAMS = {
    "c": '#include <stdio.h>\nint main(){long a,b;scanf("%ld %ld",&a,&b);printf("%ld\\n",a+b);return 0;}',
    "cpp": "#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<std::endl;}",
    "javascript": (
        'const [a,b]=require("fs").readFileSync(0,"utf8").trim().split(/\\s+/).map(Number);console.log(a+b);'
    ),
}


@pytest.mark.parametrize("language", [lang for lang in LANGUAGE_PROGRAMS if LANGUAGES[lang].available])
def test_languages_with_io_cases(client: RewardClient, language: str) -> None:
    completion = f"```{language}\n{LANGUAGE_PROGRAMS[language]}\n```"
    tests = {
        "io_cases": [{"input": "2 3", "output": "5"}, {"input": "40 2", "output": "42"}],
        "options": {"language": language},
    }
    result = score(client, completion, tests)
    assert result.reward == 1.0, result.details


VERDICTS = {
    "runtime_error": "raise ValueError('boom')",
    "time_limit": "while True: pass",
    "memory_limit": "x = bytearray(4 * 1024 ** 3)",
    "output_limit": "import sys\nwhile True: sys.stdout.write('y' * 65536)",
}


@pytest.mark.parametrize("verdict", list(VERDICTS))
def test_case_verdicts(client: RewardClient, verdict: str) -> None:
    result = score(client, VERDICTS[verdict], {"io_cases": [{"input": "", "output": "1"}]})
    assert result.status is Status.OK and result.reward == 0.0
    assert result.details["cases"][0]["verdict"] == verdict, result.details


def test_compile_error_verdict(client: RewardClient) -> None:
    result = score(
        client, "int main( {", {"io_cases": [{"input": "", "output": ""}], "options": {"language": "c"}}
    )
    assert result.details["cases"][0]["verdict"] == "compile_error"


def test_modes(client: RewardClient) -> None:
    tests = {
        "io_cases": [
            {"input": "1", "output": "1"},
            {"input": "2", "output": "x"},
            {"input": "3", "output": "3"},
        ]
    }
    echo = "print(input())"
    assert score(client, echo, tests).reward == pytest.approx(2 / 3)
    assert score(client, echo, tests, mode="all_or_nothing").reward == 0.0
    first = score(client, echo, tests, mode="first_failure")
    assert [c["verdict"] for c in first.details["cases"]] == ["passed", "wrong_answer", "not_run"]
    assert first.reward == pytest.approx(1 / 3)


def test_extraction_picks_the_last_block_by_default(client: RewardClient) -> None:
    two = "```python\nprint('draft')\n```\nfinal:\n```python\nprint(input())\n```"
    tests = {"io_cases": [{"input": "ok", "output": "ok"}]}
    assert score(client, two, tests).reward == 1.0
    assert score(client, two, tests, extract="first_block").reward == 0.0
    assert score(client, "no code here", tests, require_block=True).reward == 0.0


HACKS = {
    "exit-before-tests": "import sys\ndef add(a, b): return -999\nsys.exit(0)",
    "os-exit-before-tests": "import os\ndef add(a, b): return -999\nos._exit(0)",
    "exit-on-assert": (
        "import sys, builtins\ndef add(a, b): return -999\nsys.excepthook = lambda *a: sys.exit(0)"
    ),
    "atexit-exit-zero": "import atexit, os\ndef add(a, b): return -999\natexit.register(lambda: os._exit(0))",
    "signal-handler": (
        "import signal, os\ndef add(a, b): return -999\n"
        "signal.signal(signal.SIGABRT, lambda *a: os._exit(0))\nos.abort()"
    ),
    "fake-pass-marker": "def add(a, b): return -999\nprint('All tests passed')\nprint('OK')",
    "kill-the-harness": (
        "import os, signal\ndef add(a, b): return -999\nos.kill(os.getppid() or 1, signal.SIGKILL)"
    ),
    "kill-everything": "import os, signal\ndef add(a, b): return -999\nos.kill(-1, signal.SIGKILL)",
    "print-then-crash-tests": "def add(a, b): return -999\nimport sys\nprint('\\n' * 3)\n",
}


@pytest.mark.parametrize("hack", list(HACKS))
def test_reward_hacks_on_assert_programs_score_zero(client: RewardClient, hack: str) -> None:
    result = score(client, HACKS[hack], ADD_TESTS)
    assert result.status is Status.OK, result.reason
    assert result.reward == 0.0, result.details


def test_a_forged_report_cannot_pass_value_asserts(client: RewardClient) -> None:
    # Finds the harness's secret in memory and reports made-up values for every check:
    # the expected values are not in its process, so it can only guess.
    forger = (
        "import gc, re, sys\n"
        "def add(a, b): return -999\n"
        "for obj in gc.get_objects():\n"
        "    if isinstance(obj, dict):\n"
        "        for value in list(obj.values()):\n"
        "            if isinstance(value, str) and re.fullmatch('[0-9a-f]{32}', value):\n"
        "                for i in range(2):\n"
        "                    sys.stdout.write(f'\\n{value} {i} ' + '{\"repr\": \"12345\"}' + '\\n')\n"
    )
    result = score(client, forger, ADD_TESTS)
    assert result.reward == 0.0, result.details


HUMANEVAL_TESTS = {
    "assert_program": (
        "METADATA = {'author': 'x'}\n\n"
        "def check(candidate):\n"
        "    assert candidate(1, 2) == 3\n"
        "    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-9\n"
        "    for a in range(5):\n"
        "        assert candidate(a, a) == 2 * a\n"
    ),
    "options": {"entry_point": "add"},
}


def test_humaneval_check_candidate_is_called_on_the_entry_point(client: RewardClient) -> None:
    assert score(client, ADD, HUMANEVAL_TESTS).reward == 1.0
    wrong = score(client, "def add(a, b):\n    return a + b + (a == 3)\n", HUMANEVAL_TESTS)
    assert wrong.reward == 0.0 and wrong.details["cases"][0]["verdict"] == "wrong_answer", wrong.details
    uncalled = {"assert_program": HUMANEVAL_TESTS["assert_program"]}  # no entry_point: nothing would run
    refused = score(client, ADD, uncalled)
    assert refused.status is Status.INVALID_INPUT and "entry_point" in refused.reason
    nothing = score(client, ADD, {"assert_program": "x = add(1, 2)\n"})
    assert nothing.status is Status.INVALID_INPUT and "asserts nothing" in nothing.reason


@pytest.mark.parametrize("hack", list(HACKS))
def test_reward_hacks_on_humaneval_tests_score_zero(client: RewardClient, hack: str) -> None:
    result = score(client, HACKS[hack], HUMANEVAL_TESTS)
    assert result.status is Status.OK, result.reason
    assert result.reward == 0.0, result.details


MEMORY_FORGER = (
    # Searches its interpreter for anything shaped like the run's secret, prints each
    # candidate on a line of its own and ends the process before any test runs.
    "import gc, os, re, sys\n"
    "def add(a, b): return -999\n"
    "found = set()\n"
    "for obj in gc.get_objects():\n"
    "    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()\n"
    "    for value in list(items):\n"
    "        if isinstance(value, str):\n"
    "            found.update(re.findall('[0-9a-f]{32}', value))\n"
    "frame = sys._getframe()\n"
    "while frame:\n"
    "    for value in list(frame.f_locals.values()):\n"
    "        if isinstance(value, str):\n"
    "            found.update(re.findall('[0-9a-f]{32}', value))\n"
    "    frame = frame.f_back\n"
    "for secret in found:\n"
    "    for fd in (1, 2):\n"
    "        os.write(fd, ('\\n' + secret + '\\n').encode())\n"
    "os._exit(0)\n"
)


def test_a_memory_searching_forger_cannot_pass_a_check_candidate_program(client: RewardClient) -> None:
    result = score(client, MEMORY_FORGER, HUMANEVAL_TESTS)
    assert result.status is Status.OK, result.reason
    assert result.reward == 0.0, result.details


def test_solution_objects_cross_as_handles_that_cannot_fake_a_comparison(client: RewardClient) -> None:
    stack_tests = {
        "assert_program": (
            "s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2\nassert s.size() == 1\n"
            "try:\n    Stack().pop()\nexcept IndexError:\n    pass\nelse:\n    assert False, 'no error'\n"
        )
    }
    stack = (
        "class Stack:\n    def __init__(self): self.items = []\n"
        "    def push(self, x): self.items.append(x)\n"
        "    def pop(self): return self.items.pop()\n"
        "    def size(self): return len(self.items)\n"
    )
    assert score(client, stack, stack_tests).reward == 1.0
    always = (
        "class Anything:\n    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n    def __bool__(self): return True\n"
        "def add(a, b): return Anything()\n"
    )
    inequality = {"assert_program": "assert add(1, 2) != 4\nassert add(1, 2)\nassert add(1, 2) == 3 or 1\n"}
    assert score(client, ADD, inequality).reward == 1.0
    assert score(client, always, inequality).reward == 0.0
    assert score(client, always, HUMANEVAL_TESTS).reward == 0.0


def test_each_value_assert_is_a_case_and_types_matter(client: RewardClient) -> None:
    tests = {
        "assert_program": (
            "CASES = 2\nassert pair(1) == (1, 1)\nassert pair(2) == (2, 2)\nassert pair(3) == [3, 3]\n"
        )
    }
    result = score(client, "def pair(x):\n    return (x, x)\n", tests)
    assert [c["verdict"] for c in result.details["cases"]] == ["passed", "passed", "wrong_answer"]
    assert result.reward == pytest.approx(2 / 3)
    always = "class Any:\n    def __eq__(self, other): return True\ndef pair(x): return Any()\n"
    assert score(client, always, tests).reward == 0.0


def test_always_equal_objects_fail_call_cases(client: RewardClient) -> None:
    cheat = (
        "class Anything:\n    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n"
        "def add(a, b): return Anything()\n"
    )
    int_cheat = (
        "class Sneaky(int):\n    def __eq__(self, other): return True\ndef add(a, b): return Sneaky(0)\n"
    )
    tests = {"call_cases": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}}
    assert score(client, cheat, tests).reward == 0.0
    assert score(client, int_cheat, tests).reward == 0.0


def test_expected_outputs_are_not_in_the_sandbox(client: RewardClient) -> None:
    # The cheat: find the expected output on disk or in the environment and print it.
    # It would pass if the expected output were anywhere the program can read.
    snoop = (
        "import os\n"
        "hits = [v for v in os.environ.values() if 'SECRET-EXPECTED-' + '9137' in v]\n"
        "for top in ('/var/lib/arbiter', '/tmp', '/var/tmp', '/dev/shm', '.', '..'):\n"
        "    for root, dirs, files in os.walk(top):\n"
        "        for name in files:\n"
        "            try:\n"
        "                text = open(os.path.join(root, name), errors='ignore').read(100000)\n"
        "            except OSError:\n"
        "                continue\n"
        "            if 'SECRET-EXPECTED-' + '9137' in text:  # split: not found in this very file\n"
        "                hits.append('SECRET-EXPECTED-' + '9137')\n"
        "print(hits[0] if hits else 'nothing found')\n"
    )
    tests = {"io_cases": [{"input": "", "output": "SECRET-EXPECTED-9137"}]}
    result = score(client, snoop, tests)
    assert result.status is Status.OK
    assert result.details["cases"][0]["verdict"] == "wrong_answer", result.details


@pytest.mark.parametrize(
    "tests",
    [
        pytest.param({"assert_program": "   "}, id="empty-assert"),
        pytest.param({"io_cases": []}, id="no-io-cases"),
        pytest.param({"call_cases": {"fn_name": "f", "inputs": [], "outputs": []}}, id="no-call-cases"),
    ],
)
def test_empty_suites_never_pass(client: RewardClient, tests: dict[str, Any]) -> None:
    result = score(client, ADD, tests)
    assert (result.status is Status.INVALID_INPUT and "empty" in result.reason) or "no cases" in result.reason


def test_missing_tests_is_invalid_input(client: RewardClient) -> None:
    result = client.score(scorer="code", completion=ADD)
    assert result.status is Status.INVALID_INPUT and "test cases" in result.reason


def test_limits_are_config_only(client: RewardClient) -> None:
    result = score(client, ADD, ADD_TESTS, wall_s=60, memory_mb=8000)
    assert result.status is Status.INVALID_INPUT and "config only" in result.reason


def test_server_stays_responsive_while_hostile_code_runs(client: RewardClient) -> None:
    import threading
    import time

    slow = threading.Thread(target=lambda: score(client, "import time\ntime.sleep(60)", ADD_TESTS))
    slow.start()
    started = time.perf_counter()
    assert client.score(scorer="fake").ok
    assert time.perf_counter() - started < 1.0
    slow.join(timeout=30)


def test_reference_composite_with_the_real_code_scorer() -> None:
    from pathlib import Path

    from reward_server.config import load_config
    from reward_server.embedded import EmbeddedServer

    config = load_config(Path(__file__).resolve().parent.parent / "examples" / "configs" / "code_reward.toml")
    body = "<think>" + "t" * 2200 + "</think><answer>\n" + ADD + "\n</answer>"
    tests = {"assert_program": "assert add(2, 2) == 4\n"}
    with EmbeddedServer(config) as server, RewardClient(server.target) as client:
        result = client.score(scorer="code_reward", completion=body, tests=tests)
    assert result.status is Status.OK, result.reason
    excess = len(body) - 2000
    assert result.components == pytest.approx({"tests": 1.0, "format": 1.0, "length": -excess})
    assert result.reward == pytest.approx(1.0 + 0.2 - 0.0001 * excess)


def test_hostile_programs_through_the_server(server, client: RewardClient) -> None:  # type: ignore[no-untyped-def]
    port = server.server.port
    blocked = {"io_cases": [{"input": "", "output": "blocked"}]}
    reach_server = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\n"
        "except OSError:\n    print('blocked')\n"
    )
    assert score(client, reach_server, blocked).reward == 1.0  # no route to the reward server's port
    write_outside = (
        "import os\nfor path in ('/etc/owned', '/root/owned', '/var/lib/arbiter/owned'):\n"
        "    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n        break\n"
        "    except OSError:\n        pass\nelse:\n    print('blocked')\n"
    )
    assert score(client, write_outside, blocked).reward == 1.0
    before = sandbox_processes()
    daemon = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(300)\nprint('blocked')\n"
    assert score(client, daemon, blocked).reward == 1.0
    fork_bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    bombed = score(client, fork_bomb, blocked)
    assert bombed.details["cases"][0]["verdict"] == "time_limit"
    assert sandbox_processes() == before  # nothing outlived its run
    assert client.score(scorer="fake").ok


def test_without_isolation_code_is_refused_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from reward_server.scorers.code import CodeScorer
    from sdk.testing import LocalRunner

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as an unprivileged host would be
    runner = LocalRunner(CodeScorer)
    refused = runner.score("code", ADD, tests=ADD_TESTS)
    assert refused.status is Status.SCORER_ERROR and "not root" in refused.reason
    weaker = CodeScorer()
    runner.add("weak_code", weaker, {"allow_weaker_isolation": True})
    assert weaker._probe(weaker.Params(allow_weaker_isolation=True)).report.weaker  # type: ignore[union-attr]


def test_more_cases_than_allowed_are_refused_not_truncated(client: RewardClient) -> None:
    tests = {"io_cases": [{"input": "1", "output": "1"}] * 257}
    result = score(client, "print(input())", tests)
    assert result.status is Status.INVALID_INPUT and "max_cases" in result.reason
