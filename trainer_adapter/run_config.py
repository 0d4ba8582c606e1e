"""What every ``arbiter train`` stage reads from its YAML file.

One file per run, validated as a whole before anything heavy is imported, so a typo
costs a second, not a model load. Each stage (``sft``, ``grpo``, ``ppo``) extends
:class:`RunConfig` with its own keys; ``trl`` is passed through to the stage's TRL
config class untouched (anything TRL accepts, TRL validates)::

    model: runs/tiny-base          # a local directory (from_pretrained)
    data: data/train.jsonl
    output_dir: runs/sft
    checkpoint_every: 50
    lora: {r: 16, alpha: 32}
    trl: {num_train_epochs: 2, learning_rate: 2.0e-5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["LoraSettings", "RunConfig", "RunConfigError", "load_run_config"]


class RunConfigError(ValueError):
    """The run's config file is unreadable or invalid; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Strict):
    """A LoRA adapter (peft) instead of full fine-tuning, to fit memory."""

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class RunConfig(_Strict):
    """Keys common to every training stage."""

    model: Path = Field(description="local model directory, loaded with from_pretrained")
    data: Path = Field(description="training data, JSONL")
    output_dir: Path
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lora: LoraSettings | None = None
    checkpoint_every: int = Field(50, gt=0, description="save a checkpoint every N optimizer steps")
    resume: bool | Path = Field(
        False, description="true: resume from the newest checkpoint in output_dir; a path: from that one"
    )
    trl: dict[str, Any] = Field(
        default_factory=dict, description="passed through to the stage's TRL config class"
    )

    # text keys that may instead name a file, resolved like paths (see _relative_to)
    _file_or_text: ClassVar[tuple[str, ...]] = ()


# Any strict config model loads the same way (``arbiter eval`` has its own).
RunConfigT = TypeVar("RunConfigT", bound=BaseModel)


def load_run_config(path: Path, config_type: type[RunConfigT]) -> RunConfigT:
    """Read a YAML run config; relative paths in it are relative to the file's folder."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RunConfigError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise RunConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = config_type.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise RunConfigError(f"{path}: {problems}") from exc
    return _relative_to(config, path.parent)


def _relative_to(config: RunConfigT, base: Path) -> RunConfigT:
    """Relative paths, at any depth of nested sections, made relative to ``base``; so
    are text keys a model lists in ``_file_or_text`` when they name a file rather than
    hold the text itself (a Jinja template always has a ``{``)."""
    file_or_text: tuple[str, ...] = getattr(config, "_file_or_text", ())
    updates: dict[str, Any] = {}
    for name, value in config:
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = base / value
        elif isinstance(value, BaseModel):
            updates[name] = _relative_to(value, base)
        elif name in file_or_text and isinstance(value, str) and _names_a_file(value):
            updates[name] = str(base / value)
    return config.model_copy(update=updates)


def _names_a_file(value: str) -> bool:
    return "{" not in value and "\n" not in value and not Path(value).is_absolute()
