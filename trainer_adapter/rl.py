"""RL stages of ``arbiter train``: configs, the reward server a run talks to, and GRPO.

A GRPO or PPO run reads one YAML file (:class:`GRPORunConfig` / :class:`PPORunConfig`,
both extending :class:`~trainer_adapter.run_config.RunConfig`)::

    model: runs/sft
    data: data/math.jsonl          # one JSON object per line, with a prompt column
    output_dir: runs/grpo
    server: {target: 127.0.0.1:50051}      # or {embedded: true, config: reward.yaml}
    rewards:
      - {scorer: format, params: {tags: [think, answer]}, weight: 0.2}
      - {scorer: math, columns: {reference: answer}}
    kl_coef: 0.05                  # GRPO beta / PPO kl_coef
    clip_range: 0.2                # GRPO epsilon / PPO cliprange
    checkpoint_every: 50
    trl: {learning_rate: 1.0e-6}   # anything else the TRL config class accepts

Keys the file sets at the top level (``kl_coef``, ``clip_range``, ``use_vllm``...)
may not be repeated under ``trl``: one place per setting. TRL and torch are
imported when a run starts, never when the config is read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from .jsonl import read_jsonl_objects
from .rewards import RewardConfig, Targets, reward_config
from .run_config import LoraSettings, RunConfig, RunConfigError, _Strict

__all__ = [
    "GRPORunConfig",
    "PPORunConfig",
    "RewardSpec",
    "RunResult",
    "ServerSettings",
    "reward_server_target",
    "run_grpo",
]


class ServerSettings(_Strict):
    """Where rewards are scored: a running server, or one started in this process."""

    target: str | list[str] | None = Field(
        None, description="address of a running server, host:port, or a list of replicas"
    )
    token_file: Path | None = Field(
        None, description="file holding the bearer token, if the server wants one"
    )
    embedded: bool = Field(False, description="start a server in this process for the run")
    config: Path | None = Field(None, description="server config (TOML/YAML) for the embedded server")
    plugins: list[str] = Field(default_factory=list, description="plugin modules for the embedded server")
    max_wait_s: float = Field(
        300.0, gt=0, description="how long a call waits for a restarting server before the run fails"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ServerSettings:
        if self.embedded == (self.target is not None):
            raise ValueError("give exactly one of server.target or server.embedded: true")
        if not self.embedded and (self.config is not None or self.plugins):
            raise ValueError("server.config and server.plugins are for the embedded server only")
        return self


class RewardSpec(_Strict):
    """One reward: a scorer on the server, its parameters, weight and dataset columns."""

    scorer: str
    params: dict[str, Any] = Field(default_factory=dict)
    weight: float = 1.0
    columns: dict[str, str] = Field(
        default_factory=dict, description="sample field -> dataset column, e.g. {reference: answer}"
    )
    name: str | None = Field(None, description="metric name; default arbiter_<scorer>")

    @model_validator(mode="after")
    def _known_fields(self) -> RewardSpec:
        from .rewards import SAMPLE_FIELDS

        unknown = set(self.columns) - set(SAMPLE_FIELDS)
        if unknown:
            raise ValueError(f"columns maps unknown sample fields {sorted(unknown)}; use {SAMPLE_FIELDS}")
        return self

    def settings(self, target: Targets, token: str | None, server: ServerSettings) -> RewardConfig:
        """This reward's client settings, against the run's server."""
        return reward_config(
            self.scorer,
            target,
            columns=self.columns,
            params=self.params,
            token=token,
            max_wait_s=server.max_wait_s,
            name=self.name,
        )


class _RLConfig(RunConfig):
    server: ServerSettings
    rewards: list[RewardSpec] = Field(min_length=1)
    prompt_column: str = "prompt"
    kl_coef: float = Field(0.05, ge=0, description="KL penalty towards the reference policy")
    clip_range: float = Field(0.2, gt=0, description="PPO-style ratio clipping")
    bf16: bool | None = Field(None, description="bfloat16 weights and compute; default: on with CUDA")

    # TRL keys that have a top-level home here: the message names it.
    _owned: ClassVar[dict[str, str]] = {}

    @model_validator(mode="after")
    def _no_duplicates(self) -> _RLConfig:
        owned = {
            "output_dir": "output_dir",
            "seed": "seed",
            "save_steps": "checkpoint_every",
            "bf16": "bf16",
            "use_cpu": "device",
            **self._owned,
        }
        clashes = [f"trl.{key} (use {owned[key]})" for key in self.trl if key in owned]
        if clashes:
            raise ValueError(f"set these at the top level, not under trl: {', '.join(clashes)}")
        names = [spec.name or f"arbiter_{spec.scorer}" for spec in self.rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must differ (give each a name:): {names}")
        return self


class GRPORunConfig(_RLConfig):
    """``arbiter train grpo``."""

    num_generations: int = Field(4, ge=2, description="completions per prompt (the group)")
    max_completion_length: int = Field(256, gt=0)
    use_vllm: bool = Field(False, description="generate with vLLM (GPU, the vllm extra)")
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate", description="colocate: vLLM in the trainer's process; server: a `trl vllm-serve` process"
    )

    _owned: ClassVar[dict[str, str]] = {
        "beta": "kl_coef",
        "epsilon": "clip_range",
        "num_generations": "num_generations",
        "max_completion_length": "max_completion_length",
        "use_vllm": "use_vllm",
        "vllm_mode": "vllm_mode",
        "reward_weights": "rewards[].weight",
    }


class PPORunConfig(_RLConfig):
    """``arbiter train ppo``."""

    value_model: Path | None = Field(
        None, description="critic to start from; default: a one-label classifier on the policy's weights"
    )
    critic_lora: LoraSettings | None = Field(None, description="LoRA on the critic, to fit memory")
    total_episodes: int | None = Field(
        None, gt=0, description="episodes (prompts) the run trains on; default: one epoch of the data"
    )
    response_length: int = Field(128, gt=0, description="new tokens per response")

    _owned: ClassVar[dict[str, str]] = {
        "kl_coef": "kl_coef",
        "cliprange": "clip_range",
        "total_episodes": "total_episodes",
        "response_length": "response_length",
    }


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports: steps done, the last mean reward logged, where it is."""

    global_step: int
    last_reward: float | None
    output_dir: Path


# --------------------------------------------------------------------------- shared


@contextlib.contextmanager
def reward_server_target(settings: ServerSettings) -> Iterator[tuple[Targets, str | None]]:
    """``(target, token)`` for the run: the configured server, or an embedded one that
    lives as long as the ``with`` block."""
    token = settings.token_file.read_text().strip() if settings.token_file else None
    if not settings.embedded:
        assert settings.target is not None
        yield settings.target, token
        return
    from reward_server.config import load_config
    from reward_server.embedded import EmbeddedServer

    server = EmbeddedServer(load_config(settings.config), plugins=settings.plugins, token=token).start()
    try:
        yield server.target, token
    finally:
        server.stop()


def read_jsonl(path: Path, required: str) -> list[dict[str, Any]]:
    """Rows of a JSONL file, each required to have ``required``; errors name the line."""
    rows = read_jsonl_objects(path, RunConfigError)
    for number, row in enumerate(rows, 1):
        if required not in row:
            raise RunConfigError(f"{path}: row {number}: expected a {required!r} key")
    return rows


def use_cuda(device: str) -> bool:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RunConfigError("device: cuda, but torch sees no CUDA device")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def precision(config: _RLConfig) -> dict[str, Any]:
    """TRL arguments for the device and dtype: bf16 by default on CUDA, fp32 on CPU."""
    cuda = use_cuda(config.device)
    bf16 = cuda if config.bf16 is None else config.bf16
    return {"use_cpu": not cuda, "bf16": bf16}


def peft_config(settings: LoraSettings | None, task_type: str) -> Any:
    if settings is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type=task_type,
    )


def resume_checkpoint(config: RunConfig) -> Path | None:
    """The checkpoint to resume from: ``resume: true`` means the newest in output_dir;
    a path is used as given (``load_run_config`` made it relative to the config file)."""
    if config.resume is False:
        return None
    if isinstance(config.resume, Path):
        path = config.resume
        if not path.is_dir():
            raise RunConfigError(f"resume: {path} is not a checkpoint directory")
        return path
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(config.output_dir)) if config.output_dir.is_dir() else None
    if last is None:
        raise RunConfigError(f"resume: true, but {config.output_dir} holds no checkpoint-N directory")
    return Path(last)


def trl_version_hint() -> str:
    return "pip install 'trl==1.12.*' (the train extra: pip install 'arbiter-reward[train]')"


# --------------------------------------------------------------------------- GRPO


def run_grpo(config: GRPORunConfig) -> RunResult:
    """Train with TRL's GRPOTrainer, rewards scored by the server; returns when done."""
    try:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:
        raise RunConfigError(f"GRPO needs TRL: {trl_version_hint()} ({exc})") from exc

    from .progress import RewardProgress
    from .rewards import combined_reward

    rows = read_jsonl(config.data, config.prompt_column)
    if config.prompt_column != "prompt":
        rows = [
            {**{k: v for k, v in row.items() if k != "prompt"}, "prompt": row[config.prompt_column]}
            for row in rows
        ]
    _check_columns(config.rewards, rows[0], config.data)
    device = precision(config)
    checkpoint = resume_checkpoint(config)
    args = GRPOConfig(
        output_dir=str(config.output_dir),
        seed=config.seed,
        beta=config.kl_coef,
        epsilon=config.clip_range,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        reward_weights=[1.0],  # the weights are applied in the one combined reward function
        save_strategy="steps",
        save_steps=config.checkpoint_every,
        disable_tqdm=True,
        **{"logging_steps": 1, "report_to": [], **config.trl},
        **device,
    )
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForCausalLM.from_pretrained(config.model, dtype=_dtype(device["bf16"]))
    with reward_server_target(config.server) as (target, token):
        # One reward function for all scorers: TRL sums the rewards that are not None, so
        # a failed part next to others would count as 0; combined, the sample is left out.
        reward = combined_reward(
            [(spec.settings(target, token, config.server), spec.weight) for spec in config.rewards]
        )
        progress = RewardProgress("grpo", reward_keys=("reward",))
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config(config.lora, "CAUSAL_LM"),
            callbacks=[progress],
        )
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finally:
            progress.close()
    trainer.save_model(str(config.output_dir))
    tokenizer.save_pretrained(config.output_dir)
    return RunResult(trainer.state.global_step, progress.last_reward, config.output_dir)


def _dtype(bf16: bool) -> Any:
    import torch

    return torch.bfloat16 if bf16 else torch.float32


def _check_columns(rewards: list[RewardSpec], row: Mapping[str, Any], data: Path) -> None:
    for spec in rewards:
        missing = [column for column in spec.columns.values() if column not in row]
        if missing:
            raise RunConfigError(
                f"{data}: reward {spec.scorer!r} reads columns {missing}, absent from the data"
            )
