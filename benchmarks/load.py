"""Sustained mixed load: samples/s and p50/p99 latency per scorer, many clients.

A real ``arbiter serve`` process on loopback serves ``format``, ``math``, a tiny
local reward model (``judge``) and, as root, the sandboxed ``code`` scorer. The
baseline, measured in the same run, is one client sending the same mix one call at
a time; the load run is ``--clients`` concurrent clients, each cycling through
Score, ScoreBatch and StreamScore for ``--seconds``. Every request must get exactly
one answer with status OK, or the run aborts.

    python benchmarks/load.py [--clients 32] [--seconds 20] [--batch 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from serving import start_server

from reward_server.devtools import build_tiny_reward_model
from reward_server.loadgen import LoadReport, drive, unexpected_statuses

ADD_TESTS = {"assert_program": "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"}
MIX = {
    "format": lambda n: {"completion": f"<answer>{n}</answer>", "params": {"tags": ["answer"]}},
    "math": lambda n: {"completion": f"so \\boxed{{{n % 7}}}", "reference": str(n % 5)},
    "judge": lambda n: {"prompt": f"Question {n}?", "completion": f"Answer {n} is " + "fine " * (n % 9)},
}
if os.geteuid() == 0:
    MIX["code"] = lambda n: {
        "completion": f"```python\ndef add(a, b):\n    return a + b + {n % 2}\n```",
        "tests": ADD_TESTS,
    }


def checked(report: LoadReport) -> LoadReport:
    if report.errors or report.unanswered or report.answered_twice or unexpected_statuses(report):
        sys.exit(
            f"load run failed: errors {report.errors[:3]}, unanswered {len(report.unanswered)},"
            f" answered twice {len(report.answered_twice)}, statuses {unexpected_statuses(report)}"
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_reward_model(Path(tmp) / "judge", hidden_size=64)
        config = Path(tmp) / "load.toml"
        config.write_text(f'[scorers.judge]\ntype = "reward_model"\nparams = {{ model_path = "{model}" }}\n')
        target, process = start_server("--config", str(config))
        try:
            checked(drive(target, MIX, clients=4, duration_s=3, batch_size=args.batch))  # warm-up
            alone = checked(drive(target, MIX, clients=1, duration_s=args.seconds / 2, batch_size=args.batch))
            loaded = checked(
                drive(target, MIX, clients=args.clients, duration_s=args.seconds, batch_size=args.batch)
            )
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(
        f"{args.clients} clients for {loaded.duration_s:.0f}s, {os.cpu_count()} cores: "
        f"{len(loaded.sent)} requests, each answered once, all OK"
    )
    print(f"{'scorer':<8}{'1 client/s':>12}{'loaded/s':>10}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for scorer in MIX:
        base, rate = alone.per_second(scorer), loaded.per_second(scorer)
        print(
            f"{scorer:<8}{base:>12.1f}{rate:>10.1f}{rate / base:>7.2f}x"
            f"{loaded.percentile_ms(scorer, 0.50):>9.1f}{loaded.percentile_ms(scorer, 0.99):>9.1f}"
        )
    total = sum(loaded.per_second(s) for s in MIX)
    print(f"{'all':<8}{sum(alone.per_second(s) for s in MIX):>12.1f}{total:>10.1f}")


if __name__ == "__main__":
    main()
