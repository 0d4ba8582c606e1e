"""``arbiter train`` and its stages, ``arbiter data check`` and ``arbiter eval``.

Light at import (click only): ``arbiter serve`` imports this module to list the
commands, and must not pay for torch or TRL. Each stage imports its trainer when
it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

__all__ = ["data", "eval_command", "train"]

_config_file = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The run's YAML config (see docs/training.md and docs/training-rl.md).",
)


@click.group()
def train() -> None:
    """Train a model: SFT for format, then RL against rewards served by Arbiter."""


@train.command("sft")
@_config_file
def sft(config_path: Path) -> None:
    """Supervised fine-tuning on conversations or prompt-completion pairs (JSONL)."""
    import warnings

    from rich.console import Console

    from .run_config import RunConfigError, load_run_config
    from .sft import SFTRunConfig, run_sft
    from .sft_data import SFTDataError, SFTDataWarning

    console = Console(stderr=True)
    try:
        config = load_run_config(config_path, SFTRunConfig)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SFTDataWarning)
            result = run_sft(config, console)
    except (RunConfigError, SFTDataError) as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in caught:
        if issubclass(warning.category, SFTDataWarning):
            console.print(f"[yellow]warning:[/yellow] {warning.message}", highlight=False)
        else:  # not ours: back to the caller's filters
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    first, last = (result.losses[0], result.losses[-1]) if result.losses else (float("nan"), float("nan"))
    console.print(
        f"Trained {result.global_step} steps; loss {first:.4f} -> {last:.4f}; model in {result.output_dir}",
        highlight=False,
    )


@click.group()
def data() -> None:
    """Inspect training data."""


@data.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write the report")
@click.option("--model", type=click.Path(exists=True, file_okay=False, path_type=Path), help="tokenizer dir")
@click.option("--max-length", type=click.IntRange(min=1), help="tokens (with --model)")
@click.option("--format", "data_format", type=click.Choice(["auto", "messages", "prompt_completion"]))
@click.option("--near-threshold", type=click.FloatRange(0, 1), default=0.8, show_default=True)
def check(
    path: Path,
    json_path: Path | None,
    model: Path | None,
    max_length: int | None,
    data_format: str | None,
    near_threshold: float,
) -> None:
    """Check SFT data: duplicates, lengths, empty or cut-off replies, role order.

    Exits 1 when there are errors (warnings alone exit 0)."""
    from rich.console import Console

    from .data_checks import check_data

    tokenizer: Any = None
    if model is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
    report = check_data(
        path,
        tokenizer=tokenizer,
        max_length=max_length,
        data_format=data_format or "auto",  # type: ignore[arg-type]
        near_threshold=near_threshold,
    )
    _print_report(report, Console())
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.errors:
        raise SystemExit(1)


def _print_report(report: Any, console: Any) -> None:
    from rich.table import Table

    from .data_checks import CHECKS

    console.print(f"[bold]{report.path}[/bold]: {report.rows} rows, format {report.data_format}")
    summary = Table(title="Checks")
    for column in ("check", "result", "rows", "first lines"):
        summary.add_column(column)
    for name in CHECKS:
        found = [f for f in report.findings if f.check == name]
        if not found:
            result = "[green]ok[/green]"
        elif any(f.severity == "error" for f in found):
            result = "[red]error[/red]"
        else:
            result = "[yellow]warning[/yellow]"
        lines = sorted({f.line for f in found})
        summary.add_row(name, result, str(len(lines)), ", ".join(map(str, lines[:8])) or "-")
    console.print(summary)

    stats = report.length_stats()
    if stats:
        console.print(
            f"Length ({report.length_unit}): min {stats['min']:.0f}, median {stats['median']:.0f}, "
            f"p95 {stats['p95']:.0f}, max {stats['max']:.0f}, mean {stats['mean']:.1f}"
        )
        histogram = Table(title=f"Length histogram ({report.length_unit})")
        for column in ("from", "to", "rows", ""):
            histogram.add_column(column)
        top = max(c for _, _, c in report.histogram()) or 1
        for low, high, count in report.histogram():
            histogram.add_row(str(low), str(high - 1), str(count), "\u2588" * round(30 * count / top))
        console.print(histogram)

    if report.findings:
        details = Table(title="Findings (first 30)")
        for column in ("line", "check", "severity", "message"):
            details.add_column(column)
        for finding in report.findings[:30]:
            details.add_row(str(finding.line), finding.check, finding.severity, finding.message)
        console.print(details)
    verdict = "[red]errors found[/red]" if report.errors else "[green]no errors[/green]"
    console.print(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")


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
