"""Reward functions for TRL, against a real server: the reward contract (reward,
0.0 for bad output, None for infrastructure failures), logging, pickling, a server
that stays down, and a real GRPO run on a tiny local model."""

from __future__ import annotations

import asyncio
import inspect
import pickle
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reward_server.embedded import EmbeddedServer
from trainer_adapter import RewardServerError, server_reward


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(plugins=["sdk.testing"], metrics=True) as running:
        yield running


def test_rewards_follow_the_contract(server: EmbeddedServer) -> None:
    reward = server_reward("math", server.target, columns={"reference": "answer"})
    completions = ["\\boxed{4}", "\\boxed{5}", "no idea"]
    metrics: dict[str, float] = {}
    values = asyncio.run(
        reward(
            prompts=["2+2?"] * 3,
            completions=completions,
            answer=["4", "4", "4"],
            log_metric=metrics.__setitem__,
            trainer_state=None,
        )
    )
    assert values == [1.0, 0.0, 0.0]
    assert metrics["arbiter_math/infrastructure_failures"] == 0.0


def test_infrastructure_failures_are_none_and_bad_outputs_zero(server: EmbeddedServer) -> None:
    reward = server_reward("composite", server.target, params={"components": [{"scorer": "fake"}]})
    broken = server_reward("fake", server.target, params={"error": "scorer bug"})
    bad = server_reward("fake", server.target, params={"fail_status": "TIMEOUT"})
    metrics: dict[str, float] = {}
    assert asyncio.run(reward(prompts=["p"], completions=["c"], log_metric=metrics.__setitem__)) == [1.0]
    assert metrics["arbiter_composite/fake"] == 1.0  # composite components are logged
    assert asyncio.run(broken(prompts=["p", "q"], completions=["c", "d"])) == [None, None]
    assert asyncio.run(bad(prompts=["p"], completions=["c"])) == [0.0]


def test_unusable_requests_are_left_out_with_a_warning_never_zero(
    server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    reward = server_reward("math", server.target, columns={"reference": "answer"})
    metrics: dict[str, float] = {}
    # a numeric answer column (GSM8K keeps numbers) is read as text; an empty one is unusable
    values = asyncio.run(
        reward(
            prompts=["p", "q"],
            completions=["\\boxed{42}", "\\boxed{1}"],
            answer=[42, ""],
            log_metric=metrics.__setitem__,
        )
    )
    assert values == [1.0, None]
    assert metrics["arbiter_math/invalid_inputs"] == 1.0
    assert metrics["arbiter_math/bad_outputs"] == 0.0
    assert "1 of 2 samples were refused as unusable" in caplog.text and "reference" in caplog.text


def test_combined_reward_leaves_a_sample_out_when_any_part_fails(server: EmbeddedServer) -> None:
    from trainer_adapter import combined_reward, reward_config

    fixed = reward_config("fake", server.target, params={"reward": 1.0})
    # the reward is read from the reference: "x" is not a number, so that sample is refused
    from_answer = reward_config(
        "fake",
        server.target,
        columns={"reference": "answer"},
        params={"reward_from_reference": True},
        name="graded",
    )
    reward = combined_reward([(fixed, 0.5), (from_answer, 2.0)])
    metrics: dict[str, float] = {}
    values = asyncio.run(
        reward(
            prompts=["p", "q"], completions=["c", "d"], answer=["0.25", "x"], log_metric=metrics.__setitem__
        )
    )
    assert values == [0.5 * 1.0 + 2.0 * 0.25, None]  # not 0.5, the working part alone
    assert metrics["arbiter_fake/mean"] == 1.0 and metrics["graded/mean"] == 0.25
    assert metrics["graded/invalid_inputs"] == 1.0 and metrics["arbiter/left_out"] == 1.0
    assert inspect.iscoroutinefunction(reward) and reward.__name__ == "arbiter"
    copy = pickle.loads(pickle.dumps(reward))
    assert asyncio.run(copy(prompts=["p"], completions=["c"], answer=["1"])) == [2.5]


def test_rewards_spread_over_replicas(server: EmbeddedServer) -> None:
    with EmbeddedServer(plugins=["sdk.testing"], metrics=True) as second:
        reward = server_reward("fake", [server.target, second.target])

        async def eight_groups() -> list[list[float | None]]:
            # one client on this loop, one ScoreBatch per group: round-robin spreads them
            return [await reward(prompts=["p"] * 4, completions=["c"] * 4) for _ in range(8)]

        assert asyncio.run(eight_groups()) == [[1.0] * 4] * 8
        served = second.server.metrics.registry.get_sample_value(
            "arbiter_samples_total", {"scorer": "fake", "status": "OK"}
        )
    assert served is not None and 0 < served < 32
    assert "," in repr(reward)


def test_conversational_completions_and_columns(server: EmbeddedServer) -> None:
    reward = server_reward("math", server.target, columns={"reference": "solution"})
    chat = [[{"role": "assistant", "content": "It is \\boxed{9}"}]]
    prompt = [[{"role": "user", "content": "3*3?"}]]
    assert asyncio.run(reward(prompts=prompt, completions=chat, solution=["9"])) == [1.0]
    with pytest.raises(KeyError, match="solution"):
        asyncio.run(reward(prompts=prompt, completions=chat))


def test_picklable_and_recognised_as_async_by_trl(server: EmbeddedServer) -> None:
    reward = server_reward("format", server.target, params={"pattern": r"\d"})
    assert inspect.iscoroutinefunction(reward)  # how TRL decides to run it concurrently
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.__name__ == "arbiter_format"
    assert asyncio.run(copy(prompts=["p"], completions=["42"])) == [1.0]


def test_a_server_that_stays_down_is_an_error_not_zeros() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reward = server_reward("fake", f"127.0.0.1:{port}", max_wait_s=1.5)
    started = time.perf_counter()
    with pytest.raises(RewardServerError, match=r"gave no rewards within 1\.5s"):
        asyncio.run(reward(prompts=["p"], completions=["c"]))
    assert time.perf_counter() - started < 10


def test_unknown_column_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown sample fields"):
        server_reward("math", columns={"answer": "answer"})


def test_grpo_trains_with_rewards_from_the_server(server: EmbeddedServer, tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="GRPO needs the train extra (trl)")
    datasets = pytest.importorskip("datasets", reason="GRPO needs the train extra (datasets)")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from reward_server.devtools import build_tiny_causal_lm

    model_dir = build_tiny_causal_lm(tmp_path / "policy")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = datasets.Dataset.from_dict(
        {"prompt": ["the answer is", "numbers:", "add", "think"] * 2, "answer": ["42", "7", "5", "1"] * 2}
    )
    calls_before = _score_batch_calls(server)
    rewards = [
        server_reward("length", server.target, params={"limit": 4}),
        server_reward("math", server.target, columns={"reference": "answer"}),
    ]
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-4,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=rewards, args=config, train_dataset=data, processing_class=tokenizer
    )
    trainer.train()
    logged: list[dict[str, Any]] = trainer.state.log_history
    assert trainer.state.global_step == 2
    assert any("rewards/arbiter_length/mean" in entry for entry in logged), logged
    assert any("arbiter_math/infrastructure_failures" in entry for entry in logged)
    assert _score_batch_calls(server) >= calls_before + 4  # two reward functions x two steps


def _score_batch_calls(server: EmbeddedServer) -> float:
    value = server.server.metrics.registry.get_sample_value(
        "arbiter_rpcs_total", {"method": "ScoreBatch", "code": "OK"}
    )
    return value or 0.0
