"""Write the pipeline's data and a tiny base model, with no model hub.

    python make_data.py            # into this folder: data/*.jsonl, runs/base/

* ``data/sft.jsonl``: chat ``messages`` teaching the answer format
  ``<think>...</think> <answer>...</answer>`` on small sums;
* ``data/math.jsonl``: GRPO prompts (chat messages) with an ``answer`` column;
* ``data/test.jsonl``: held-out prompts for ``arbiter eval``;
* ``runs/base/``: a tiny Qwen2 and tokenizer built by ``reward_server.devtools``
  (replace ``model:`` in sft.yaml with a real checkpoint for real results).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from reward_server.devtools import build_tiny_causal_lm

HERE = Path(__file__).resolve().parent
INSTRUCTION = "Think in <think></think>, then give the number in <answer></answer>."


def _question(a: int, b: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What is {a} + {b}? {INSTRUCTION}"}]


def _solution(a: int, b: int) -> str:
    return f"<think>{a} plus {b} is {a + b}</think> <answer>{a + b}</answer>"


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} rows to {path.relative_to(HERE)}")


def main() -> None:
    rng = random.Random(0)
    pairs = [(rng.randint(0, 50), rng.randint(0, 50)) for _ in range(96)]
    sft, grpo, test = pairs[:48], pairs[48:80], pairs[80:]
    _write(
        HERE / "data" / "sft.jsonl",
        [
            {
                "messages": [
                    *_question(a, b),
                    {"role": "assistant", "content": _solution(a, b)},
                ]
            }
            for a, b in sft
        ],
    )
    _write(HERE / "data" / "math.jsonl", [{"prompt": _question(a, b), "answer": str(a + b)} for a, b in grpo])
    _write(HERE / "data" / "test.jsonl", [{"prompt": _question(a, b), "answer": str(a + b)} for a, b in test])
    if not (HERE / "runs" / "base" / "config.json").is_file():
        build_tiny_causal_lm(HERE / "runs" / "base")
        print("built a tiny base model in runs/base")


if __name__ == "__main__":
    main()
