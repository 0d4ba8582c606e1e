"""``arbiter eval``: the pass@k estimator against hand-computed values, and a real
run (tiny local model, transformers, an embedded server) whose table and JSON
report agree with verdicts computed here from the samples themselves."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reward_server.cli import main
from trainer_adapter.evaluate import EvalConfig, pass_at_k
from trainer_adapter.run_config import load_run_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        pytest.param(5, 2, 1, 2 / 5, id="pass@1-is-the-share"),
        pytest.param(5, 2, 2, 1 - 3 / 10, id="1-C(3,2)/C(5,2)"),
        pytest.param(10, 3, 5, 1 - 21 / 252, id="1-C(7,5)/C(10,5)"),
        pytest.param(5, 0, 3, 0.0, id="none-pass"),
        pytest.param(5, 4, 2, 1.0, id="fewer-failures-than-k"),
    ],
)
def test_pass_at_k_is_the_unbiased_estimator(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="need 0 <= c <= n"):
        pass_at_k(3, 4, 1)


def test_eval_reports_pass_at_k_and_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="eval needs the rm extra (transformers)")
    from reward_server.devtools import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "tiny-lm")
    rows = [{"prompt": p, "answer": "42"} for p in ["the answer is", "numbers:", "add", "think"]]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {
        "model": str(model),
        "data": "prompts.jsonl",
        "server": {"embedded": True},
        "rewards": [
            {"scorer": "format", "params": {"pattern": r"\d"}, "name": "digit"},
            {"scorer": "format", "params": {"pattern": "^"}, "name": "always"},
            {"scorer": "math", "columns": {"reference": "answer"}},
        ],
        "n": 4,
        "k": [1, 2, 4],
        "temperature": 1.0,
        "max_new_tokens": 6,
        "device": "cpu",
        "report": "out/eval.json",
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["eval", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "with transformers (" in result.output  # says which backend, and why
    assert "pass@4" in result.output and "digit" in result.output

    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["backend"] == "transformers" and report["prompts"] == 4
    # The digit verdicts are known from the text: recompute pass@k by hand.
    counts = [sum(bool(re.search(r"\d", text)) for text in s["completions"]) for s in report["samples"]]
    for s in report["samples"]:
        assert len(s["completions"]) == 4
        assert s["rewards"]["digit"] == [float(bool(re.search(r"\d", t))) for t in s["completions"]]
    digit = report["scorers"]["digit"]
    assert digit["scored"] == 16 and digit["infrastructure_failures"] == 0
    assert digit["accuracy"] == pytest.approx(sum(counts) / 16)
    for k in (1, 2, 4):
        by_hand = sum(1 - math.comb(4 - c, k) / math.comb(4, k) for c in counts) / 4
        assert digit["pass@k"][str(k)] == pytest.approx(by_hand)
    assert digit["pass@k_prompts"] == {"1": 4, "2": 4, "4": 4}
    always = report["scorers"]["always"]
    assert always["accuracy"] == 1.0 and always["pass@k"] == {"1": 1.0, "2": 1.0, "4": 1.0}
    assert report["scorers"]["math"]["scored"] == 16


def test_pass_at_k_says_how_many_prompts_stand_behind_it() -> None:
    from rich.console import Console

    from trainer_adapter.evaluate import _report, _table

    config = EvalConfig.model_validate(
        {
            "model": "m",
            "data": "d.jsonl",
            "server": {"embedded": True},
            "rewards": [{"scorer": "math"}],
            "n": 4,
            "k": [1, 4],
            "temperature": 1.0,
        }
    )
    rows = [{"prompt": "a"}, {"prompt": "b"}]
    # prompt b lost a sample to an infrastructure failure: 3 scored, too few for pass@4
    rewards = [[1.0, 0.0, 0.0, 0.0, 1.0, None, 1.0, 1.0]]
    report = _report(config, "transformers", rows, [["x"] * 4] * 2, rewards)
    math_report = report.as_json(config)["scorers"]["math"]
    assert math_report["pass@k"] == {"1": pytest.approx((0.25 + 1.0) / 2), "4": 1.0}
    assert math_report["pass@k_prompts"] == {"1": 2, "4": 1}
    console = Console(width=200, record=True)
    console.print(_table(config, report))
    table = console.export_text()
    assert "0.6250 (2)" in table and "1.0000 (1)" in table


def test_eval_config_checks_k_and_sampling(tmp_path: Path) -> None:
    from trainer_adapter.run_config import RunConfigError

    base = {"model": "m", "data": "d.jsonl", "server": {"embedded": True}, "rewards": [{"scorer": "math"}]}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({**base, "n": 2, "k": [3], "temperature": 1.0}))
    with pytest.raises(RunConfigError, match=r"k must be between 1 and n=2: \[3\]"):
        load_run_config(path, EvalConfig)
    path.write_text(yaml.safe_dump({**base, "n": 2}))
    with pytest.raises(RunConfigError, match="n > 1 needs temperature > 0"):
        load_run_config(path, EvalConfig)


def test_eval_with_vllm_on_a_gpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="eval needs the rm extra (torch)")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device for vLLM")
    pytest.importorskip("vllm", reason="needs the vllm extra (pip install 'arbiter-reward[vllm]')")
    from reward_server.devtools import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "tiny-lm")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "numbers:"}) + "\n")
    config = {
        "model": str(model),
        "data": "prompts.jsonl",
        "server": {"embedded": True},
        "rewards": [{"scorer": "format", "params": {"pattern": "^"}}],
        "n": 2,
        "k": [1, 2],
        "temperature": 1.0,
        "max_new_tokens": 4,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["eval", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text())["backend"] == "vllm"
