"""Executions per second of small Python programs with assert tests: the sandbox
engine against the naive baseline, in one run.

The baseline is what common harnesses do: write the program to a file and run a
fresh ``python3`` subprocess per program with a timeout (no isolation at all).
The engine runs the same programs fully isolated (namespaces, rlimits, an
unprivileged uid; see docs/sandbox.md) through its warm forking interpreter, and
also through its fresh-process launcher for reference. Both sides run with the
same concurrency, and must agree on which programs pass.

    python benchmarks/execution.py [--programs 400] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox import Limits, Sandbox, Verdict

# The interpreter the sandbox runs too: the comparison is about process start-up
# and isolation, not about two different Pythons.
PYTHON = "/usr/bin/python3"


def programs(count: int) -> list[str]:
    """HumanEval-sized programs: a function and a few asserts; every 5th is wrong."""
    out = []
    for i in range(count):
        op = "+" if i % 5 else "-"
        out.append(
            f"def solve(a, b):\n    return a {op} b + {i}\n\n"
            f"assert solve(1, 2) == {3 + i}\nassert solve(10, 5) == {15 + i}\nassert solve(0, 0) == {i}\n"
        )
    return out


def baseline(sources: list[str], concurrency: int) -> tuple[float, list[bool]]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for index, source in enumerate(sources):
            path = Path(tmp) / f"p{index}.py"
            path.write_text(source)
            paths.append(path)

        def one(path: Path) -> bool:
            done = subprocess.run([PYTHON, str(path)], capture_output=True, timeout=10, check=False)
            return done.returncode == 0

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, paths))
        return len(sources) / (time.perf_counter() - started), results


def engine(
    runner: asyncio.Runner, box: Sandbox, sources: list[str], concurrency: int
) -> tuple[float, list[bool]]:
    """Runs on ``runner``'s loop: like a server, the engine keeps one loop (and with
    it one warm interpreter) for its whole life, warm-up included."""
    limits = Limits(wall_s=10, cpu_s=10)

    async def run_all() -> list[bool]:
        slots = asyncio.Semaphore(concurrency)

        async def one(source: str) -> bool:
            async with slots:
                execution = await box.run("python", source, limits=limits)
                if execution.verdict is Verdict.SANDBOX_ERROR:
                    raise RuntimeError(execution.detail)
                return execution.verdict is Verdict.OK

        return list(await asyncio.gather(*(one(s) for s in sources)))

    started = time.perf_counter()
    results = runner.run(run_all())
    return len(sources) / (time.perf_counter() - started), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--programs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=2 * (os.cpu_count() or 1))
    args = parser.parse_args()
    sources = programs(args.programs)
    fast = Sandbox()
    slow = Sandbox(fast_python=False)
    try:
        with asyncio.Runner() as runner:
            engine(runner, fast, sources[:20], args.concurrency)  # warm-up
            base_rate, base_ok = baseline(sources, args.concurrency)
            fast_rate, fast_ok = engine(runner, fast, sources, args.concurrency)
            slow_rate, slow_ok = engine(runner, slow, sources, args.concurrency)
            fast.close()
    finally:
        fast.close()
        slow.close()
    if not (base_ok == fast_ok == slow_ok):
        raise SystemExit("the engine and the baseline disagree on which programs pass")
    print(
        f"{args.programs} programs, concurrency {args.concurrency}, {os.cpu_count()} cores; "
        f"{sum(base_ok)} pass, {args.programs - sum(base_ok)} fail on both sides"
    )
    print(f"{'runner':<52}{'programs/s':>12}{'vs baseline':>13}")
    print(f"{'baseline: fresh python3 per program, no isolation':<52}{base_rate:>12.1f}{1.0:>12.2f}x")
    print(f"{'sandbox, fresh process per program':<52}{slow_rate:>12.1f}{slow_rate / base_rate:>12.2f}x")
    print(f"{'sandbox, warm forking interpreter':<52}{fast_rate:>12.1f}{fast_rate / base_rate:>12.2f}x")


if __name__ == "__main__":
    main()
