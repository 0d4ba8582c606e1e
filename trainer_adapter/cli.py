"""``arbiter train`` and its stages, and ``arbiter eval``.

Light at import (click only): ``arbiter serve`` imports this module to list the
commands, and must not pay for torch or TRL. Each stage imports its trainer when
it runs.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["eval_command", "train"]

_config_file = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The run's YAML config (see docs/training-rl.md).",
)


@click.group()
def train() -> None:
    """Train a model: SFT for format, then RL against rewards served by Arbiter."""


def _report(stage: str, global_step: int, last_reward: float | None, output_dir: Path) -> None:
    reward = "-" if last_reward is None else f"{last_reward:.4f}"
    click.echo(f"{stage}: {global_step} steps, last mean reward {reward}, saved to {output_dir}")


@train.command()
@_config_file
def grpo(config_path: Path) -> None:
    """GRPO (TRL's GRPOTrainer) with rewards scored by an Arbiter server."""
    from .rewards import RewardServerError
    from .rl import GRPORunConfig, run_grpo
    from .run_config import RunConfigError, load_run_config

    try:
        config = load_run_config(config_path, GRPORunConfig)
        result = run_grpo(config)
    except (RunConfigError, RewardServerError) as exc:
        raise click.ClickException(str(exc)) from exc
    _report("grpo", result.global_step, result.last_reward, result.output_dir)


@train.command()
@_config_file
def ppo(config_path: Path) -> None:
    """PPO (TRL 1.12's trl.experimental.ppo) with rewards scored by an Arbiter server."""
    from .ppo import run_ppo
    from .rewards import RewardServerError
    from .rl import PPORunConfig
    from .run_config import RunConfigError, load_run_config

    try:
        config = load_run_config(config_path, PPORunConfig)
        result = run_ppo(config)
    except (RunConfigError, RewardServerError) as exc:
        raise click.ClickException(str(exc)) from exc
    _report("ppo", result.global_step, result.last_reward, result.output_dir)


@click.command("eval")
@_config_file
def eval_command(config_path: Path) -> None:
    """Generate on a prompt set and report pass@k and accuracy with Arbiter's scorers."""
    from .evaluate import EvalConfig, run_eval
    from .rewards import RewardServerError
    from .run_config import RunConfigError, load_run_config

    try:
        config = load_run_config(config_path, EvalConfig)
        run_eval(config)
    except (RunConfigError, RewardServerError) as exc:
        raise click.ClickException(str(exc)) from exc
