"""Server throughput of the ``format`` and ``math`` scorers against calling the
same scorers in-process.

For each scorer, over the same samples, in one run:

* baseline: the scorer object called in a loop in this process, through the same
  ``bind_params`` + ``run_sync`` path the server's workers use, with no server;
* ``ScoreBatch``: a real ``arbiter serve`` process on loopback (default config),
  samples sent in batches through ``RewardClient.score_batch``;
* concurrent ``Score``: many asyncio tasks, one ``Score`` call per sample.

The baseline is what a trainer would do without Arbiter: import the scorer and call
it in its own loop, in one process. It includes parameter binding and result
normalisation, as the server does, so the ratio prices exactly what serving adds
(protobuf, gRPC, dispatch) and what it buys (a pool of worker processes). The
server runs in its own process, as a trainer reaches it; ``--embedded`` runs it on
a thread of this process instead (``EmbeddedServer``), where client and server
share one GIL, so its figures are a lower bound.

It prints samples/s and the ratio server / in-process. ``format`` is a
microsecond scorer on the event loop, so gRPC costs dominate and its ratio is
below 1; ``math`` runs in the server's worker processes, one per core, so it can
beat a single in-process loop. The rewards from the server must equal the
in-process rewards, or the run aborts: a fast wrong reward is worthless.

    python benchmarks/throughput.py [--samples 2000] [--concurrency 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from serving import start_server

from reward_server.embedded import EmbeddedServer
from reward_server.scorers import FormatScorer, MathScorer
from sdk import AsyncRewardClient, RewardClient, Sample, Scorer, ScoreResult
from sdk._execute import bind_params, run_sync

FORMAT_PARAMS = {"tags": ["think", "answer"], "pattern": r"<answer>\s*-?\d+\s*</answer>"}


def format_items(count: int, rng: random.Random) -> list[dict[str, Any]]:
    items = []
    for i in range(count):
        thought = " ".join(
            rng.choice(["add", "carry", "so", "then", "check"]) for _ in range(rng.randint(5, 40))
        )
        body = f"<think>{thought}</think>\n<answer>{rng.randint(0, 999)}</answer>"
        if i % 4 == 0:
            body = body.replace("<think>", "")  # malformed: a missing tag
        items.append({"scorer": "format", "completion": body, "params": FORMAT_PARAMS})
    return items


def math_items(count: int, rng: random.Random) -> list[dict[str, Any]]:
    items = []
    for i in range(count):
        a, b = rng.randint(1, 500), rng.randint(1, 500)
        kind = i % 4
        if kind == 0:
            completion, reference = f"{a}+{b} gives \\boxed{{{a + b}}}", str(a + b)
        elif kind == 1:
            completion, reference = (
                f"The ratio is \\boxed{{\\frac{{{a}}}{{{b}}}}}",
                f"{a / b:.10f}".rstrip("0"),
            )
        elif kind == 2:
            completion, reference = f"So the answer is $\\boxed{{{a + b + 1}}}$", str(a + b)  # wrong
        else:
            completion, reference = f"The final answer is {a * b}.", str(a * b)
        items.append({"scorer": "math", "completion": completion, "reference": reference})
    return items


@contextmanager
def serving(embedded: bool) -> Iterator[str]:
    """A server with the default config on loopback; yields its target."""
    if embedded:
        with EmbeddedServer() as server:
            yield server.target
        return
    target, process = start_server()
    try:
        yield target
    finally:
        process.terminate()
        process.wait(timeout=60)


def in_process(scorer: Scorer, items: list[dict[str, Any]]) -> tuple[float, list[ScoreResult]]:
    samples = [
        (Sample.build(item["completion"], reference=item.get("reference")), item.get("params") or {})
        for item in items
    ]
    started = time.perf_counter()
    results = [run_sync(scorer, sample, bind_params(scorer, {}, params)) for sample, params in samples]
    return len(items) / (time.perf_counter() - started), results


def through_batch(target: str, items: list[dict[str, Any]], batch: int) -> tuple[float, list[ScoreResult]]:
    with RewardClient(target, batch_chunk_size=batch) as client:
        started = time.perf_counter()
        results = client.score_batch(items)
        return len(items) / (time.perf_counter() - started), results


def through_concurrent_calls(
    target: str, items: list[dict[str, Any]], concurrency: int
) -> tuple[float, list[ScoreResult]]:
    async def run() -> tuple[float, list[ScoreResult]]:
        async with AsyncRewardClient(target) as client:
            slots = asyncio.Semaphore(concurrency)

            async def one(item: dict[str, Any]) -> ScoreResult:
                async with slots:
                    return await client.score(**item)

            started = time.perf_counter()
            results = await asyncio.gather(*(one(item) for item in items))
            return len(items) / (time.perf_counter() - started), list(results)

    return asyncio.run(run())


def check_same(name: str, mode: str, expected: list[ScoreResult], got: list[ScoreResult]) -> None:
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if (want.status, want.reward) != (have.status, have.reward):
            sys.exit(f"{name}/{mode}: sample {index} differs: in-process {want} vs server {have}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=2000, help="format samples (math uses half)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--scorers", default="format,math")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures here")
    parser.add_argument(
        "--embedded", action="store_true", help="serve from a thread of this process (shares the GIL)"
    )
    args = parser.parse_args()

    names = [name.strip() for name in args.scorers.split(",") if name.strip()]
    unknown = sorted(set(names) - {"format", "math"})
    if unknown or not names:
        parser.error(f"--scorers takes format and/or math, not {', '.join(unknown) or 'nothing'}")
    rng = random.Random(7)
    plans: dict[str, tuple[Scorer, Callable[[int, random.Random], list[dict[str, Any]]], int]] = {
        "format": (FormatScorer(), format_items, args.samples),
        "math": (MathScorer(), math_items, max(1, args.samples // 2)),
    }
    figures: dict[str, dict[str, float]] = {}
    workers = os.cpu_count() or 1  # the default config's worker pool size
    mode = "embedded (thread of this process)" if args.embedded else "arbiter serve (own process)"
    with serving(args.embedded) as target:
        for name in names:
            scorer, make, count = plans[name]
            items = make(count, rng)
            # warm-up: imports and caches in this process and in every worker
            in_process(scorer, items[:50])
            through_batch(target, items[: 50 * workers], args.batch)
            base_rate, expected = in_process(scorer, items)
            batch_rate, batch_results = through_batch(target, items, args.batch)
            check_same(name, "ScoreBatch", expected, batch_results)
            call_rate, call_results = through_concurrent_calls(target, items, args.concurrency)
            check_same(name, "Score", expected, call_results)
            figures[name] = {
                "samples": count,
                "in_process_per_s": base_rate,
                "score_batch_per_s": batch_rate,
                "concurrent_score_per_s": call_rate,
                "score_batch_ratio": batch_rate / base_rate,
                "concurrent_score_ratio": call_rate / base_rate,
            }

    calls = f"Score x{args.concurrency}/s"
    print(
        f"{'scorer':<8}{'samples':>9}{'in-process/s':>15}{'ScoreBatch/s':>15}{calls:>15}{'batch':>13}{'Score':>13}"
    )
    for name, f in figures.items():
        print(
            f"{name:<8}{f['samples']:>9.0f}{f['in_process_per_s']:>15.0f}{f['score_batch_per_s']:>15.0f}"
            f"{f['concurrent_score_per_s']:>15.0f}{f['score_batch_ratio']:>12.2f}x{f['concurrent_score_ratio']:>12.2f}x"
        )
    print()
    for name, f in figures.items():
        print(f"{name}: ScoreBatch / in-process = {f['score_batch_ratio']:.2f}x")
        ratio = f["concurrent_score_ratio"]
        print(f"{name}: {args.concurrency} concurrent Score / in-process = {ratio:.2f}x")
    print(
        f"(server: {mode}; worker processes: {workers}; cpus: {os.cpu_count()};"
        " rewards identical to in-process)"
    )
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "server": "embedded" if args.embedded else "process",
                    "server_workers": workers,
                    "concurrency": args.concurrency,
                    "batch": args.batch,
                    "figures": figures,
                    "ratios": {
                        name: {
                            "score_batch_over_in_process": f["score_batch_ratio"],
                            "concurrent_score_over_in_process": f["concurrent_score_ratio"],
                        }
                        for name, f in figures.items()
                    },
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":  # required: the server's worker pool re-imports __main__
    main()
