"""``arbiter train ppo``: TRL's PPO with the reward scored by an Arbiter server.

TRL 1.10-1.12 keep ``PPOTrainer`` in ``trl.experimental.ppo`` (later releases removed
it); the train extra pins ``trl==1.12.*``. On a TRL without it, the run stops at
once with the command that installs one.

PPO reads a reward model, not a reward function: ``get_reward`` calls
``getattr(model, model.base_model_prefix)`` with the (left-padded prompt + response)
token ids and reads ``model.score(hidden_states[-1])`` at the last response token.
:class:`ServerRewardModel` fits that interface: its backbone takes the tokens where
the attention mask is set, splits them at the prompt (every training prompt is
tokenized here first, so the split is exact and the prompt's dataset row, with its
reference or tests, is known), decodes the response, scores it through the server
with the same code GRPO's reward functions use (``rewards.score_completions``), and
returns the weighted sum broadcast over ``(B, T, 1)``; ``score`` is the identity.

Outcomes, as for GRPO: a scored sample gives its reward, a bad output (TIMEOUT,
SANDBOX_VIOLATION) 0.0. A sample that cannot be scored (an unusable request, or an
infrastructure failure) cannot be left out as GRPO does (PPO has no way to skip
one sample of a rollout), and a fake 0 would teach the policy something false, so
it raises
:class:`~trainer_adapter.RewardServerError`: the run stops, and resumes from its
last checkpoint. A server that is restarting is waited for (``server.max_wait_s``).

Resume: TRL's PPO loop always starts at step 0, so a resumed run loads the policy
from the checkpoint, the critic from ``checkpoint-N/value_model`` (saved next to
each checkpoint here) and the optimizer's state, and continues the step and
episode counters for the episodes that remain. Prompts come in an order fixed by
the seed and the epoch (not by torch's global generator, as in TRL), and a resumed
run starts that order after the episodes already done, so it trains on the prompts
the uninterrupted run would have, not the first ones again. The learning-rate schedule is built
anew over the remaining steps (exact with ``lr_scheduler_type: constant``).
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from .rewards import RewardConfig, RewardServerError, close_clients, score_completions
from .rl import (
    PPORunConfig,
    RunResult,
    peft_config,
    precision,
    read_jsonl,
    resume_checkpoint,
    reward_server_target,
    trl_version_hint,
)
from .run_config import RunConfigError

__all__ = ["ServerRewardModel", "check_pad_token", "encode_prompt", "import_ppo", "run_ppo"]

VALUE_MODEL_DIR = "value_model"


def import_ppo() -> tuple[Any, Any]:
    """``(PPOConfig, PPOTrainer)`` from TRL, or an error naming the version to install."""
    try:
        with warnings.catch_warnings():
            # Known and pinned: PPO exists only in trl.experimental (1.10-1.12).
            warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
            from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError as exc:
        try:
            from importlib.metadata import version

            found = f"trl {version('trl')} is installed"
        except Exception:
            found = "trl is not installed"
        raise RunConfigError(
            f"PPO needs trl.experimental.ppo (TRL 1.10 to 1.12; {found}): {trl_version_hint()}"
        ) from exc
    return PPOConfig, PPOTrainer


def check_pad_token(tokenizer: Any) -> None:
    """PPO masks with ``ids != pad_token_id``: a pad equal to eos cuts every response
    at its end-of-sequence token and reads the reward at the wrong place."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise RunConfigError(
            f"PPO needs a pad token distinct from eos (pad={tokenizer.pad_token!r}, "
            f"eos={tokenizer.eos_token!r}): add one, e.g. "
            "tokenizer.add_special_tokens({'pad_token': '<|pad|>'}), "
            "model.resize_token_embeddings(len(tokenizer)), save both and point model: at them"
        )


def encode_prompt(tokenizer: Any, prompt: Any) -> list[int]:
    """Token ids of a prompt: text as is, a message list through the chat template."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    else:
        text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


class _Backbone(nn.Module):  # type: ignore[misc]
    def __init__(self, owner: ServerRewardModel) -> None:
        super().__init__()
        self._owner = [owner]  # in a list: not registered as a submodule (no cycle)

    def forward(self, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
        scores = self._owner[0].rewards_for(input_ids, attention_mask)
        values = torch.tensor(scores, dtype=torch.float32, device=input_ids.device)
        hidden = values[:, None, None].expand(input_ids.shape[0], input_ids.shape[1], 1)
        return SimpleNamespace(hidden_states=(hidden,))


class ServerRewardModel(nn.Module):  # type: ignore[misc]
    """A reward model for TRL's PPO that scores through the server (module docstring).

    ``rewards`` are (reward config, weight) pairs; ``prompts`` maps each training
    prompt's token ids to its dataset row (its ``prompt`` and the columns the
    rewards read). Call :meth:`close` when done: it owns an event loop.
    """

    base_model_prefix = "backbone"

    def __init__(
        self,
        rewards: Sequence[tuple[RewardConfig, float]],
        tokenizer: Any,
        prompts: Mapping[tuple[int, ...], Mapping[str, Any]],
    ) -> None:
        super().__init__()
        self.backbone = _Backbone(self)
        self.score = nn.Identity()
        self._rewards = list(rewards)
        self._tokenizer = tokenizer
        self._prompts = prompts
        self._lengths = sorted({len(key) for key in prompts}, reverse=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def split(self, ids: list[int]) -> tuple[Mapping[str, Any], list[int]]:
        """The prompt's dataset row, and the response's ids."""
        for length in self._lengths:
            row = self._prompts.get(tuple(ids[:length]))
            if row is not None:
                return row, ids[length:]
        raise RewardServerError("a PPO query matches no training prompt: only the run's own data is scored")

    def rewards_for(self, input_ids: Any, attention_mask: Any) -> list[float]:
        rows, completions = [], []
        for ids, mask in zip(input_ids.tolist(), attention_mask.bool().tolist(), strict=True):
            row, response = self.split([token for token, keep in zip(ids, mask, strict=True) if keep])
            rows.append(row)
            completions.append(self._tokenizer.decode(response, skip_special_tokens=True))
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        per_reward = self._loop.run_until_complete(self._score(rows, completions))
        totals = [0.0] * len(rows)
        for (config, weight), values in zip(self._rewards, per_reward, strict=True):
            failed = sum(value is None for value in values)
            if failed:
                raise RewardServerError(
                    f"scorer {config.scorer!r} could not score {failed} of {len(values)} samples "
                    "(an unusable request, or the infrastructure; not the model's output, see the "
                    "reasons logged above); PPO cannot leave samples out, so the run stops: fix the "
                    "data, config or server, then resume from the last checkpoint"
                )
            for index, value in enumerate(values):
                totals[index] += weight * (value or 0.0)
        return totals

    async def _score(self, rows: list[Mapping[str, Any]], completions: list[str]) -> list[list[float | None]]:
        calls = []
        for config, _ in self._rewards:
            columns = {column: [row[column] for row in rows] for _, column in config.columns}
            prompts = [row["prompt"] for row in rows]
            calls.append(score_completions(config, prompts, completions, None, **columns))
        return list(await asyncio.gather(*calls))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(close_clients())
            self._loop.close()
            self._loop = None


# --------------------------------------------------------------------------- the run


def run_ppo(config: PPORunConfig) -> RunResult:
    """Train with TRL's PPO, rewards scored by the server; returns when done."""
    ppo_config_cls, ppo_trainer_cls = import_ppo()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from .progress import RewardProgress

    rows = read_jsonl(config.data, config.prompt_column)
    for spec in config.rewards:
        missing = [column for column in spec.columns.values() if column not in rows[0]]
        if missing:
            raise RunConfigError(
                f"{config.data}: reward {spec.scorer!r} reads columns {missing}, not in the data"
            )
    tokenizer = AutoTokenizer.from_pretrained(config.model, padding_side="left")
    check_pad_token(tokenizer)
    prompts: dict[tuple[int, ...], dict[str, Any]] = {}
    first_line: dict[tuple[int, ...], int] = {}
    read = sorted({column for spec in config.rewards for column in spec.columns.values()} - {"prompt"})
    encoded = []
    for line, row in _numbered(config.data, rows):
        ids = encode_prompt(tokenizer, row[config.prompt_column])
        key = tuple(ids)
        entry = {**row, "prompt": row[config.prompt_column]}
        if key in prompts:
            # The reward model knows a rollout by its prompt alone: one prompt, one row's columns.
            differ = [column for column in read if prompts[key].get(column) != entry.get(column)]
            if differ:
                raise RunConfigError(
                    f"{config.data}: lines {first_line[key]} and {line} have the same prompt but "
                    f"different {', '.join(differ)}: PPO scores a response by its prompt, so it cannot "
                    "tell them apart; merge them or make the prompts differ"
                )
        else:
            prompts[key], first_line[key] = entry, line
        encoded.append(ids)

    device = precision(config)
    dtype = _dtype(device["bf16"])
    checkpoint = resume_checkpoint(config)
    done_steps, done_episodes = _progress_in(checkpoint)
    trl_args = {"logging_steps": 1, "report_to": [], **config.trl}
    if "stop_token_id" not in trl_args:
        trl_args.setdefault("stop_token", "eos")  # cut responses at eos, so the reward sees what was said
    args = ppo_config_cls(
        output_dir=str(config.output_dir),
        seed=config.seed,
        kl_coef=config.kl_coef,
        cliprange=config.clip_range,
        response_length=config.response_length,
        save_strategy="steps",
        save_steps=config.checkpoint_every,
        disable_tqdm=True,
        **trl_args,
        **device,
    )
    total = config.total_episodes or int(args.num_train_epochs * len(rows))
    if done_episodes >= total:
        raise RunConfigError(f"{checkpoint} already trained {done_episodes} of {total} episodes")
    args.total_episodes = total - done_episodes

    # The KL anchor is always the starting model, also when resuming.
    policy = AutoModelForCausalLM.from_pretrained(checkpoint or config.model, dtype=dtype)
    ref_model = None if config.lora else AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
    policy_peft = peft_config(config.lora, "CAUSAL_LM")
    if checkpoint is not None and config.lora is not None:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
        policy = PeftModel.from_pretrained(base, str(checkpoint), is_trainable=True)
        policy_peft = None
    value = _value_model(config, checkpoint, tokenizer, dtype, AutoModelForSequenceClassification)

    progress = RewardProgress("ppo", reward_keys=("objective/scores",))
    with reward_server_target(config.server) as (target, token):
        reward_configs = [
            (spec.settings(target, token, config.server), spec.weight) for spec in config.rewards
        ]
        reward_model = ServerRewardModel(reward_configs, tokenizer, prompts)
        callbacks = [_SaveCritic(), _Continue(done_steps, done_episodes), progress]
        try:
            trainer = ppo_trainer_cls(
                args=args,
                processing_class=tokenizer,
                model=policy,
                ref_model=ref_model,
                reward_model=reward_model,
                train_dataset=Dataset.from_dict({"input_ids": encoded}),
                value_model=value,
                peft_config=policy_peft,
                callbacks=callbacks,
            )
            trainer.dataloader = _resumable_dataloader(trainer, config.seed, done_episodes)
            if checkpoint is not None:
                _load_optimizer(trainer.optimizer, checkpoint)
            trainer.train()
        finally:
            progress.close()
            reward_model.close()
    trainer.save_model(str(config.output_dir))
    trainer.model.value_model.save_pretrained(config.output_dir / VALUE_MODEL_DIR)
    tokenizer.save_pretrained(config.output_dir)
    return RunResult(trainer.state.global_step, progress.last_reward, config.output_dir)


def _dtype(bf16: bool) -> Any:
    import torch

    return torch.bfloat16 if bf16 else torch.float32


def _numbered(path: Path, rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Rows with their line numbers in the file (``read_jsonl`` skips blank lines)."""
    lines = [n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip()]
    return list(zip(lines, rows, strict=True))


class _EpochOrder(torch.utils.data.Sampler[int]):  # type: ignore[misc]
    """Prompt order for the run: epoch ``e`` is a permutation seeded by ``(seed, e)``,
    the stream starting ``skip`` prompts in.

    TRL's PPO shuffles with torch's global generator, so a resumed run would draw the
    first epoch's order again and train its first batches twice and its last never.
    Here the order depends on the seed and the epoch alone, so a run resumed after
    ``skip`` prompts sees exactly the prompts the uninterrupted run saw next."""

    def __init__(self, size: int, per_epoch: int, seed: int, skip: int) -> None:
        self.size, self.per_epoch, self.seed = size, per_epoch, seed
        self.epoch, self.skip = divmod(skip, per_epoch) if per_epoch else (0, 0)

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        start, self.skip = self.skip, 0
        self.epoch += 1
        return iter(order[start:])

    def __len__(self) -> int:
        return self.size - self.skip


def _resumable_dataloader(trainer: Any, seed: int, done_episodes: int) -> Any:
    """TRL's dataloader with :class:`_EpochOrder` as its sampler, prepared the same way."""
    from torch.utils.data import DataLoader

    batch = trainer.args.local_batch_size
    processes = trainer.accelerator.num_processes
    per_epoch = len(trainer.train_dataset) // (batch * processes) * batch * processes  # drop_last
    loader = DataLoader(
        trainer.train_dataset,
        batch_size=batch,
        sampler=_EpochOrder(len(trainer.train_dataset), per_epoch, seed, done_episodes),
        collate_fn=trainer.data_collator,
        drop_last=True,
    )
    return trainer.accelerator.prepare(loader)


def _load_optimizer(optimizer: Any, checkpoint: Path) -> None:
    """The optimizer's state (Adam moments) from the checkpoint. The learning-rate
    schedule is not restored: TRL's PPO builds it for the steps this run will do."""
    state_file = checkpoint / "optimizer.pt"
    if not state_file.is_file():
        raise RunConfigError(f"resume: {checkpoint} has no optimizer.pt")
    optimizer.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))


def _progress_in(checkpoint: Path | None) -> tuple[int, int]:
    """(steps, episodes) a checkpoint had done."""
    if checkpoint is None:
        return 0, 0
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunConfigError(f"resume: cannot read {checkpoint / 'trainer_state.json'}: {exc}") from exc
    return int(state["global_step"]), int(state.get("episode", 0))


def _value_model(
    config: PPORunConfig, checkpoint: Path | None, tokenizer: Any, dtype: Any, auto_cls: Any
) -> Any:
    """The critic: a one-label classifier (from value_model:, else the policy's weights,
    with a new value head), LoRA-wrapped when critic_lora is set."""
    saved = checkpoint / VALUE_MODEL_DIR if checkpoint is not None else None
    if saved is not None and not saved.is_dir():
        raise RunConfigError(f"resume: {checkpoint} has no {VALUE_MODEL_DIR}/ (was it written by arbiter?)")
    start = config.value_model or config.model
    if saved is not None and config.critic_lora is None:
        start = saved
    value = auto_cls.from_pretrained(start, num_labels=1, dtype=dtype, pad_token_id=tokenizer.pad_token_id)
    if config.critic_lora is not None:
        from peft import PeftModel, get_peft_model

        if saved is not None:
            value = PeftModel.from_pretrained(value, str(saved), is_trainable=True)
        else:
            value = get_peft_model(value, peft_config(config.critic_lora, "SEQ_CLS"))
    return value


class _SaveCritic(TrainerCallback):  # type: ignore[misc]
    """TRL saves only the policy in a checkpoint; the critic goes beside it, for resume."""

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is not None and hasattr(model, "value_model"):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}" / VALUE_MODEL_DIR
            model.value_model.save_pretrained(folder)


class _Continue(TrainerCallback):  # type: ignore[misc]
    """TRL's PPO loop starts its counters at 0; a resumed run carries on from the checkpoint's."""

    def __init__(self, steps: int, episodes: int) -> None:
        self.steps, self.episodes = steps, episodes

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        state.global_step += self.steps
        state.episode += self.episodes
        state.max_steps += self.steps
