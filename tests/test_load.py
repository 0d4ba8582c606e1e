"""Load: many concurrent clients on a mix of scorers (format, math, code, reward
model) against a real server process, for a bounded time. Every request gets
exactly one answer, only the expected statuses, and memory stays bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reward_server.devtools import build_tiny_reward_model
from reward_server.loadgen import drive, unexpected_statuses

ADD_TESTS = {"assert_program": "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"}

MIX = {
    "format": lambda n: {"completion": f"<answer>{n}</answer>", "params": {"tags": ["answer"]}},
    "math": lambda n: {"completion": f"so \\boxed{{{n % 7}}}", "reference": str(n % 5)},
    "judge": lambda n: {"prompt": f"Question {n}?", "completion": f"Answer {n} is " + "fine " * (n % 9)},
}
if os.geteuid() == 0:  # the code sandbox needs root
    MIX["code"] = lambda n: {
        "completion": f"```python\ndef add(a, b):\n    return a + b + {n % 2}\n```",
        "tests": ADD_TESTS,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    model = build_tiny_reward_model(tmp_path_factory.mktemp("judge"))
    config = tmp_path_factory.mktemp("cfg") / "load.toml"
    config.write_text(f'[scorers.judge]\ntype = "reward_model"\nparams = {{ model_path = "{model}" }}\n')
    port = _free_port()
    argv = [sys.executable, "-m", "reward_server.cli", "serve", "--config", str(config), "--port", str(port)]
    process = subprocess.Popen(
        [*argv, "--no-metrics", "--workers", "2", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
            while True:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    time.sleep(0.2)
        yield target, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_mixed_load_every_request_answered_once_and_memory_bounded(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    target, process = server
    warm = drive(target, MIX, clients=4, duration_s=3)  # first calls load models and fill pools
    assert not warm.errors, warm.errors[:3]
    before = _rss_mb(process.pid)
    report = drive(target, MIX, clients=16, duration_s=10)
    after = _rss_mb(process.pid)
    assert not report.errors, report.errors[:3]
    assert len(report.sent) > 200, len(report.sent)
    assert report.unanswered == [] and report.answered_twice == []
    assert sum(report.answers.values()) == len(report.sent)
    assert unexpected_statuses(report) == {}
    assert set(report.statuses) == set(MIX)  # every scorer carried load
    grown = after - before
    assert grown < 64, f"server RSS grew {grown:.0f} MB under load ({before:.0f} -> {after:.0f} MB)"
    assert process.poll() is None
