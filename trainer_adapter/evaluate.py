"""``arbiter eval``: sample a model on a prompt set, score every sample with the same
scorers training used, and report accuracy and pass@k, as a table and a JSON file.

::

    model: runs/grpo
    data: data/test.jsonl          # prompt + the columns the scorers read (answer, tests)
    server: {embedded: true}       # or {target: host:port}
    rewards:
      - {scorer: math, columns: {reference: answer}}
    n: 8                           # samples per prompt
    k: [1, 8]
    temperature: 0.8
    report: eval.json

A sample passes when its scorer answers OK with a reward of at least
``pass_threshold`` (1.0: a correct math answer, every code test passing). pass@k is
the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)`` for ``c``
passing samples out of ``n``, averaged over prompts. A sample whose scoring failed
for infrastructure reasons is left out (it is neither right nor wrong) and counted
apart; a prompt left with fewer than ``k`` scored samples is left out of pass@k.

Generation uses vLLM when it is installed and a CUDA device is present
(``backend: auto``), else transformers; the command says which, and why.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from rich.console import Console
from rich.table import Table

from .rewards import Targets, close_clients, score_completions
from .rl import RewardSpec, ServerSettings, read_jsonl, reward_server_target
from .run_config import RunConfigError, _Strict

__all__ = ["EvalConfig", "EvalReport", "pass_at_k", "run_eval"]

_SCORE_CHUNK = 64  # samples per ScoreBatch call


class EvalConfig(_Strict):
    model: Path = Field(description="local model directory")
    data: Path = Field(description="JSONL prompt set: a prompt column and what the scorers read")
    server: ServerSettings
    rewards: list[RewardSpec] = Field(min_length=1)
    prompt_column: str = "prompt"
    n: int = Field(1, gt=0, description="samples per prompt")
    k: list[int] = Field(default_factory=lambda: [1], description="pass@k for each k (each <= n)")
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(8, gt=0, description="prompts per generation batch (transformers)")
    pass_threshold: float = Field(1.0, description="a sample passes at this reward or above")
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    limit: int | None = Field(None, gt=0, description="use the first N prompts")
    report: Path = Field(Path("eval.json"), description="where the JSON report goes")

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        too_big = [k for k in self.k if k < 1 or k > self.n]
        if too_big:
            raise ValueError(f"k must be between 1 and n={self.n}: {too_big}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 needs temperature > 0 (greedy decoding gives n copies of one sample)")
        names = [spec.name or spec.scorer for spec in self.rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must differ (give each a name:): {names}")
        return self


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for ``c`` passing samples out of ``n``: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class ScorerReport:
    name: str
    scored: int = 0
    infrastructure_failures: int = 0
    passed: int = 0
    reward_sum: float = 0.0
    pass_at: dict[int, float] = field(default_factory=dict)
    # prompts behind each pass@k: one with fewer than k scored samples is left out
    pass_at_prompts: dict[int, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "infrastructure_failures": self.infrastructure_failures,
            "accuracy": self.passed / self.scored if self.scored else None,
            "mean_reward": self.reward_sum / self.scored if self.scored else None,
            "pass@k": {str(k): value for k, value in self.pass_at.items()},
            "pass@k_prompts": {str(k): count for k, count in self.pass_at_prompts.items()},
        }


@dataclass
class EvalReport:
    backend: str
    scorers: list[ScorerReport]
    samples: list[dict[str, Any]]

    def as_json(self, config: EvalConfig) -> dict[str, Any]:
        return {
            "model": str(config.model),
            "data": str(config.data),
            "backend": self.backend,
            "n": config.n,
            "k": config.k,
            "temperature": config.temperature,
            "pass_threshold": config.pass_threshold,
            "prompts": len(self.samples),
            "scorers": {report.name: report.as_json() for report in self.scorers},
            "samples": self.samples,
        }


def run_eval(config: EvalConfig, console: Console | None = None) -> EvalReport:
    """Generate, score, print the table and write the JSON report."""
    console = console or Console()
    rows = read_jsonl(config.data, config.prompt_column)[: config.limit]
    for spec in config.rewards:
        missing = [column for column in spec.columns.values() if column not in rows[0]]
        if missing:
            raise RunConfigError(
                f"{config.data}: reward {spec.scorer!r} reads columns {missing}, not in the data"
            )
    backend, why = choose_backend(config.backend, config.device)
    console.print(f"generating {config.n} sample(s) for {len(rows)} prompt(s) with {backend} ({why})")
    prompts = [row[config.prompt_column] for row in rows]
    generate = _generate_vllm if backend == "vllm" else _generate_transformers
    completions = generate(config, prompts)
    with reward_server_target(config.server) as (target, token):
        rewards = asyncio.run(_score(config, target, token, rows, completions))
    report = _report(config, backend, rows, completions, rewards)
    console.print(_table(config, report))
    config.report.parent.mkdir(parents=True, exist_ok=True)
    config.report.write_text(json.dumps(report.as_json(config), indent=2) + "\n")
    console.print(f"report written to {config.report}")
    return report


def choose_backend(wanted: str, device: str) -> tuple[str, str]:
    """``(backend, why)``: vLLM needs the package and a CUDA device."""
    import importlib.util

    import torch

    has_vllm = importlib.util.find_spec("vllm") is not None
    cuda = torch.cuda.is_available() and device != "cpu"
    if wanted == "vllm":
        if not (has_vllm and cuda):
            raise RunConfigError(
                "backend: vllm needs the vllm package (pip install 'arbiter-reward[vllm]') and a CUDA device"
            )
        return "vllm", "as configured"
    if wanted == "transformers":
        return "transformers", "as configured"
    if has_vllm and cuda:
        return "vllm", "installed, and a CUDA device is present"
    return "transformers", "vllm is not installed" if not has_vllm else "no CUDA device for vllm"


def _prompt_text(tokenizer: Any, prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return str(tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True))


def _generate_transformers(config: EvalConfig, prompts: Sequence[Any]) -> list[list[str]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .rl import use_cuda

    torch.manual_seed(config.seed)
    cuda = use_cuda(config.device)
    tokenizer = AutoTokenizer.from_pretrained(config.model, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # generation only: no loss reads the mask
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).to("cuda" if cuda else "cpu")
    model.eval()
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": config.temperature, "top_p": 1.0, "top_k": 0}
        if config.temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    out: list[list[str]] = []
    for start in range(0, len(prompts), config.batch_size):
        texts = [_prompt_text(tokenizer, p) for p in prompts[start : start + config.batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            generated = model.generate(
                **batch,
                max_new_tokens=config.max_new_tokens,
                num_return_sequences=config.n,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        new = generated[:, batch["input_ids"].shape[1] :]
        decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
        out.extend(decoded[i : i + config.n] for i in range(0, len(decoded), config.n))
    return out


def _generate_vllm(config: EvalConfig, prompts: Sequence[Any]) -> list[list[str]]:  # pragma: no cover - GPU
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    llm = LLM(model=str(config.model), seed=config.seed)
    params = SamplingParams(n=config.n, temperature=config.temperature, max_tokens=config.max_new_tokens)
    outputs = llm.generate([_prompt_text(tokenizer, p) for p in prompts], params)
    return [[choice.text for choice in output.outputs] for output in outputs]


async def _score(
    config: EvalConfig,
    target: Targets,
    token: str | None,
    rows: Sequence[dict[str, Any]],
    completions: Sequence[Sequence[str]],
) -> list[list[float | None]]:
    """Per reward, the flat list (prompt-major) of every sample's reward or None."""
    flat_rows = [row for row, samples in zip(rows, completions, strict=True) for _ in samples]
    flat = [text for samples in completions for text in samples]
    prompts = [row[config.prompt_column] for row in flat_rows]
    out: list[list[float | None]] = []
    try:
        for spec in config.rewards:
            settings = spec.settings(target, token, config.server)
            values: list[float | None] = []
            for start in range(0, len(flat), _SCORE_CHUNK):
                part = slice(start, start + _SCORE_CHUNK)
                columns = {
                    column: [row[column] for row in flat_rows[part]] for column in spec.columns.values()
                }
                values += await score_completions(settings, prompts[part], flat[part], None, **columns)
            out.append(values)
    finally:
        await close_clients()
    return out


def _report(
    config: EvalConfig,
    backend: str,
    rows: Sequence[dict[str, Any]],
    completions: Sequence[Sequence[str]],
    rewards: Sequence[Sequence[float | None]],
) -> EvalReport:
    names = [spec.name or spec.scorer for spec in config.rewards]
    reports = [ScorerReport(name) for name in names]
    samples: list[dict[str, Any]] = []
    offset = 0
    per_prompt: list[list[list[float | None]]] = []  # [reward][prompt][sample]
    for values in rewards:
        per_prompt.append([])
        offset = 0
        for samples_of_prompt in completions:
            per_prompt[-1].append(list(values[offset : offset + len(samples_of_prompt)]))
            offset += len(samples_of_prompt)
    for index, (row, texts) in enumerate(zip(rows, completions, strict=True)):
        samples.append(
            {
                "prompt": row[config.prompt_column],
                "completions": list(texts),
                "rewards": {name: per_prompt[r][index] for r, name in enumerate(names)},
            }
        )
    for report, prompt_values in zip(reports, per_prompt, strict=True):
        estimates: dict[int, list[float]] = {k: [] for k in config.k}
        for values in prompt_values:
            scored = [value for value in values if value is not None]
            passed = sum(value >= config.pass_threshold for value in scored)
            report.scored += len(scored)
            report.infrastructure_failures += len(values) - len(scored)
            report.passed += passed
            report.reward_sum += sum(scored)
            for k in config.k:
                if len(scored) >= k:
                    estimates[k].append(pass_at_k(len(scored), passed, k))
        report.pass_at = {k: sum(v) / len(v) for k, v in estimates.items() if v}
        report.pass_at_prompts = {k: len(v) for k, v in estimates.items()}
    return EvalReport(backend, reports, samples)


def _table(config: EvalConfig, report: EvalReport) -> Table:
    table = Table(
        "scorer",
        "scored",
        "infra failures",
        "mean reward",
        "accuracy",
        *(f"pass@{k}" for k in config.k),
        title=f"eval of {config.model.name}: {len(report.samples)} prompts x {config.n} samples",
        caption="pass@k (prompts): a prompt with fewer than k scored samples is left out",
    )
    for scorer in report.scorers:
        data = scorer.as_json()

        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        table.add_row(
            scorer.name,
            str(scorer.scored),
            str(scorer.infrastructure_failures),
            cell(data["mean_reward"]),
            cell(data["accuracy"]),
            *(f"{cell(scorer.pass_at.get(k))} ({scorer.pass_at_prompts.get(k, 0)})" for k in config.k),
        )
    return table
