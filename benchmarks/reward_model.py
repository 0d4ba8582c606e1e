"""Reward-model scoring with dynamic batching on vs off, in one run.

A tiny Qwen2 reward model (built locally, no hub) is served by ``arbiter serve``
in its own process under two names: ``rm_batched`` (``max_batch_size`` 32,
``max_wait_ms`` 5) and ``rm_unbatched`` (``max_batch_size`` 1). 32 concurrent
clients send ``Score`` calls; the script prints samples/s for both and the ratio,
and checks that both give the same scores. The device (CPU, or the GPU's name)
is printed with the figures.

    python benchmarks/reward_model.py [--samples 1024] [--clients 32] [--hidden 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from serving import start_server

from reward_server.devtools import build_tiny_reward_model
from sdk import AsyncRewardClient

WORDS = [
    *("the", "answer", "is", "42", "because", "six", "times", "seven"),
    *("paris", "rome", "add", "numbers", "think", "box"),
]


async def drive(target: str, scorer: str, completions: list[str], clients: int) -> tuple[float, list[float]]:
    async with AsyncRewardClient(target) as client:
        slots = asyncio.Semaphore(clients)

        async def one(text: str) -> float:
            async with slots:
                result = await client.score(scorer, text, prompt="rate this answer")
                if not result.ok:
                    sys.exit(f"{scorer}: {result.status.name}: {result.reason}")
                return result.reward

        await asyncio.gather(*(one(text) for text in completions[: clients * 2]))  # warm-up
        started = time.perf_counter()
        rewards = await asyncio.gather(*(one(text) for text in completions))
        return len(completions) / (time.perf_counter() - started), list(rewards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256, help="model width (compute per sample)")
    args = parser.parse_args()

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    completions = [
        " ".join(WORDS[(i + j) % len(WORDS)] for j in range(8 + i % 40)) for i in range(args.samples)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_reward_model(Path(tmp) / "rm", hidden_size=args.hidden)
        config = Path(tmp) / "rm.toml"
        config.write_text(
            f'[scorers.rm_batched]\ntype = "reward_model"\n'
            f'params = {{ model_path = "{model}", max_batch_size = 32, max_wait_ms = 5 }}\n'
            f'[scorers.rm_unbatched]\ntype = "reward_model"\n'
            f'params = {{ model_path = "{model}", max_batch_size = 1 }}\n'
        )
        target, process = start_server("--config", str(config))
        try:
            batched_rate, batched = asyncio.run(drive(target, "rm_batched", completions, args.clients))
            single_rate, single = asyncio.run(drive(target, "rm_unbatched", completions, args.clients))
        finally:
            process.terminate()
            process.wait(timeout=60)
    worst = max(abs(a - b) for a, b in zip(batched, single, strict=True))
    if worst > 1e-4:
        sys.exit(f"batched and unbatched scores differ by {worst}")
    print(f"device: {device}; model hidden size {args.hidden}; {args.clients} concurrent clients")
    print(f"{'mode':<12}{'samples/s':>12}")
    print(f"{'batching off':<12}{single_rate:>12.1f}")
    print(f"{'batching on':<12}{batched_rate:>12.1f}")
    print(f"ratio on/off: {batched_rate / single_rate:.2f}x (scores identical within {worst:.1e})")


if __name__ == "__main__":  # required: the server's worker pool re-imports __main__
    main()
