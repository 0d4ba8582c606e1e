"""Faults the server and the client must survive: scorers that raise, hang or kill
their worker, and a server killed and restarted in the middle of a batch or a
stream, with every sample answered exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reward_server.config import ArbiterConfig, ScorerConfig
from reward_server.embedded import EmbeddedServer
from sdk import AsyncRewardClient, RewardClient, ScoreResult, Status


def test_each_fault_is_that_samples_status_and_the_pool_recovers() -> None:
    config = ArbiterConfig(scorers={"cpu": ScorerConfig(type="fake_cpu", timeout_s=1.0)})
    faults = [
        {"error": "scorer bug"},  # raises
        {"delay_s": 30},  # hangs
        {"crash": True},  # os._exit in the worker
        {"segfault": True},  # SIGSEGV in the worker
        {"reward": 0.25},  # fine
    ]
    with EmbeddedServer(config, plugins=["sdk.testing"]) as server, RewardClient(server.target) as client:
        started = time.perf_counter()
        results = client.score_batch([{"scorer": "cpu", "params": params} for params in faults])
        assert time.perf_counter() - started < 10
        assert [r.status for r in results] == [
            Status.SCORER_ERROR,
            Status.TIMEOUT,
            Status.SCORER_ERROR,
            Status.SCORER_ERROR,
            Status.OK,
        ], [(r.status, r.reason) for r in results]
        assert "scorer bug" in results[0].reason
        assert "exit code 13" in results[2].reason
        assert "signal" in results[3].reason.lower() or "-11" in results[3].reason, results[3].reason
        workers = server.config.workers.resolved_processes()
        after = client.score_batch([{"scorer": "cpu", "params": {"reward": 0.5}}] * (4 * workers))
        assert all(r.ok and r.reward == 0.5 for r in after)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _ServerProcess:
    """``arbiter serve`` as a real process on a fixed port, so it can be killed and
    started again at the same address."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._started: list[subprocess.Popen[bytes]] = []
        self._chaos: list[threading.Thread] = []

    def start(self) -> None:
        argv = [sys.executable, "-m", "reward_server.cli", "serve", "--plugin", "sdk.testing"]
        argv += ["--port", str(self.port), "--no-metrics", "--workers", "1", "--log-level", "WARNING"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._started.append(self.process)
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
            while time.monotonic() < deadline:
                assert self.process.poll() is None, "the server exited at start"
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    time.sleep(0.1)
        raise AssertionError("the server did not become healthy")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def later(self, action: Callable[[], object]) -> None:
        """Run ``action`` (kills, restarts) on a thread that ``stop`` waits for, so
        nothing it starts outlives the test, even a failing one."""
        thread = threading.Thread(target=action, daemon=True)
        self._chaos.append(thread)
        thread.start()

    def stop(self) -> None:
        for thread in self._chaos:
            thread.join(timeout=90)
        for process in self._started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture
def restartable() -> Iterator[_ServerProcess]:
    server = _ServerProcess(_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_stream_survives_the_server_being_killed_and_restarted(restartable: _ServerProcess) -> None:
    # One worker scores one item at a time (10 ms each), so the kill lands mid-stream.
    items = [
        {"scorer": "fake_cpu", "request_id": f"r{i}", "params": {"delay_s": 0.01, "reward": i / 1000}}
        for i in range(300)
    ]
    answered: list[str] = []
    with RewardClient(f"127.0.0.1:{restartable.port}", reconnect_s=60) as client:
        for result in client.stream(items):
            assert result.ok, result.reason
            assert result.reward == pytest.approx(int(result.request_id[1:]) / 1000)
            answered.append(result.request_id)
            if len(answered) == 50:
                restartable.kill()
                restartable.later(lambda: (time.sleep(0.5), restartable.start()))
    assert sorted(answered) == sorted(item["request_id"] for item in items)  # each exactly once


def test_batch_survives_the_server_being_killed_and_restarted(restartable: _ServerProcess) -> None:
    items = [{"scorer": "fake_cpu", "params": {"delay_s": 0.02, "reward": i / 100}} for i in range(60)]

    async def score() -> list[float]:
        async with AsyncRewardClient(f"127.0.0.1:{restartable.port}", reconnect_s=60) as client:
            results = await client.score_batch(items)
        assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
        return [r.reward for r in results]

    def kill_then_restart() -> None:
        time.sleep(0.5)  # the batch is being scored by now (60 x 20 ms on one worker)
        restartable.kill()
        time.sleep(0.5)
        restartable.start()

    restartable.later(kill_then_restart)
    rewards = asyncio.run(score())
    assert rewards == pytest.approx([i / 100 for i in range(60)])
    assert restartable.process is not None and restartable.process.poll() is None  # the new one served it


def _children(pid: int) -> list[int]:
    listing = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(child) for child in listing.stdout.split()]


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read()


def test_workers_killed_while_idle_are_replaced_without_failing_a_sample(restartable: _ServerProcess) -> None:
    """Workers killed from outside (the OOM killer, an operator) between calls are
    replaced; no sample pays for it."""
    assert restartable.process is not None
    with RewardClient(f"127.0.0.1:{restartable.port}") as client:
        assert client.score(scorer="fake_cpu").ok  # the pool is up and idle
        forkserver = [pid for pid in _children(restartable.process.pid) if b"forkserver" in _cmdline(pid)]
        assert len(forkserver) == 1, "workers come from the server's forkserver"
        workers = _children(forkserver[0])
        assert len(workers) == 1, workers  # --workers 1
        for pid in [*workers, *forkserver]:  # the workers, and where replacements come from
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)  # dead before the next call, as after an OOM kill
        results = client.score_batch([{"scorer": "fake_cpu", "params": {"reward": 0.5}}] * 8)
    assert [(r.status, r.reward) for r in results] == [(Status.OK, 0.5)] * 8, [r.reason for r in results]


def streams_through_a_replica_kill(
    targets: list[str],
    streams: list[list[dict[str, Any]]],
    kill: Callable[[], object],
    *,
    after: int = 40,
    **client_options: Any,
) -> list[ScoreResult]:
    """Each of ``streams`` on a stream of its own, through the client's round-robin
    over ``targets``; ``kill`` (one replica, for good) runs once ``after`` results have
    arrived. Returns every result, having checked that each request was answered
    exactly once."""
    results: list[ScoreResult] = []
    lock = threading.Lock()
    with RewardClient(targets, reconnect_s=30, **client_options) as client:
        assert all(r.ok for r in client.score_batch(streams[0][:4])), "every replica is ready"

        def consume(items: list[dict[str, Any]]) -> None:
            for result in client.stream(items):
                with lock:
                    results.append(result)

        threads = [threading.Thread(target=consume, args=(items,)) for items in streams]
        for thread in threads:
            thread.start()
        while len(results) < after:
            time.sleep(0.01)
        kill()
        for thread in threads:
            thread.join(timeout=120)
    assert sorted(r.request_id for r in results) == sorted(
        item["request_id"] for items in streams for item in items
    )
    return results


def test_replicas_one_killed_mid_run_lose_nothing() -> None:
    """Two replicas behind the client's round-robin, two streams (one lands on each);
    one replica is killed mid-run and never comes back: its unanswered requests are
    answered by the other, each exactly once."""
    replicas = [_ServerProcess(_free_port()), _ServerProcess(_free_port())]
    for replica in replicas:
        replica.start()
    try:
        streams = [
            [
                {"scorer": "fake_cpu", "request_id": f"s{n}-{i}", "params": {"delay_s": 0.02}}
                for i in range(100)
            ]
            for n in range(2)
        ]
        targets = [f"127.0.0.1:{replica.port}" for replica in replicas]
        results = streams_through_a_replica_kill(targets, streams, replicas[0].kill)
        assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    finally:
        for replica in replicas:
            replica.stop()
