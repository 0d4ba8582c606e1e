"""``arbiter train grpo|ppo --config``: real TRL runs on a tiny local model, with
rewards from a real server on loopback whose metrics show the calls; checkpoints,
resume, and a reward server that stays down."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from reward_server.cli import main
from reward_server.embedded import EmbeddedServer

pytest.importorskip("trl", reason="training needs the train extra (trl)")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MATH_ROWS = [
    {"prompt": "the answer is", "answer": "42"},
    {"prompt": "numbers:", "answer": "7"},
    {"prompt": "add", "answer": "5"},
    {"prompt": "think", "answer": "1"},
]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reward_server.devtools import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture(scope="module")
def rl_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(plugins=["sdk.testing"], metrics=True) as running:
        yield running


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in MATH_ROWS * 2))
    return path


def _write(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _train(stage: str, config_path: Path) -> Any:
    return CliRunner().invoke(main, ["train", stage, "--config", str(config_path)])


def _calls(server: EmbeddedServer) -> float:
    value = server.server.metrics.registry.get_sample_value(
        "arbiter_rpcs_total", {"method": "ScoreBatch", "code": "OK"}
    )
    return value or 0.0


REWARDS = [
    {"scorer": "format", "params": {"pattern": r"\d"}, "weight": 0.5},
    {"scorer": "math", "columns": {"reference": "answer"}},
]


def _grpo_config(tiny_lm: Path, tmp_path: Path, target: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": str(tiny_lm),
        "data": str(_data(tmp_path)),
        "output_dir": str(tmp_path / "grpo"),
        "server": {"target": target},
        "rewards": REWARDS,
        "num_generations": 2,
        "max_completion_length": 8,
        "checkpoint_every": 1,
        "device": "cpu",
        "trl": {"per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 1.0e-4},
        **extra,
    }


def test_grpo_runs_with_rewards_from_the_server_and_resumes(
    tiny_lm: Path, rl_server: EmbeddedServer, tmp_path: Path
) -> None:
    before = _calls(rl_server)
    config = _grpo_config(tiny_lm, tmp_path, rl_server.target)
    result = _train("grpo", _write(tmp_path, "grpo.yaml", config))
    assert result.exit_code == 0, result.output
    assert "grpo: 2 steps, last mean reward" in result.output
    assert _calls(rl_server) >= before + 4  # two rewards x two steps, each one ScoreBatch
    out = tmp_path / "grpo"
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    assert (out / "model.safetensors").is_file()
    logged = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    # one combined reward function: a part that fails leaves the sample out, not the others' sum
    assert any("rewards/arbiter/mean" in entry and "arbiter_math/mean" in entry for entry in logged)
    assert not any("rewards/arbiter_math/mean" in entry for entry in logged)

    # Resume from the newest checkpoint and go one step further.
    config["resume"] = True
    config["trl"] = {**config["trl"], "max_steps": 3}
    after_first = _calls(rl_server)
    result = _train("grpo", _write(tmp_path, "more.yaml", config))
    assert result.exit_code == 0, result.output
    assert "grpo: 3 steps" in result.output
    assert (out / "checkpoint-3").is_dir()
    assert after_first + 2 <= _calls(rl_server) < after_first + 4  # only the one new step was scored


def test_a_reward_server_that_stays_down_fails_the_run_clearly(tiny_lm: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _grpo_config(tiny_lm, tmp_path, f"127.0.0.1:{port}")
    config["server"]["max_wait_s"] = 1.0
    result = _train("grpo", _write(tmp_path, "down.yaml", config))
    assert result.exit_code == 1
    assert f"reward server 127.0.0.1:{port} gave no rewards within 1s" in result.output


def test_config_errors_name_the_key(tmp_path: Path, tiny_lm: Path) -> None:
    config = _grpo_config(tiny_lm, tmp_path, "127.0.0.1:1")
    config["trl"]["beta"] = 0.1
    result = _train("grpo", _write(tmp_path, "bad.yaml", config))
    assert result.exit_code == 1
    assert "trl.beta (use kl_coef)" in result.output
    config = _grpo_config(tiny_lm, tmp_path, "127.0.0.1:1")
    config["server"] = {"target": "127.0.0.1:1", "embedded": True}
    result = _train("grpo", _write(tmp_path, "bad.yaml", config))
    assert "exactly one of server.target or server.embedded" in result.output


def _ppo_config(tiny_lm: Path, tmp_path: Path, target: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": str(tiny_lm),
        "data": str(_data(tmp_path)),
        "output_dir": str(tmp_path / "ppo"),
        "server": {"target": target},
        "rewards": REWARDS,
        "response_length": 8,
        "total_episodes": 8,
        "checkpoint_every": 1,
        "device": "cpu",
        "trl": {"per_device_train_batch_size": 4, "num_mini_batches": 2, "learning_rate": 1.0e-4},
        **extra,
    }


def test_ppo_runs_with_rewards_from_the_server_and_resumes(
    tiny_lm: Path, rl_server: EmbeddedServer, tmp_path: Path
) -> None:
    before = _calls(rl_server)
    config = _ppo_config(tiny_lm, tmp_path, rl_server.target)
    result = _train("ppo", _write(tmp_path, "ppo.yaml", config))
    assert result.exit_code == 0, result.output
    assert "ppo: 2 steps, last mean reward" in result.output  # 8 episodes / batch of 4
    assert _calls(rl_server) >= before + 4  # two rewards x two rollouts
    out = tmp_path / "ppo"
    assert (out / "checkpoint-1" / "value_model").is_dir()
    assert (out / "value_model" / "model.safetensors").is_file()

    config["resume"] = str(out / "checkpoint-1")
    after_first = _calls(rl_server)
    result = _train("ppo", _write(tmp_path, "resume.yaml", config))
    assert result.exit_code == 0, result.output
    assert "ppo: 2 steps" in result.output  # one step left after checkpoint-1
    assert _calls(rl_server) == after_first + 2


def test_ppo_resumes_with_the_prompts_the_uninterrupted_run_saw_next(
    tiny_lm: Path, rl_server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer_adapter.ppo import ServerRewardModel

    seen: list[str] = []
    split = ServerRewardModel.split

    def recording(self: ServerRewardModel, ids: list[int]) -> Any:
        row, response = split(self, ids)
        seen.append(row["prompt"])
        return row, response

    monkeypatch.setattr(ServerRewardModel, "split", recording)
    monkeypatch.chdir(tmp_path)  # the config is named relative to here, as on a command line
    rows = [{"prompt": f"question {i}:", "answer": str(i)} for i in range(8)]
    Path("prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = _ppo_config(tiny_lm, tmp_path, rl_server.target, checkpoint_every=2)
    config.update(data="prompts.jsonl", output_dir="ppo")
    config["trl"] = {"per_device_train_batch_size": 2, "num_mini_batches": 1, "num_sample_generations": 0}
    result = CliRunner().invoke(
        main, ["train", "ppo", "--config", _write(Path("."), "ppo.yaml", config).name]
    )
    assert result.exit_code == 0, result.output
    assert "ppo: 4 steps" in result.output
    uninterrupted = list(seen)
    assert sorted(uninterrupted) == sorted(row["prompt"] for row in rows)  # one epoch: each prompt once

    seen.clear()
    config["resume"] = "ppo/checkpoint-2"  # relative to the config file, which is relative to the cwd
    result = CliRunner().invoke(
        main, ["train", "ppo", "--config", _write(Path("."), "resume.yaml", config).name]
    )
    assert result.exit_code == 0, result.output
    assert "ppo: 4 steps" in result.output
    assert seen == uninterrupted[4:]  # the last two batches, not the first two again


def test_ppo_refuses_rows_that_share_a_prompt_but_not_their_reference(tiny_lm: Path, tmp_path: Path) -> None:
    data = tmp_path / "clash.jsonl"
    rows = [{"prompt": "two plus two", "answer": "4"}, {"prompt": "x", "answer": "1"}]
    rows.append({"prompt": "two plus two", "answer": "5"})
    data.write_text(json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(row) + "\n" for row in rows[1:]))
    config = _ppo_config(tiny_lm, tmp_path, "127.0.0.1:1", data=str(data))
    config["server"]["max_wait_s"] = 1.0  # refused before any call; without the check it fails fast
    result = _train("ppo", _write(tmp_path, "ppo.yaml", config))
    assert result.exit_code == 1
    assert "lines 1 and 4 have the same prompt but different answer" in " ".join(result.output.split())


def test_ppo_with_lora_on_policy_and_critic(tiny_lm: Path, rl_server: EmbeddedServer, tmp_path: Path) -> None:
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    config = _ppo_config(tiny_lm, tmp_path, rl_server.target, lora=lora, critic_lora=lora, total_episodes=4)
    result = _train("ppo", _write(tmp_path, "ppo.yaml", config))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ppo" / "adapter_config.json").is_file()
    assert (tmp_path / "ppo" / "value_model" / "adapter_config.json").is_file()


def test_ppo_reward_model_scores_through_the_server_and_raises_on_infrastructure_failure(
    tiny_lm: Path, rl_server: EmbeddedServer
) -> None:
    import torch
    from transformers import AutoTokenizer

    from trainer_adapter.ppo import ServerRewardModel, encode_prompt
    from trainer_adapter.rewards import RewardServerError, reward_config

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    prompt = encode_prompt(tokenizer, "the answer is")
    response = tokenizer("42", add_special_tokens=False)["input_ids"]
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad, *prompt, *response, pad]])  # left pad, response, pad after it
    mask = ids != pad
    rows = {tuple(prompt): {"prompt": "the answer is", "answer": "42"}}
    math = reward_config("math", rl_server.target, columns={"reference": "answer"})
    model = ServerRewardModel([(math, 2.0)], tokenizer, rows)
    try:
        output = model.backbone(input_ids=ids, attention_mask=mask)
        assert model.score(output.hidden_states[-1]).shape == (1, ids.shape[1], 1)
        assert output.hidden_states[-1][0, -1, 0].item() == 2.0  # weight x reward 1.0
    finally:
        model.close()
    broken = reward_config("fake", rl_server.target, params={"error": "scorer bug"})
    model = ServerRewardModel([(broken, 1.0)], tokenizer, rows)
    try:
        with pytest.raises(RewardServerError, match="PPO cannot leave samples out"):
            model.backbone(input_ids=ids, attention_mask=mask)
    finally:
        model.close()


def test_ppo_refuses_a_pad_token_equal_to_eos(tiny_lm: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    tokenizer.pad_token = tokenizer.eos_token
    model_dir = tmp_path / "same-pad"
    import shutil

    shutil.copytree(tiny_lm, model_dir)
    tokenizer.save_pretrained(model_dir)
    config = _ppo_config(model_dir, tmp_path, "127.0.0.1:1")
    result = _train("ppo", _write(tmp_path, "ppo.yaml", config))
    assert result.exit_code == 1
    assert "PPO needs a pad token distinct from eos" in result.output


def test_ppo_on_a_trl_without_it_names_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from trainer_adapter.ppo import import_ppo
    from trainer_adapter.run_config import RunConfigError

    monkeypatch.setitem(sys.modules, "trl.experimental.ppo", None)  # what a TRL >= 1.13 looks like
    with pytest.raises(RunConfigError, match=r"pip install 'trl==1\.12\.\*'"):
        import_ppo()


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device (bf16 and vLLM paths)")
def test_grpo_on_cuda_uses_bf16(tiny_lm: Path, rl_server: EmbeddedServer, tmp_path: Path) -> None:
    config = _grpo_config(tiny_lm, tmp_path, rl_server.target, device="cuda")
    result = _train("grpo", _write(tmp_path, "grpo.yaml", config))
    assert result.exit_code == 0, result.output
    import torch
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "grpo")
    assert saved.config.dtype == torch.bfloat16


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device for vLLM")
def test_grpo_with_vllm_colocated(tiny_lm: Path, rl_server: EmbeddedServer, tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="needs the vllm extra (pip install 'arbiter-reward[vllm]')")
    config = _grpo_config(tiny_lm, tmp_path, rl_server.target, device="cuda", use_vllm=True)
    config["trl"]["vllm_gpu_memory_utilization"] = 0.3
    result = _train("grpo", _write(tmp_path, "grpo.yaml", config))
    assert result.exit_code == 0, result.output
    assert "grpo: 2 steps" in result.output
