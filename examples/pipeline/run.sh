#!/usr/bin/env bash
# The whole pipeline on a laptop CPU, in a few minutes: data and a tiny base model,
# SFT for the format, GRPO with format + correctness rewards, then eval.
# From the repository root: make install && examples/pipeline/run.sh
set -euo pipefail
cd "$(dirname "$0")"
ARBITER=${ARBITER:-../../.venv/bin/arbiter}
PYTHON=${PYTHON:-../../.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

"$PYTHON" make_data.py
"$ARBITER" train sft --config sft.yaml
"$ARBITER" train grpo --config grpo.yaml
"$ARBITER" eval --config eval.yaml
echo "done: models in runs/, eval report in runs/eval.json"
