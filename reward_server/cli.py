"""The ``arbiter`` command: ``serve``, ``score`` and ``scorers``.

``score`` and ``scorers`` talk to a running server (``--target``), or start one in
this process on an ephemeral loopback port (``--in-process``), so both paths run
exactly the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sdk import ArbiterError, RewardClient, ScoreResult
from trainer_adapter.cli import data, eval_command, train

from .config import ArbiterConfig, ConfigError, load_config, with_overrides
from .embedded import EmbeddedServer
from .logs import configure_logging
from .server import TOKEN_ENV, ArbiterServer, resolve_token

__all__ = ["main"]

err = Console(stderr=True)


def _load(config_path: Path | None, overrides: Mapping[str, Any]) -> ArbiterConfig:
    config = load_config(config_path)
    return with_overrides(config, server={k: v for k, v in overrides.items() if v is not None})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="arbiter-reward")
def main() -> None:
    """Arbiter: a reward and verification server for LLM post-training."""


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _config_option(help_text: str) -> Decorator:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=help_text,
    )


def _plugin_option(help_text: str) -> Decorator:
    return click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help=help_text)


@main.command()
@_config_option("TOML or YAML config; without it the embedded default is used.")
@_plugin_option("Import scorers from MODULE (repeatable).")
@click.option("--host", default=None, help="Address to bind [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="gRPC port [default: 50051].")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port [default: 9464].")
@click.option("--no-metrics", is_flag=True, help="Do not serve Prometheus metrics.")
@click.option(
    "--http-port",
    type=int,
    default=None,
    help="Also serve the HTTP front door (OpenRLHF, SandboxFusion /run_code, JSON) on this port.",
)
@click.option("--workers", type=int, default=None, help="Worker processes for CPU-bound scorers.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Require this bearer token (or set {TOKEN_ENV}).",
)
@click.option(
    "--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM certificate."
)
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM private key."
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
def serve(
    config_path: Path | None,
    plugins: tuple[str, ...],
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    no_metrics: bool,
    http_port: int | None,
    workers: int | None,
    token_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    log_level: str,
    log_format: str,
) -> None:
    """Serve scorers over gRPC until SIGTERM/SIGINT (in-flight calls are finished)."""
    configure_logging(log_level, json_format=log_format == "json")
    sys.path.insert(0, os.getcwd())  # so --plugin finds modules next to the user
    try:
        config = _load(
            config_path,
            {
                "host": host,
                "port": port,
                "metrics_port": metrics_port,
                "auth_token_file": token_file,
                "tls_cert_file": tls_cert,
                "tls_key_file": tls_key,
            },
        )
        if no_metrics:
            config = with_overrides(config, server={"metrics_port": None})
        if workers is not None:
            config = with_overrides(config, workers={"processes": workers})
        if http_port is not None:
            config = with_overrides(config, http={"enabled": True, "port": http_port})
        server = ArbiterServer(config, plugins=plugins, token=resolve_token(config))
    except (ConfigError, ArbiterError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        asyncio.run(server.run())
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _target(
    target: str | None, in_process: bool, config_path: Path | None, plugins: tuple[str, ...]
) -> Iterator[str]:
    """An address to talk to: the given one, or a server started in this process."""
    if not in_process:
        yield target or "127.0.0.1:50051"
        return
    sys.path.insert(0, os.getcwd())
    try:
        embedded = EmbeddedServer(load_config(config_path), plugins=plugins).start()
    except (ConfigError, ArbiterError, OSError) as exc:
        raise click.ClickException(f"cannot start the in-process server: {exc}") from exc
    try:
        yield embedded.target
    finally:
        embedded.stop()


_target_options: list[Decorator] = [
    click.option("--target", default=None, help="Server address [default: 127.0.0.1:50051]."),
    click.option("--in-process", is_flag=True, help="Start a server in this process instead."),
    _config_option("Config for --in-process."),
    _plugin_option("Plugin module for --in-process."),
    click.option("--token", default=None, envvar=TOKEN_ENV, help=f"Bearer token [env: {TOKEN_ENV}]."),
    click.option(
        "--tls-ca",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="CA certificate: connect with TLS.",
    ),
]


def _with_target_options(fn: Any) -> Any:
    for option in reversed(_target_options):
        fn = option(fn)
    return fn


@main.command()
@_with_target_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def scorers(
    target: str | None,
    in_process: bool,
    config_path: Path | None,
    plugins: tuple[str, ...],
    token: str | None,
    tls_ca: Path | None,
    as_json: bool,
) -> None:
    """List the scorers a server has loaded."""
    try:
        with (
            _target(target, in_process, config_path, plugins) as address,
            RewardClient(address, token=token, root_certificates=tls_ca, reconnect_s=5) as client,
        ):
            infos = client.list_scorers()
    except (ArbiterError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "type": i.type,
                        "description": i.description,
                        "cpu_bound": i.cpu_bound,
                        "default_params": dict(i.default_params),
                        "params_schema": dict(i.params_schema),
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        return
    table = Table("name", "type", "runs in", "description")
    for info in infos:
        table.add_row(info.name, info.type, "workers" if info.cpu_bound else "event loop", info.description)
    Console().print(table)


def _read_jsonl(path: Path, scorer: str | None) -> list[dict[str, Any]]:
    items = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"{path}:{number}: not JSON: {exc}") from exc
            if not isinstance(item, dict):
                raise click.ClickException(f"{path}:{number}: each line must be a JSON object")
            if scorer is not None:
                item.setdefault("scorer", scorer)
            if "scorer" not in item:
                raise click.ClickException(f"{path}:{number}: no 'scorer' (give --scorer or a 'scorer' key)")
            items.append(item)
    return items


def _result_json(result: ScoreResult) -> dict[str, Any]:
    return {
        "reward": result.reward,
        "status": result.status.name,
        "reason": result.reason,
        "components": dict(result.components),
        "details": dict(result.details),
        "scorer": result.scorer,
        "scoring_ms": round(result.scoring_ms, 3),
    }


@main.command()
@_with_target_options
@click.option("--scorer", default=None, help="Scorer name (for --input, the default for lines without one).")
@click.option("--completion", default=None, help="Completion text to score.")
@click.option("--prompt", default=None)
@click.option("--reference", default=None, help="Reference / gold answer.")
@click.option("--params", "params_json", default=None, help="Scorer params as a JSON object.")
@click.option("--tests", "tests_json", default=None, help='Test cases as JSON, e.g. {"io_cases": [...]}.')
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file, one sample per line: scorer, completion, prompt, reference, tests, params, metadata.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one JSON result per line here (default: stdout).",
)
@click.option("--batch-size", default=64, show_default=True, help="Samples per ScoreBatch call.")
def score(
    target: str | None,
    in_process: bool,
    config_path: Path | None,
    plugins: tuple[str, ...],
    token: str | None,
    tls_ca: Path | None,
    scorer: str | None,
    completion: str | None,
    prompt: str | None,
    reference: str | None,
    params_json: str | None,
    tests_json: str | None,
    input_path: Path | None,
    output_path: Path | None,
    batch_size: int,
) -> None:
    """Score one sample from options, or every line of a JSONL file."""
    params = _json_option(params_json, "--params")
    tests = _json_option(tests_json, "--tests")
    if input_path is None:
        if scorer is None:
            raise click.UsageError("give --scorer (and --completion), or --input FILE.jsonl")
        item: dict[str, Any] = {"scorer": scorer, "completion": completion or ""}
        if prompt is not None:
            item["prompt"] = prompt
        if reference is not None:
            item["reference"] = reference
        if params is not None:
            item["params"] = params
        if tests is not None:
            item["tests"] = tests
        items = [item]
    else:
        items = _read_jsonl(input_path, scorer)
        if params is not None:
            for entry in items:
                entry.setdefault("params", params)
    results: list[ScoreResult] = []
    try:
        with (
            _target(target, in_process, config_path, plugins) as address,
            RewardClient(address, token=token, root_certificates=tls_ca, reconnect_s=5) as client,
            Progress(
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                disable=len(items) < 2,
            ) as progress,
        ):
            task = progress.add_task("score", total=len(items))
            for start in range(0, len(items), batch_size):
                part = items[start : start + batch_size]
                results.extend(client.score_batch(part))
                progress.advance(task, len(part))
    except ArbiterError as exc:
        raise click.ClickException(str(exc)) from exc
    lines = [json.dumps(_result_json(r)) for r in results]
    if output_path is not None:
        output_path.write_text("".join(line + "\n" for line in lines))
    else:
        for line in lines:
            click.echo(line)
    if len(results) > 1 or output_path is not None:
        _summary(results)


@main.command()
@_with_target_options
@click.option("--scorer", required=True, help="The scorer (or composite) to audit.")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL samples of your data: prompt, reference, tests, params, metadata (no completion needed).",
)
@click.option("--params", "params_json", default=None, help="Scorer params as a JSON object.")
@click.option("--limit", default=100, show_default=True, help="Use the first N samples.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here."
)
@click.option("--fail-on-reward", is_flag=True, help="Exit with status 1 when any hack earns reward.")
def audit(
    target: str | None,
    in_process: bool,
    config_path: Path | None,
    plugins: tuple[str, ...],
    token: str | None,
    tls_ca: Path | None,
    scorer: str,
    input_path: Path,
    params_json: str | None,
    limit: int,
    json_path: Path | None,
    fail_on_reward: bool,
) -> None:
    """Red-team a reward: send generic hacks built from your samples (empty answers, answer
    spam, format-only, prompt copies, length padding, exit-code and always-equal code)
    and report which earn reward, next to what the reference answer earns."""
    from reward_server.audit import run_audit

    params = _json_option(params_json, "--params")
    items = _read_jsonl(input_path, scorer)[:limit]
    for entry in items:
        if params is not None:
            entry.setdefault("params", params)
    try:
        with (
            _target(target, in_process, config_path, plugins) as address,
            RewardClient(address, token=token, root_certificates=tls_ca, reconnect_s=5) as client,
            Progress(TextColumn("auditing"), BarColumn(), MofNCompleteColumn(), console=err) as progress,
        ):
            task = progress.add_task("audit", total=None)
            rows = run_audit(
                client,
                scorer,
                items,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except ArbiterError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(
        "hack", "tried", "mean reward", "max reward", "rewarded", "verdict", title=f"audit of {scorer!r}"
    )
    for row in rows:
        if not row.tried:
            continue  # does not apply to these samples (a code hack without tests)
        if not row.rewards:
            verdict = "[yellow]not scored[/]"
        elif row.name.startswith("("):
            verdict = "baseline"
        else:
            verdict = "[red]EARNS REWARD[/]" if row.earns_reward else "[green]0[/]"
        table.add_row(
            row.name,
            str(row.tried),
            "-" if row.mean is None else f"{row.mean:.4f}",
            "-" if row.best is None else f"{row.best:.4f}",
            "-" if row.rewarded_share is None else f"{row.rewarded_share:.0%}",
            verdict,
        )
    Console().print(table)
    if json_path is not None:
        report = {"scorer": scorer, "samples": len(items), "rows": [row.as_json() for row in rows]}
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    holes = [row.name for row in rows if row.earns_reward and not row.name.startswith("(")]
    if holes:
        err.print(f"[red]{len(holes)} hack(s) earn reward:[/] {', '.join(holes)}")
    if holes and fail_on_reward:
        sys.exit(1)


def _json_option(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from exc


def _summary(results: list[ScoreResult]) -> None:
    statuses = Counter(r.status.name for r in results)
    scored = [r.reward for r in results if r.ok]
    table = Table("samples", "scored", "mean reward", "statuses", title="summary")
    mean = f"{sum(scored) / len(scored):.4f}" if scored else "-"
    table.add_row(
        str(len(results)), str(len(scored)), mean, ", ".join(f"{k}={v}" for k, v in sorted(statuses.items()))
    )
    err.print(table)
    # Pairwise reward-model results: the share where the chosen answer won.
    verdicts = [
        bool(r.details["chosen_preferred"]) for r in results if r.ok and "chosen_preferred" in r.details
    ]
    if verdicts:
        err.print(f"pairwise accuracy: {sum(verdicts) / len(verdicts):.4f} over {len(verdicts)} pairs")


# Training stages and data checks live with the trainer adapter; the module is light (click only).
main.add_command(train)
main.add_command(data)
main.add_command(eval_command)


if __name__ == "__main__":
    main()
