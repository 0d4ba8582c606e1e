"""``arbiter train sft``: supervised fine-tuning with TRL's SFTTrainer.

The data is tokenised here (:mod:`.sft_data`: the model's chat template, loss on
assistant tokens only, checked before training), the loss is one of the variants in
:mod:`.losses`, and everything else is TRL's: the ``trl`` mapping of the config is
passed to ``SFTConfig`` over the recipe defaults below. Checkpoints are written every
``checkpoint_every`` steps; ``resume`` continues from one.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from .losses import LossType
from .run_config import RunConfig, RunConfigError

__all__ = ["RECIPE_DEFAULTS", "SFTResult", "SFTRunConfig", "run_sft", "sft_trainer_arguments"]

# The usual full fine-tuning recipe; any of these can be overridden in `trl`.
RECIPE_DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,  # a fraction of the run (transformers reads < 1 as a ratio)
    "max_grad_norm": 1.0,
    "weight_decay": 0.01,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "logging_steps": 10,
}
# A LoRA adapter has few parameters and is trained with a larger step.
LORA_LEARNING_RATE = 1e-4
# Keys the run config owns; set at the top level, not in `trl`.
_OWNED = {
    "output_dir": "output_dir",
    "seed": "seed",
    "save_steps": "checkpoint_every",
    "save_strategy": "checkpoint_every",
    "max_length": "max_length",
    "use_cpu": "device",
    "resume_from_checkpoint": "resume",
    "dataset_kwargs": "(built in)",
    "remove_unused_columns": "(built in)",
    "completion_only_loss": "(loss is on assistant tokens only, always)",
    "assistant_only_loss": "(loss is on assistant tokens only, always)",
    "loss_type": "loss",
}


class SFTRunConfig(RunConfig):
    """The SFT stage's YAML file: the common keys plus these."""

    format: Literal["auto", "messages", "prompt_completion"] = "auto"
    loss: LossType = "token_mean"
    max_length: int | None = Field(1024, gt=0, description="tokens; longer rows are cut from the right")
    chat_template: str | None = Field(
        None, description="training chat template (file, model directory or text); default: the model's own"
    )
    inference_chat_template: str | None = Field(
        None,
        description="the template used at inference (file, model directory or text), compared with the "
        "training one; default: the model's own",
    )
    show_sample: bool = Field(True, description="print a decoded row with its loss-carrying tokens marked")

    # a file or model directory named here is relative to the config file, like other paths
    _file_or_text: ClassVar[tuple[str, ...]] = ("chat_template", "inference_chat_template")

    @field_validator("trl")
    @classmethod
    def _not_owned(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in _OWNED:
                raise ValueError(f"{key!r} is set by {_OWNED[key]!r} at the top level, not in trl")
        return value


@dataclass(frozen=True)
class SFTResult:
    global_step: int
    losses: list[float]  # the logged training loss, in order
    output_dir: Path
    resumed_from: str | None


def sft_trainer_arguments(config: SFTRunConfig, *, use_cpu: bool, bf16: bool) -> dict[str, Any]:
    """The keyword arguments for TRL's ``SFTConfig``: recipe defaults, then ``trl``."""
    arguments = dict(RECIPE_DEFAULTS)
    if config.lora is not None:
        arguments["learning_rate"] = LORA_LEARNING_RATE
    arguments.update(
        {
            "report_to": [],
            "bf16": bf16,
            "disable_tqdm": True,  # the rich progress bar replaces it
        }
    )
    arguments.update(config.trl)
    arguments.update(
        {
            "output_dir": str(config.output_dir),
            "seed": config.seed,
            "use_cpu": use_cpu,
            "save_strategy": "steps",
            "save_steps": config.checkpoint_every,
            "max_length": config.max_length,
            "dataset_kwargs": {"skip_prepare_dataset": True},  # tokenised and checked here
            "remove_unused_columns": False,  # keeps the loss weights for the loss
            # our loss function reads the full logits; TRL's default `chunked_nll` patches the head instead
            "loss_type": "nll",
        }
    )
    if config.loss != "token_mean":
        # per-batch means: scaling by the token count across devices would be wrong for them
        arguments["average_tokens_across_devices"] = False
    return arguments


def run_sft(config: SFTRunConfig, console: Any = None) -> SFTResult:
    """Load, check, train; raises :class:`~.sft_data.SFTDataError` or
    :class:`~.run_config.RunConfigError` before the first step when something is wrong."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from datasets import Dataset
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    from .losses import SFTLoss
    from .sft_data import (
        SFTDataWarning,
        check_masking,
        compare_chat_templates,
        detect_format,
        loss_sample,
        read_jsonl,
        resolve_chat_template,
        tokenize_rows,
        turns_of,
    )

    console = console or Console(stderr=True)
    use_cpu, bf16 = _device(config.device, torch)
    try:
        args = SFTConfig(**sft_trainer_arguments(config, use_cpu=use_cpu, bf16=bf16))
    except (TypeError, ValueError) as exc:
        raise RunConfigError(f"trl: {exc}") from exc

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    own_template = tokenizer.chat_template
    if config.chat_template is not None:
        tokenizer.chat_template = resolve_chat_template(config.chat_template)
    if tokenizer.chat_template is None:
        raise RunConfigError(f"{config.model}: the tokenizer has no chat template; set chat_template")
    # Right padding for training: the loss is read position by position from the left.
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # safe here: labels come from the masks, not from pad ids

    rows = read_jsonl(config.data)
    data_format = detect_format(rows, config.format)
    tokenized = tokenize_rows(tokenizer, rows, data_format, config.max_length)
    check_masking(tokenizer, tokenized)
    if config.show_sample:
        console.print("[bold]Loss-carrying tokens[/bold] (between \u27e6 \u27e7) in row 1:")
        console.print(loss_sample(tokenizer, tokenized[0]), markup=False, highlight=False)

    inference_template = (
        resolve_chat_template(config.inference_chat_template)
        if config.inference_chat_template is not None
        else own_template
    )
    conversations = [
        t
        for t in (turns_of(r, data_format, i) for i, r in enumerate(rows[:8]))
        if t and not isinstance(t, str)
    ]
    if inference_template is not None and conversations:
        difference = compare_chat_templates(
            tokenizer, tokenizer.chat_template, inference_template, conversations
        )
        if difference:
            warnings.warn(difference, SFTDataWarning, stacklevel=2)

    dataset = Dataset.from_dict(
        {
            "input_ids": [r.input_ids for r in tokenized],
            "labels": [r.labels for r in tokenized],
            "loss_weights": [r.weights for r in tokenized],
        }
    )
    model = AutoModelForCausalLM.from_pretrained(
        config.model, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    peft_config = None
    if config.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
            task_type="CAUSAL_LM",
        )

    resume_from: str | None = None
    if config.resume is True:
        resume_from = get_last_checkpoint(str(config.output_dir)) if config.output_dir.is_dir() else None
        if resume_from is None:
            console.print(f"No checkpoint in {config.output_dir} yet: starting from the beginning.")
    elif config.resume:
        resume_from = str(config.resume)
        if not Path(resume_from).is_dir():
            raise RunConfigError(f"resume: {resume_from} is not a checkpoint directory")

    loss = SFTLoss(config.loss)
    trainer_type = _trainer_class(SFTTrainer)
    trainer = trainer_type(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=_Collator(tokenizer.pad_token_id),
        peft_config=peft_config,
        compute_loss_func=loss,
        callbacks=[_progress_callback(console)],
    )
    trainer.remove_callback(PrinterCallback)  # the progress callback prints the loss instead
    trainer.sft_loss = loss
    trainer.loss_is_scaled_for_ga = loss.normalises_over_accumulated_batch
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(config.output_dir))
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return SFTResult(trainer.state.global_step, losses, config.output_dir, resume_from)


def _device(device: str, torch: Any) -> tuple[bool, bool]:
    """(use_cpu, bf16)."""
    cuda = bool(torch.cuda.is_available())
    if device == "cuda" and not cuda:
        raise RunConfigError("device: cuda was asked for, but no CUDA device is available")
    on_gpu = cuda and device != "cpu"
    return not on_gpu, on_gpu and bool(torch.cuda.is_bf16_supported())


class _Collator:
    """Right-pads input ids (pad token), labels (-100) and loss weights (0)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(e["input_ids"]) for e in examples)

        def padded(key: str, value: float, dtype: Any) -> Any:
            return torch.tensor(
                [list(e[key]) + [value] * (width - len(e[key])) for e in examples], dtype=dtype
            )

        return {
            "input_ids": padded("input_ids", self.pad_token_id, torch.long),
            "attention_mask": torch.tensor(
                [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples]
            ),
            "labels": padded("labels", -100, torch.long),
            "loss_weights": padded("loss_weights", 0.0, torch.float32),
        }


def _trainer_class(base: Any) -> Any:
    class ArbiterSFTTrainer(base):  # type: ignore[misc]
        """SFTTrainer that hands each batch's loss weights to the loss function."""

        sft_loss: Any = None

        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            weights = inputs.pop("loss_weights", None)
            if self.sft_loss is not None:
                self.sft_loss.weights = weights
            return super().compute_loss(model, inputs, *args, **kwargs)

    return ArbiterSFTTrainer


def _progress_callback(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):  # type: ignore[misc]
        """A progress bar over optimizer steps, with the last logged loss."""

        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            self.progress = Progress(
                TextColumn("sft"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "sft", total=state.max_steps, completed=state.global_step, loss="-"
            )

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if self.progress is not None and logs and "loss" in logs:
                self.progress.update(self.task, loss=f"{logs['loss']:.4f}")
                console.print(f"step {state.global_step}: loss {logs['loss']:.4f}", highlight=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return RichProgress()
