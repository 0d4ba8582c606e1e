"""The reward-model scorer through the real server: scores equal a direct forward
pass of the same model, with batching on and off, under concurrency; adapters,
chat templates, truncation, normalisation and pairwise mode."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the reward model scorer needs the rm extra (torch)")
transformers = pytest.importorskip("transformers", reason="the reward model scorer needs transformers")

from reward_server.config import ArbiterConfig, ScorerConfig  # noqa: E402
from reward_server.devtools import build_tiny_reward_model  # noqa: E402
from reward_server.embedded import EmbeddedServer  # noqa: E402
from sdk import AsyncRewardClient, RewardClient, ScorerDefinitionError, Status  # noqa: E402

PROMPTS = ["what is six times seven?", "name the capital of france", "add 2 and 3", "hi"]
COMPLETIONS = ["the answer is 42", "paris", "def add(a, b): return a + b", "<answer> 7 </answer>", ""]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="module")
def adapter_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, TaskType, get_peft_model

    base = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir)
    torch.manual_seed(1)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, config)
    target = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(target)
    return target


def direct_score(model_dir: Path, prompt: str, completion: str, adapter: Path | None = None) -> float:
    """The reference: one unpadded forward pass of the model as transformers loads it."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    messages = [{"role": "user", "content": prompt}]
    if completion:
        messages.append({"role": "assistant", "content": completion})
    ids = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    with torch.inference_mode():
        return float(model.eval()(input_ids=torch.tensor([ids])).logits[0, 0])


def _config(model_dir: Path, **named: dict[str, Any]) -> ArbiterConfig:
    scorers = {
        name: ScorerConfig(type="reward_model", params={"model_path": str(model_dir), **params})
        for name, params in named.items()
    }
    return ArbiterConfig(scorers=scorers)


@pytest.fixture(scope="module")
def client(model_dir: Path, adapter_dir: Path) -> Iterator[RewardClient]:
    config = _config(
        model_dir,
        rm_batched={"max_batch_size": 8, "max_wait_ms": 30},
        rm_unbatched={"max_batch_size": 1},
        rm_lora={"adapter_path": str(adapter_dir)},
        rm_short={"max_length": 12},
        rm_sigmoid={"normalize": "affine", "scale": 2.0, "shift": 0.5, "sigmoid": True},
        rm_pairwise={"pairwise": True},
        rm_process={"process": True},
    )
    with EmbeddedServer(config) as server, RewardClient(server.target) as c:
        yield c


def _cases() -> list[tuple[str, str]]:
    return [(p, c) for p in PROMPTS for c in COMPLETIONS]


@pytest.mark.parametrize("scorer", ["rm_batched", "rm_unbatched"])
def test_batch_scores_equal_a_direct_forward_pass(client: RewardClient, model_dir: Path, scorer: str) -> None:
    cases = _cases()
    results = client.score_batch([{"scorer": scorer, "prompt": p, "completion": c} for p, c in cases])
    for (prompt, completion), result in zip(cases, results, strict=True):
        assert result.status is Status.OK, result.reason
        assert result.reward == pytest.approx(direct_score(model_dir, prompt, completion), abs=1e-4)
    sizes = {r.details["batch_size"] for r in results}
    assert max(sizes) > 1 if scorer == "rm_batched" else sizes == {1}


async def test_concurrent_clients_get_their_own_scores(client: RewardClient, model_dir: Path) -> None:
    target = client._settings.targets[0]
    expected = {(p, c): direct_score(model_dir, p, c) for p, c in _cases()}

    async def one(async_client: AsyncRewardClient, prompt: str, completion: str) -> None:
        result = await async_client.score("rm_batched", completion, prompt=prompt)
        assert result.status is Status.OK, result.reason
        assert result.reward == pytest.approx(expected[(prompt, completion)], abs=1e-4)

    async with AsyncRewardClient(target) as async_client:
        await asyncio.gather(*(one(async_client, p, c) for p, c in list(expected) * 2))


def test_chat_messages_render_like_text(client: RewardClient) -> None:
    as_text = client.score(scorer="rm_batched", prompt="hi", completion="paris")
    as_chat = client.score(
        scorer="rm_batched",
        prompt=[{"role": "user", "content": "hi"}],
        completion=[{"role": "assistant", "content": "paris"}],
    )
    assert as_chat.reward == pytest.approx(as_text.reward, abs=1e-6)
    assert as_chat.details["chat_template"] is True


def test_lora_adapter_is_applied(client: RewardClient, model_dir: Path, adapter_dir: Path) -> None:
    result = client.score(scorer="rm_lora", prompt="hi", completion="the answer is 42")
    plain = client.score(scorer="rm_batched", prompt="hi", completion="the answer is 42")
    want = direct_score(model_dir, "hi", "the answer is 42", adapter=adapter_dir)
    assert result.reward == pytest.approx(want, abs=1e-4)
    assert abs(result.reward - plain.reward) > 1e-4


def test_truncation_keeps_the_end_or_refuses(client: RewardClient) -> None:
    long = "the answer is 42 " * 20
    kept = client.score(scorer="rm_short", prompt="hi", completion=long)
    assert kept.status is Status.OK and kept.details["tokens"] == 12
    refused = client.score(scorer="rm_short", prompt="hi", completion=long, params={"truncation": "error"})
    assert refused.status is Status.INVALID_INPUT and "max_length" in refused.reason


def test_affine_and_sigmoid(client: RewardClient) -> None:
    result = client.score(scorer="rm_sigmoid", prompt="hi", completion="paris")
    raw = result.details["raw"]
    assert result.reward == pytest.approx(1 / (1 + 2.718281828459045 ** -(raw * 2.0 + 0.5)), abs=1e-6)


def test_pairwise_margin(client: RewardClient, model_dir: Path) -> None:
    result = client.score(
        scorer="rm_pairwise", prompt="hi", completion="paris", metadata={"rejected": "the answer is 42"}
    )
    margin = direct_score(model_dir, "hi", "paris") - direct_score(model_dir, "hi", "the answer is 42")
    assert result.reward == pytest.approx(margin, abs=1e-4)
    assert result.details["chosen_preferred"] is (margin > 0)
    missing = client.score(scorer="rm_pairwise", prompt="hi", completion="paris")
    assert missing.status is Status.INVALID_INPUT and "rejected" in missing.reason


def test_model_path_cannot_come_from_a_request(client: RewardClient) -> None:
    result = client.score(scorer="rm_batched", completion="x", params={"model_path": "/etc"})
    assert result.status is Status.INVALID_INPUT and "config only" in result.reason


def test_unconfigured_type_is_not_served_and_bad_paths_fail_at_start(tmp_path: Path) -> None:
    with EmbeddedServer() as server, RewardClient(server.target) as plain:
        assert "reward_model" not in {i.name for i in plain.list_scorers()}
    with pytest.raises(ScorerDefinitionError, match="failed to set up"):
        EmbeddedServer(_config(tmp_path / "missing", rm={})).start()


def test_pairwise_accuracy_over_a_jsonl_file(model_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "rm.toml"
    params = f'{{ model_path = "{model_dir}", pairwise = true }}'
    config.write_text(f'[scorers.judge]\ntype = "reward_model"\nparams = {params}\n')
    rows = [
        {"prompt": p, "completion": a, "metadata": {"rejected": b}}
        for p in PROMPTS
        for a, b in [("paris", "the answer is 42"), ("the answer is 42", "paris")]
    ]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reward_server.cli",
            "score",
            "--in-process",
            "--config",
            str(config),
            "--scorer",
            "judge",
            "--input",
            str(data),
            "--output",
            str(tmp_path / "out.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    preferred = [json.loads(line)["details"]["chosen_preferred"] for line in lines]
    accuracy = sum(preferred) / len(preferred)
    assert f"{accuracy:.4f}" in done.stderr and "pairwise accuracy" in done.stderr


def test_process_mode_scores_every_step(client: RewardClient, model_dir: Path) -> None:
    steps = ["six times seven", "is forty two", "the answer is 42"]
    completion = "\n\n".join(steps)
    result = client.score(scorer="rm_process", prompt="hi", completion=completion)
    assert result.status is Status.OK, result.reason
    want = [direct_score(model_dir, "hi", "\n\n".join(steps[: k + 1])) for k in range(len(steps))]
    assert result.details["steps"] == pytest.approx(want, abs=1e-4)
    assert result.reward == pytest.approx(min(want), abs=1e-4)
    mean = client.score(scorer="rm_process", prompt="hi", completion=completion, params={"aggregate": "mean"})
    assert mean.reward == pytest.approx(sum(want) / 3, abs=1e-4)


def test_score_is_read_at_the_last_token_even_when_pad_is_end_of_turn(
    model_dir: Path, tmp_path: Path
) -> None:
    """The pitfall: with pad == <|im_end|> and a template that ends on it, pooling by
    "rightmost token that is not padding" reads the wrong position."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>{% endfor %}"
    )
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    target = tmp_path / "pad-is-eos"
    tokenizer.save_pretrained(target)
    model.save_pretrained(target)

    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "paris"}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    assert ids[-1] == tokenizer.pad_token_id
    with torch.inference_mode():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
        at_last_token = float(model.score(hidden[0, -1])[0])
        as_transformers_pools = float(model(input_ids=torch.tensor([ids])).logits[0, 0])
    assert abs(at_last_token - as_transformers_pools) > 1e-4  # the pitfall is real here

    with EmbeddedServer(_config(target, rm={})) as server, RewardClient(server.target) as client:
        result = client.score(scorer="rm", prompt="hi", completion="paris")
    assert result.reward == pytest.approx(at_last_token, abs=1e-4)
