"""The server through the real client on loopback: every RPC, ordering, failures
that stay per-sample, limits, deadlines and worker recovery."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import grpc
import pytest

from reward_server.config import ArbiterConfig, ScorerConfig
from reward_server.embedded import EmbeddedServer
from sdk import (
    AsyncRewardClient,
    DeadlineExceededError,
    RequestRejectedError,
    RewardClient,
    Status,
)
from sdk._proto import reward_pb2 as pb


def test_score_math_correct_and_wrong(client: RewardClient) -> None:
    right = client.score(scorer="math", completion="The answer is \\boxed{\\frac{1}{2}}", reference="0.5")
    wrong = client.score(scorer="math", completion="The answer is \\boxed{3}", reference="0.5")
    assert (right.status, right.reward) == (Status.OK, 1.0), right.reason
    assert (wrong.status, wrong.reward) == (Status.OK, 0.0), wrong.reason
    assert right.scorer == "math" and right.scoring_ms > 0


def test_score_format_with_params(client: RewardClient) -> None:
    completion = "<think>because</think><answer>4</answer>"
    result = client.score(scorer="format", completion=completion, params={"tags": ["think", "answer"]})
    assert (result.status, result.reward) == (Status.OK, 1.0), result.reason
    missing = client.score(
        scorer="format", completion="<answer>4</answer>", params={"tags": ["think", "answer"]}
    )
    assert (missing.status, missing.reward) == (Status.OK, 0.0)


def test_batch_keeps_order_and_isolates_failures(client: RewardClient) -> None:
    items = [
        {"scorer": "fake", "reference": str(i / 10), "params": {"reward_from_reference": True}}
        for i in range(10)
    ]
    items[3] = {"scorer": "no-such-scorer", "completion": "x"}
    items[5] = {"scorer": "fake", "params": {"error": "scorer bug"}}
    items[7] = {"scorer": "fake", "params": {"not_a_param": 1}}
    items[8] = {"scorer": "fake", "completion": 42}  # wrong type: rejected by the client alone
    results = client.score_batch(items)
    assert len(results) == 10
    statuses = [r.status for r in results]
    assert statuses[3] is Status.UNKNOWN_SCORER and "no-such-scorer" in results[3].reason
    assert statuses[5] is Status.SCORER_ERROR and "scorer bug" in results[5].reason
    assert statuses[7] is Status.INVALID_INPUT and "not_a_param" in results[7].reason
    assert statuses[8] is Status.INVALID_INPUT and "completion" in results[8].reason
    for i in (0, 1, 2, 4, 6, 9):
        assert results[i].status is Status.OK
        assert results[i].reward == pytest.approx(i / 10)


def test_stream_answers_every_request_tagged_as_it_finishes(client: RewardClient) -> None:
    items = [
        {"scorer": "fake", "request_id": "slow", "params": {"delay_s": 0.5, "reward": 1.0}},
        {"scorer": "fake", "request_id": "fast", "params": {"reward": 0.25}},
        {"scorer": "nope", "request_id": "bad"},
    ]
    results = list(client.stream(items))
    by_id = {r.request_id: r for r in results}
    assert set(by_id) == {"slow", "fast", "bad"}
    assert results[-1].request_id == "slow"  # finished last, delivered last
    assert by_id["fast"].reward == 0.25
    assert by_id["bad"].status is Status.UNKNOWN_SCORER


def test_list_scorers_describes_what_is_loaded(client: RewardClient) -> None:
    infos = {info.name: info for info in client.list_scorers()}
    assert {"math", "format", "length", "composite", "fake", "fake_cpu"} <= set(infos)
    assert infos["math"].cpu_bound and not infos["format"].cpu_bound
    assert "properties" in infos["composite"].params_schema
    assert infos["fake"].params_schema["properties"]["reward"]["type"] == "number"
    assert all(info.description for info in infos.values())


def test_concurrent_clients_each_get_their_own_answers(server: EmbeddedServer) -> None:
    errors: list[str] = []

    def worker(worker_id: int) -> None:
        with RewardClient(server.target) as own:
            for i in range(40):
                expected = (worker_id * 100 + i) / 1000
                scorer = "fake_cpu" if i % 2 else "fake"
                result = own.score(
                    scorer=scorer, reference=str(expected), params={"reward_from_reference": True}
                )
                if result.status is not Status.OK or result.reward != pytest.approx(expected):
                    errors.append(f"{worker_id}/{i}: {result}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


async def test_async_client_batch_and_stream(server: EmbeddedServer) -> None:
    async with AsyncRewardClient(server.target) as client:
        single, batch = await asyncio.gather(
            client.score("fake", params={"reward": 0.5}),
            client.score_batch([{"scorer": "fake", "params": {"reward": r}} for r in (0.1, 0.2)]),
        )
        streamed = [r async for r in client.stream([{"scorer": "fake"}, {"scorer": "fake_cpu"}])]
    assert single.reward == 0.5
    assert [r.reward for r in batch] == [0.1, 0.2]
    assert sorted(r.request_id for r in streamed) == ["0", "1"]


def test_empty_completion_is_scored_not_crashed(client: RewardClient) -> None:
    math = client.score(scorer="math", completion="", reference="2")
    assert (math.status, math.reward) == (Status.OK, 0.0)
    fmt = client.score(scorer="format", completion="", params={"pattern": r"\d+"})
    assert (fmt.status, fmt.reward) == (Status.OK, 0.0)


def test_missing_reference_is_invalid_input(client: RewardClient) -> None:
    result = client.score(scorer="math", completion="\\boxed{2}")
    assert result.status is Status.INVALID_INPUT
    assert "reference" in result.reason


def test_wrong_types_raise_before_sending(client: RewardClient) -> None:
    with pytest.raises(TypeError, match="params"):
        client.score(scorer="fake", params=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reference"):
        client.score(scorer="math", completion="1", reference=1)  # type: ignore[arg-type]


def test_text_that_is_not_utf8_fails_alone_on_the_client(client: RewardClient) -> None:
    results = client.score_batch([{"scorer": "fake", "completion": "bad \ud800"}, {"scorer": "fake"}])
    assert results[0].status is Status.INVALID_INPUT and "encoded" in results[0].reason
    assert results[1].status is Status.OK


def _raw_call(target: str, method: str, payload: bytes) -> grpc.RpcError | bytes:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/arbiter.reward.v1.RewardService/{method}")
        try:
            return call(payload, timeout=10)
        except grpc.RpcError as exc:
            return exc


def _with_invalid_utf8_completion(request_id: bytes = b"") -> bytes:
    # Sample.completion (field 2) -> Content.text (field 1) holding the bytes ff fe.
    content = b"\x0a\x02\xff\xfe"
    sample = b"\x12" + bytes([len(content)]) + content
    tagged = b"\x0a" + bytes([len(request_id)]) + request_id if request_id else b""
    return tagged + b"\x12\x04fake" + b"\x1a" + bytes([len(sample)]) + sample


def test_invalid_utf8_on_the_wire_is_refused_with_a_reason(
    server: EmbeddedServer, client: RewardClient
) -> None:
    error = _raw_call(server.target, "Score", _with_invalid_utf8_completion())
    assert isinstance(error, grpc.RpcError)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "arbiter.reward.v1.ScoreRequest" in (error.details() or "")
    garbage = _raw_call(server.target, "ScoreBatch", b"\xff\xff\xff\xff")
    assert isinstance(garbage, grpc.RpcError) and garbage.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert client.score(scorer="fake").ok  # still serving


def test_invalid_utf8_in_a_stream_costs_one_result(server: EmbeddedServer) -> None:
    good = pb.ScoreRequest(request_id="good", scorer="fake").SerializeToString()
    with grpc.insecure_channel(server.target) as channel:
        call = channel.stream_stream("/arbiter.reward.v1.RewardService/StreamScore")
        replies = [
            pb.ScoreResponse.FromString(r)
            for r in call(iter([_with_invalid_utf8_completion(), good]), timeout=10)
        ]
    statuses = sorted((r.request_id, r.result.status) for r in replies)
    assert statuses == [("", pb.INVALID_INPUT), ("good", pb.OK)]


def test_undecodable_stream_message_keeps_its_request_id(server: EmbeddedServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        call = channel.stream_stream("/arbiter.reward.v1.RewardService/StreamScore")
        replies = call(iter([_with_invalid_utf8_completion(b"r7")]), timeout=10)
        (reply,) = [pb.ScoreResponse.FromString(r) for r in replies]
    assert (reply.request_id, reply.result.status) == ("r7", pb.INVALID_INPUT)
    assert "ScoreRequest" in reply.result.reason


def test_undecodable_sample_in_a_batch_costs_one_result(server: EmbeddedServer) -> None:
    good = pb.ScoreRequest(request_id="good", scorer="fake").SerializeToString()
    bad = _with_invalid_utf8_completion(b"bad")
    # ScoreBatchRequest.requests is field 1: each request framed as a length-delimited field.
    batch = b"".join(b"\x0a" + bytes([len(r)]) + r for r in (good, bad, good))
    raw = _raw_call(server.target, "ScoreBatch", batch)
    assert isinstance(raw, bytes)
    replies = pb.ScoreBatchResponse.FromString(raw).responses
    assert [(r.request_id, r.result.status) for r in replies] == [
        ("good", pb.OK),
        ("bad", pb.INVALID_INPUT),
        ("good", pb.OK),
    ]


def test_oversized_sample_fails_alone_and_oversized_request_is_refused(client: RewardClient) -> None:
    big = "x" * (300 * 1024)  # over this server's max_sample_bytes (256 KiB)
    results = client.score_batch([{"scorer": "fake", "completion": big}, {"scorer": "fake"}])
    assert results[0].status is Status.INVALID_INPUT and "max_sample_bytes" in results[0].reason
    assert results[1].ok
    huge = [{"scorer": "fake", "completion": "y" * (200 * 1024)} for _ in range(8)]  # ~1.6 MiB > 1 MiB
    with pytest.raises(RequestRejectedError, match="RESOURCE_EXHAUSTED"):
        client.score_batch(huge)
    assert client.score(scorer="fake").ok


def test_cpu_scorer_timeout_kills_the_worker_and_the_pool_recovers() -> None:
    config = ArbiterConfig(scorers={"slow": ScorerConfig(type="fake_cpu", timeout_s=0.5)})
    with EmbeddedServer(config, plugins=["sdk.testing"]) as server, RewardClient(server.target) as client:
        started = time.perf_counter()
        result = client.score(scorer="slow", params={"delay_s": 30})
        assert result.status is Status.TIMEOUT and "0.5s" in result.reason
        assert time.perf_counter() - started < 5
        crashed = client.score(scorer="fake_cpu", params={"crash": True})
        assert crashed.status is Status.SCORER_ERROR and "exit code 13" in crashed.reason
        after = client.score_batch([{"scorer": "fake_cpu", "params": {"reward": 0.7}}] * 10)
        assert all(r.ok and r.reward == 0.7 for r in after)


def test_deadline_stops_the_work_and_the_server_keeps_serving(
    server: EmbeddedServer, client: RewardClient
) -> None:
    started = time.perf_counter()
    # The server stops the work at the deadline; whether its DEADLINE_EXCEEDED result
    # or the client's own deadline arrives first is a race, and both are correct.
    try:
        result = client.score(scorer="fake_cpu", params={"delay_s": 20}, timeout=0.5)
    except DeadlineExceededError:
        pass
    else:
        assert result.status is Status.DEADLINE_EXCEEDED, result
    assert time.perf_counter() - started < 3
    # every worker must still be usable: the stuck one was replaced, not left running
    workers = server.config.workers.resolved_processes()
    results = client.score_batch(
        [{"scorer": "fake_cpu", "params": {"delay_s": 0.05}}] * (workers * 2), timeout=10
    )
    assert all(r.ok for r in results)


def test_per_scorer_concurrency_limit() -> None:
    config = ArbiterConfig(scorers={"one_at_a_time": ScorerConfig(type="fake", max_concurrency=1)})
    with EmbeddedServer(config, plugins=["sdk.testing"]) as server, RewardClient(server.target) as client:
        started = time.perf_counter()
        results = client.score_batch([{"scorer": "one_at_a_time", "params": {"delay_s": 0.2}}] * 4)
        serial = time.perf_counter() - started
        started = time.perf_counter()
        client.score_batch([{"scorer": "fake", "params": {"delay_s": 0.2}}] * 4)
        parallel = time.perf_counter() - started
    assert all(r.ok for r in results)
    assert serial >= 0.8 > parallel
    assert max(r.queued_ms for r in results) >= 500


def test_metrics_count_calls_and_statuses(server: EmbeddedServer, client: RewardClient) -> None:
    client.score(scorer="fake")
    client.score(scorer="fake", params={"error": "x"})
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert 'arbiter_rpcs_total{code="OK",method="Score"}' in text
    assert 'arbiter_samples_total{scorer="fake",status="SCORER_ERROR"}' in text
    assert "arbiter_scoring_seconds_bucket" in text


def test_pathological_math_is_a_timeout_and_others_are_served_meanwhile(client: RewardClient) -> None:
    hostile = {
        "scorer": "math",
        "completion": "\\boxed{9^{9^{9^{9}}}}",
        "reference": "1",
        "params": {"timeout_s": 1},
    }
    fine = {"scorer": "math", "completion": "\\boxed{2}", "reference": "2"}
    started = time.perf_counter()
    results = client.score_batch([hostile, fine, fine])
    assert results[0].status is Status.TIMEOUT, results[0].reason
    assert [r.reward for r in results[1:]] == [1.0, 1.0]
    assert time.perf_counter() - started < 10


def test_hard_limit_kills_math_that_ignores_its_own_timeout() -> None:
    config = ArbiterConfig(scorers={"math": ScorerConfig(type="math", timeout_s=1.0)})
    with EmbeddedServer(config) as server, RewardClient(server.target) as client:
        started = time.perf_counter()
        result = client.score(
            scorer="math", completion="\\boxed{9^{9^{9^{9}}}}", reference="1", params={"timeout_s": 60}
        )
        assert result.status is Status.TIMEOUT and "worker was stopped" in result.reason
        assert time.perf_counter() - started < 10
        assert client.score(scorer="math", completion="\\boxed{2}", reference="2").reward == 1.0


def test_queueing_for_a_worker_does_not_count_against_the_scoring_limit() -> None:
    # 24 samples of 0.1 s on 2 workers take ~1.2 s, far past the 0.5 s per-sample limit:
    # waiting in line is not scoring, so every sample must still be scored.
    config = ArbiterConfig(
        scorers={"quick": ScorerConfig(type="fake_cpu", timeout_s=0.5)}, workers={"processes": 2}
    )
    with EmbeddedServer(config, plugins=["sdk.testing"]) as server, RewardClient(server.target) as client:
        results = client.score_batch([{"scorer": "quick", "params": {"delay_s": 0.1}}] * 24)
    assert [r.status for r in results] == [Status.OK] * 24
    assert max(r.queued_ms for r in results) > 500


def test_a_malformed_scorer_output_costs_one_sample_not_the_batch() -> None:
    config = ArbiterConfig()
    with (
        EmbeddedServer(config, plugins=["tests.bad_scorers", "sdk.testing"]) as server,
        RewardClient(server.target) as client,
    ):
        results = client.score_batch([{"scorer": "bad_components"}, {"scorer": "fake"}])
    assert results[0].status is Status.SCORER_ERROR and "components" in results[0].reason
    assert results[1].ok


def test_unknown_scorer_result_names_what_was_asked(client: RewardClient) -> None:
    assert client.score(scorer="nope").scorer == "nope"


def test_stream_longer_than_its_in_flight_window(client: RewardClient) -> None:
    # the session server allows 1024 samples in flight per stream; send more
    items = [{"scorer": "fake", "request_id": f"r{i}", "params": {"reward": i / 2000}} for i in range(1500)]
    results = {r.request_id: r.reward for r in client.stream(items)}
    assert len(results) == 1500
    assert all(results[f"r{i}"] == pytest.approx(i / 2000) for i in range(1500))
