"""Client behaviour against real servers: round-robin over several targets,
surviving a replica going away, waiting for a server that starts late, and
errors when nothing answers."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from reward_server.embedded import EmbeddedServer
from sdk import DeadlineExceededError, RewardClient, ServerUnavailableError, Status


def _served(server: EmbeddedServer) -> float:
    value = server.server.metrics.registry.get_sample_value(
        "arbiter_samples_total", {"scorer": "fake", "status": "OK"}
    )
    return value or 0.0


def test_round_robin_spreads_calls_and_survives_a_lost_replica() -> None:
    first = EmbeddedServer(plugins=["sdk.testing"]).start()
    second = EmbeddedServer(plugins=["sdk.testing"]).start()
    try:
        with RewardClient([first.target, second.target]) as client:
            for _ in range(40):
                assert client.score(scorer="fake").ok
            assert _served(first) >= 5 and _served(second) >= 5
            second.stop()
            results = [client.score(scorer="fake") for _ in range(20)]
            assert all(r.ok for r in results)
    finally:
        first.stop()
        second.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_wait_for_ready_rides_out_a_server_that_starts_late() -> None:
    port = _free_port()
    late = EmbeddedServer(plugins=["sdk.testing"], port=port)
    starter = threading.Timer(1.0, late.start)
    starter.start()
    try:
        with RewardClient(f"127.0.0.1:{port}", wait_for_ready=True, timeout=30) as client:
            assert client.score(scorer="fake").ok
    finally:
        starter.join()
        late.stop()


def test_no_server_is_a_clear_error_after_a_bounded_wait() -> None:
    with RewardClient(f"127.0.0.1:{_free_port()}", timeout=10, reconnect_s=1.5) as client:
        started = time.perf_counter()
        with pytest.raises(ServerUnavailableError, match=r"unavailable.*after retrying for 1.5s"):
            client.score(scorer="fake")
        assert 1.5 <= time.perf_counter() - started < 6
    with RewardClient(f"127.0.0.1:{_free_port()}", timeout=10, reconnect_s=0) as client:
        with pytest.raises(ServerUnavailableError) as raised:  # only gRPC's own few quick retries
            client.score_batch([{"scorer": "fake"}])
        assert "after retrying" not in str(raised.value)


def test_mixed_address_families_are_refused() -> None:
    with pytest.raises(ValueError, match="IPv4 or all IPv6"):
        RewardClient(["127.0.0.1:1", "[::1]:2"])


def test_large_calls_are_retried_too() -> None:
    # gRPC retries only calls within its retry buffer; the client sizes it for whole batches
    with RewardClient(f"127.0.0.1:{_free_port()}", timeout=10, reconnect_s=0) as client:
        started = time.perf_counter()
        with pytest.raises(ServerUnavailableError):
            client.score_batch([{"scorer": "fake", "completion": "x" * 200_000}] * 3)
        assert time.perf_counter() - started > 0.2  # backoff happened: it was retried


def test_large_batches_are_split_by_bytes_and_bounded_by_one_deadline(server: EmbeddedServer) -> None:
    # The session server refuses messages over 1 MiB: eight 200 KB samples fit only when split.
    big = "x" * (200 * 1024)
    items = [{"scorer": "fake", "completion": big, "request_id": str(i)} for i in range(8)]
    with RewardClient(server.target, batch_chunk_bytes=512 * 1024) as client:
        results = client.score_batch(items)
    assert [r.request_id for r in results] == [str(i) for i in range(8)]
    assert all(r.ok for r in results)
    # `timeout` bounds the whole batch: three calls of 0.4 s each do not fit in 1 s.
    slow = [{"scorer": "fake", "params": {"delay_s": 0.4}} for _ in range(3)]
    with RewardClient(server.target, batch_chunk_size=1, reconnect_s=0) as client:
        started = time.monotonic()
        try:
            statuses = [r.status for r in client.score_batch(slow, timeout=1.0)]
        except DeadlineExceededError:
            statuses = []  # the last call's deadline passed before the server answered
    assert time.monotonic() - started < 1.5
    assert statuses in ([], [Status.OK, Status.OK, Status.DEADLINE_EXCEEDED])
