"""The example pipeline (examples/pipeline/run.sh) end to end, as a user runs it:
data and a tiny base model, SFT, GRPO with rewards from an embedded server, eval."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="the pipeline needs the train extra")

PIPELINE = Path(__file__).resolve().parents[1] / "examples" / "pipeline"


@pytest.mark.timeout(300)
def test_the_example_pipeline_runs_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, work, ignore=shutil.ignore_patterns("runs", "data"))
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "ARBITER": str(bin_dir / "arbiter"),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(PIPELINE.parents[1]),
    }
    done = subprocess.run(
        ["bash", str(work / "run.sh")], capture_output=True, text=True, env=env, timeout=280, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Trained" in done.stderr + done.stdout
    report = json.loads((work / "runs" / "eval.json").read_text())
    scorers = report["scorers"]
    assert set(scorers) == {"math", "format"}
    # SFT taught the format, so GRPO had a signal and eval sees it (about 0.86 here).
    assert scorers["format"]["accuracy"] >= 0.25, scorers
    assert (work / "runs" / "grpo" / "checkpoint-10").is_dir()
