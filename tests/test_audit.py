"""``arbiter audit``: generic hacks built from the user's samples, sent to their
scorer, and a report of which earn reward."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reward_server.audit import HACKS, run_audit
from sdk import RewardClient

MATH_SAMPLES = [
    {"prompt": "What is 6 times 7?", "reference": "42"},
    {"prompt": "What is 15 plus 27, minus 2?", "reference": "40"},
    {"prompt": "Compute 3 squared.", "reference": "9"},
]
CODE_SAMPLES = [
    {"prompt": "Write add.", "tests": {"assert_program": "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"}},
    {"prompt": "Print the sum of two ints.", "tests": {"io_cases": [{"input": "1 2\n", "output": "3"}]}},
    {"prompt": "add", "tests": {"call_cases": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}}},
    {
        "prompt": "add",
        "tests": {
            "assert_program": "def check(candidate):\n    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n",
            "options": {"entry_point": "add"},
        },
    },
]
ARBITER = [sys.executable, "-m", "reward_server.cli"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "configs"


def _rows(client: RewardClient, scorer: str, samples: list[dict[str, object]]) -> dict[str, float | None]:
    return {row.name: row.best for row in run_audit(client, scorer, samples) if row.tried}


def test_math_holds_against_every_generic_hack(client: RewardClient) -> None:
    best = _rows(client, "math", MATH_SAMPLES)
    assert best.pop("(reference answer)") == 1.0  # the honest baseline earns full reward
    text_hacks = {"empty", "whitespace", "copy_prompt", "boxed_spam", "answer_spam"}
    assert text_hacks <= best.keys()
    assert all(best[name] == 0.0 for name in text_hacks | {"format_only", "length_padding", "refusal"}), best
    assert not {"exit_zero", "always_equal"} & best.keys()  # code hacks need samples with tests


def _audit_cli(tmp_path: Path, samples: list[dict[str, object]], *args: str) -> tuple[int, dict[str, object]]:
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in samples))
    report = tmp_path / "report.json"
    done = subprocess.run(
        [*ARBITER, "audit", "--in-process", "--input", str(data), "--json", str(report), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert report.exists(), done.stderr[-2000:]
    return done.returncode, json.loads(report.read_text())


def _earning(report: dict[str, object]) -> set[str]:
    rows = report["rows"]
    assert isinstance(rows, list)
    return {row["hack"] for row in rows if row["earns_reward"] and not row["hack"].startswith("(")}


def test_a_naive_scorer_is_caught_and_fails_the_run(tmp_path: Path) -> None:
    code, report = _audit_cli(
        tmp_path,
        MATH_SAMPLES,
        *("--plugin", "tests.bad_scorers", "--scorer", "contains_reference", "--fail-on-reward"),
    )
    assert code == 1
    assert _earning(report) == {"boxed_spam", "answer_spam"}
    assert report["samples"] == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="the code sandbox needs root for full isolation")
def test_the_reference_code_composite_pays_for_format_alone_and_the_gated_one_not(tmp_path: Path) -> None:
    code, report = _audit_cli(
        tmp_path, CODE_SAMPLES, "--config", str(EXAMPLES / "code_reward.toml"), "--scorer", "code_reward"
    )
    assert code == 0  # without --fail-on-reward the audit only reports
    assert _earning(report) == {"format_only"}
    rows = {row["hack"]: row for row in report["rows"]}  # type: ignore[union-attr]
    assert all(rows[hack.name]["tried"] == len(CODE_SAMPLES) for hack in HACKS)
    gated = EXAMPLES / "code_reward_gated.toml"
    code, report = _audit_cli(
        tmp_path, CODE_SAMPLES, "--config", str(gated), "--scorer", "code_reward", "--fail-on-reward"
    )
    assert code == 0
    assert _earning(report) == set()
