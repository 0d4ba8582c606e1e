"""A load generator: many concurrent clients, a mix of scorers, a bounded time.

Used by the load test (every request answered exactly once, only expected
statuses, bounded memory) and by ``benchmarks/load.py`` (sustained samples/s and
p50/p99 latency per scorer). Each client thread has its own channel and cycles
through Score, ScoreBatch and StreamScore, so all three paths carry load.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdk import ClientError, RewardClient, ScoreResult, Status

__all__ = ["LoadReport", "drive", "unexpected_statuses"]

# A sample for one scorer, given a running number (so requests differ).
SampleMaker = Callable[[int], dict[str, Any]]


@dataclass
class LoadReport:
    """What a run of ``drive`` saw. ``answers`` counts answers per request id: a
    correct server gives each sent id exactly one."""

    duration_s: float
    sent: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)

    def per_second(self, scorer: str) -> float:
        return sum(self.statuses[scorer].values()) / self.duration_s

    def percentile_ms(self, scorer: str, q: float) -> float:
        values = sorted(self.latencies_s[scorer])
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0] * 1000
        return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1] * 1000

    @property
    def unanswered(self) -> list[str]:
        return [request_id for request_id in self.sent if self.answers[request_id] == 0]

    @property
    def answered_twice(self) -> list[str]:
        return [request_id for request_id, count in self.answers.items() if count > 1]


def drive(
    target: str,
    mix: Mapping[str, SampleMaker],
    *,
    clients: int = 8,
    duration_s: float = 10.0,
    batch_size: int = 4,
    token: str | None = None,
) -> LoadReport:
    """Run ``clients`` threads against ``target`` for ``duration_s``, each sending
    samples of every scorer in ``mix`` in turn, and report what came back."""
    report = LoadReport(duration_s=duration_s)
    lock = threading.Lock()
    numbers = itertools.count()
    scorers = list(mix)
    stop_at = time.monotonic() + duration_s

    def item(scorer: str) -> dict[str, Any]:
        with lock:
            number = next(numbers)
            request_id = f"{scorer}-{number}"
            report.sent.append(request_id)
        return {**mix[scorer](number), "scorer": scorer, "request_id": request_id}

    def record(results: Sequence[ScoreResult], started: float) -> None:
        elapsed = time.perf_counter() - started
        with lock:
            for result in results:
                report.answers[result.request_id] += 1
                report.statuses[result.scorer][result.status.name] += 1
                report.latencies_s[result.scorer].append(elapsed)

    def client_loop(index: int) -> None:
        with RewardClient(target, token=token, timeout=120) as client:
            for turn in itertools.count(index):
                if time.monotonic() >= stop_at:
                    return
                scorer = scorers[turn % len(scorers)]
                started = time.perf_counter()
                try:
                    if turn % 3 == 0:
                        one = item(scorer)
                        record([client.score(**one)], started)
                    elif turn % 3 == 1:
                        record(client.score_batch([item(scorer) for _ in range(batch_size)]), started)
                    else:
                        for result in client.stream([item(scorer) for _ in range(batch_size)]):
                            record([result], started)
                except ClientError as exc:
                    with lock:
                        report.errors.append(f"{scorer}: {exc}")

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.duration_s = time.monotonic() - started
    return report


def unexpected_statuses(
    report: LoadReport, allowed: Sequence[Status] = (Status.OK,)
) -> dict[str, Counter[str]]:
    """Statuses outside ``allowed``, per scorer (empty when the run was clean)."""
    names = {status.name for status in allowed}
    return {
        scorer: Counter({name: n for name, n in counts.items() if name not in names})
        for scorer, counts in report.statuses.items()
        if any(name not in names for name in counts)
    }
