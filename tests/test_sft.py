"""SFT end to end on a tiny Qwen2 built locally: assistant-only labels and their
checks, then real training through ``arbiter train sft`` (the loss goes down on a
memorisable set), checkpoints, resume, and LoRA."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="SFT needs the train extra (trl)")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml
from click.testing import CliRunner

from reward_server.cli import main
from reward_server.devtools import CHAT_TEMPLATE, build_tiny_causal_lm
from trainer_adapter.sft import SFTRunConfig, run_sft
from trainer_adapter.sft_data import (
    IGNORE_INDEX,
    SFTDataError,
    check_masking,
    compare_chat_templates,
    loss_sample,
    tokenize_rows,
    turns_of,
)

CONVERSATIONS = [
    [("system", "be brief"), ("user", "what is six times seven"), ("assistant", "the answer is 42")],
    [("user", "capital of france"), ("assistant", "paris"), ("user", "and italy"), ("assistant", "rome")],
    [("user", "add in python"), ("assistant", "def add(a, b): return a + b")],
    [("user", "count"), ("assistant", "numbers: 0 1 2 3 4 5")],
]
MARKED_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>"
    "{% endgeneration %}{{ '\\n' }}{% else %}{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _rows() -> list[dict[str, Any]]:
    return [{"messages": [{"role": r, "content": c} for r, c in conv]} for conv in CONVERSATIONS]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture
def tokenizer(tiny_lm: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm)


def _loss_texts(tokenizer: Any, row: Any) -> list[str]:
    texts, current = [], []
    for token, label in zip(row.input_ids, row.labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            texts.append(tokenizer.decode(current))
            current = []
    if current:
        texts.append(tokenizer.decode(current))
    return texts


def test_loss_only_on_assistant_replies_and_their_end_of_turn(tokenizer: Any) -> None:
    rows = tokenize_rows(tokenizer, _rows(), "messages", max_length=None)
    for tokenized, conversation in zip(rows, CONVERSATIONS, strict=True):
        replies = [c + "<|im_end|>" for r, c in conversation if r == "assistant"]
        assert _loss_texts(tokenizer, tokenized) == replies
        # the whole conversation is there, rendered by the model's own template
        assert tokenizer.decode(tokenized.input_ids) == tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in conversation], tokenize=False
        )
        # the prompt, tokenised as at inference, is exactly the unlabelled start
        prompt = tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in conversation[:-1]], tokenize=False
        )
        header = len(tokenizer(prompt + "<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
        assert all(label == IGNORE_INDEX for label in tokenized.labels[: header if len(replies) == 1 else 0])
    check_masking(tokenizer, rows)
    assert loss_sample(tokenizer, rows[0]).endswith(
        "<|im_start|>assistant\n\u27e6the answer is 42<|im_end|>\u27e7\n"
    )


def test_generation_markers_give_the_same_targets(tokenizer: Any) -> None:
    plain = tokenize_rows(tokenizer, _rows(), "messages", max_length=None)
    tokenizer.chat_template = MARKED_TEMPLATE
    marked = tokenize_rows(tokenizer, _rows(), "messages", max_length=None)
    assert [_loss_texts(tokenizer, r) for r in marked] == [_loss_texts(tokenizer, r) for r in plain]
    check_masking(tokenizer, marked)


def test_generation_markers_around_the_role_header_fail_the_check(tokenizer: Any) -> None:
    # the markers wrap "<|im_start|>assistant\n" too: the header would carry loss
    tokenizer.chat_template = MARKED_TEMPLATE.replace(
        "<|im_start|>{{ message['role'] }}\n{% if message['role'] == 'assistant' %}{% generation %}",
        "{% if message['role'] == 'assistant' %}{% generation %}<|im_start|>{{ message['role'] }}\n",
    ).replace(
        "{% else %}{{ message['content'] }}",
        "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}",
    )
    rows = tokenize_rows(tokenizer, _rows(), "messages", max_length=None)
    assert tokenizer.decode(rows[0].input_ids) == tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in CONVERSATIONS[0]],
        chat_template=MARKED_TEMPLATE,
        tokenize=False,
    )  # the same text, only the markers moved
    with pytest.raises(SFTDataError, match="loss falls on text outside the assistant replies"):
        check_masking(tokenizer, rows)


def test_prompt_completion_and_message_weights(tokenizer: Any) -> None:
    rows = [
        {"prompt": "six times seven is", "completion": " 42"},
        {
            "prompt": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "count"},
            ],
            "completion": [{"role": "assistant", "content": "0 1 2"}],
        },
    ]
    text, chat = tokenize_rows(tokenizer, rows, "auto", max_length=None)
    assert _loss_texts(tokenizer, text) == [" 42<|im_end|>"]
    assert _loss_texts(tokenizer, chat) == ["0 1 2<|im_end|>"]  # the prompt's assistant turn is context
    weighted = _rows()[1]
    weighted["messages"][1]["weight"] = 0
    weighted["messages"][3]["weight"] = 2.5
    (row,) = tokenize_rows(tokenizer, [weighted], "messages", max_length=None)
    assert _loss_texts(tokenizer, row) == ["rome<|im_end|>"]
    assert {w for w, label in zip(row.weights, row.labels, strict=True) if label != IGNORE_INDEX} == {2.5}


def test_hard_errors(tokenizer: Any) -> None:
    cut = tokenize_rows(tokenizer, _rows(), "messages", max_length=12)
    with pytest.raises(
        SFTDataError, match=r"no token carries loss in \d row\(s\) \(\d of them cut by max_length"
    ):
        check_masking(tokenizer, cut)
    (leaky,) = tokenize_rows(tokenizer, _rows()[:1], "messages", max_length=None)
    leaky.labels[:3] = leaky.input_ids[:3]  # the system header now carries loss
    with pytest.raises(SFTDataError, match="loss falls on text outside the assistant replies"):
        check_masking(tokenizer, [leaky])
    (blank,) = tokenize_rows(tokenizer, _rows()[:1], "messages", max_length=None)
    newline = len(blank.input_ids) - 1  # the "\n" after the reply's end-of-turn
    assert tokenizer.decode(blank.input_ids[newline:]) == "\n"
    blank.labels = [IGNORE_INDEX] * newline + blank.input_ids[newline:]  # loss on that alone
    with pytest.raises(SFTDataError, match="whitespace only"):
        check_masking(tokenizer, [blank])
    empty = _rows()[3]
    empty["messages"][1]["content"] = " "
    with pytest.raises(SFTDataError, match="empty assistant reply"):
        tokenize_rows(tokenizer, [empty], "messages", max_length=None)


def test_template_mismatch_is_found(tokenizer: Any) -> None:
    conversations = [turns_of(r, "messages") for r in _rows()]
    assert compare_chat_templates(tokenizer, CHAT_TEMPLATE, MARKED_TEMPLATE, conversations) is None  # type: ignore[arg-type]
    other = CHAT_TEMPLATE.replace("\n{{ message['content'] }}", ": {{ message['content'] }}")
    difference = compare_chat_templates(tokenizer, CHAT_TEMPLATE, other, conversations)  # type: ignore[arg-type]
    assert difference is not None and "render conversation 1 differently from character 18" in difference


def _config(directory: Path, model: Path, **overrides: Any) -> Path:
    (directory / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    config = {
        "model": str(model),
        "data": "data.jsonl",
        "output_dir": "out",
        "checkpoint_every": 10,
        "trl": {
            "max_steps": 30,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 4,
            "logging_steps": 5,
            "warmup_steps": 0,
        },
    }
    config.update(overrides)
    path = directory / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_sft_command_learns_a_memorisable_set_then_resumes(tiny_lm: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "sft", "--config", str(_config(tmp_path, tiny_lm))])
    assert result.exit_code == 0, result.output
    assert "\u27e6the answer is 42<|im_end|>\u27e7" in result.output  # the masking sample is printed
    state = json.loads((tmp_path / "out" / "checkpoint-30" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], losses
    assert "Trained 30 steps; loss" in result.output and (tmp_path / "out" / "checkpoint-10").is_dir()

    config = SFTRunConfig.model_validate(
        {
            **yaml.safe_load((tmp_path / "sft.yaml").read_text()),
            "data": tmp_path / "data.jsonl",
            "output_dir": tmp_path / "out",
            "resume": True,
            "show_sample": False,
            "trl": {
                "max_steps": 40,
                "learning_rate": 5e-3,
                "per_device_train_batch_size": 4,
                "logging_steps": 5,
                "warmup_steps": 0,
            },
        }
    )
    resumed = run_sft(config)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-30")
    assert resumed.global_step == 40
    assert resumed.losses[:6] == losses  # the history comes from the checkpoint; 10 new steps follow
    assert len(resumed.losses) == 8 and resumed.losses[-1] <= losses[-1] * 1.1


def test_lora_with_a_weighted_loss_and_a_template_warning(tiny_lm: Path, tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        tiny_lm,
        lora={"r": 4, "alpha": 8},
        loss="weighted",
        show_sample=False,
        inference_chat_template=CHAT_TEMPLATE.replace(
            "\n{{ message['content'] }}", ": {{ message['content'] }}"
        ),
        trl={"max_steps": 10, "learning_rate": 1e-2, "per_device_train_batch_size": 4, "logging_steps": 5},
    )
    result = CliRunner().invoke(main, ["train", "sft", "--config", str(path)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "warning: the training and inference chat templates render conversation 1 differently" in output
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert "Trained 10 steps" in result.output


def test_chat_template_files_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer_adapter.run_config import load_run_config
    from trainer_adapter.sft_data import resolve_chat_template

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "marked.jinja").write_text(MARKED_TEMPLATE)
    path = folder / "sft.yaml"
    config = {"model": "m", "data": "d.jsonl", "output_dir": "out", "chat_template": "marked.jinja"}
    path.write_text(yaml.safe_dump({**config, "inference_chat_template": CHAT_TEMPLATE}))
    monkeypatch.chdir(tmp_path)  # not where the template is
    loaded = load_run_config(Path("configs/sft.yaml"), SFTRunConfig)
    assert loaded.chat_template is not None and resolve_chat_template(loaded.chat_template) == MARKED_TEMPLATE
    assert loaded.inference_chat_template == CHAT_TEMPLATE  # template text stays text


def test_bad_configs_stop_before_any_model_is_loaded(tiny_lm: Path, tmp_path: Path) -> None:
    path = _config(tmp_path, tiny_lm, trl={"output_dir": "elsewhere"})
    result = CliRunner().invoke(main, ["train", "sft", "--config", str(path)])
    assert result.exit_code == 1 and "'output_dir' is set by 'output_dir' at the top level" in result.output
    path = _config(tmp_path, tiny_lm, trl={"no_such_argument": 1})
    result = CliRunner().invoke(main, ["train", "sft", "--config", str(path)])
    assert result.exit_code == 1 and "trl:" in result.output and "no_such_argument" in result.output
