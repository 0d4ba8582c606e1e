"""Server configuration: one validated model, from TOML or YAML, or the embedded default.

Every section has sane defaults, so an empty file (or none) gives a working server
with every built-in scorer under its own name. A file adds named scorers (a type
plus default parameters and limits), composites, plugins and server settings::

    [server]
    port = 50051

    [scorers.strict_math]
    type = "math"
    timeout_s = 3
    params = { strict = true }
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ArbiterConfig",
    "ConfigError",
    "HttpSection",
    "ScorerConfig",
    "ServerSection",
    "WorkerSection",
    "load_config",
    "with_overrides",
]


class ConfigError(ValueError):
    """The configuration file is unreadable or invalid; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSection(_Strict):
    """Network, limits and security of the gRPC server."""

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    max_request_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest accepted gRPC message")
    max_sample_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="largest single sample; larger ones get INVALID_INPUT alone"
    )
    max_batch_size: int = Field(8192, gt=0)
    max_stream_inflight: int = Field(1024, gt=0, description="samples in flight per StreamScore call")
    grace_period_s: float = Field(30.0, ge=0, description="time SIGTERM gives in-flight calls")
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="Prometheus HTTP port; null = off")
    auth_token_file: Path | None = Field(
        None, description="file holding the bearer token; see also ARBITER_TOKEN"
    )
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        return self


class HttpSection(_Strict):
    """The HTTP front door: OpenRLHF's remote reward protocol, SandboxFusion's
    ``/run_code`` and plain JSON scoring, beside gRPC in the same process (same
    scorers, limits, token and TLS). Off unless enabled."""

    enabled: bool = False
    host: str | None = Field(None, description="address to bind; null = the gRPC host")
    port: int = Field(8080, ge=0, le=65535, description="8080 is SandboxFusion's default port")
    openrlhf_scorer: str = Field("math", description="scorer behind POST /get_reward")
    openrlhf_params: dict[str, Any] = Field(default_factory=dict, description="params for that scorer")
    openrlhf_labels: Literal["reference", "tests", "metadata", "ignore"] = Field(
        "reference",
        description="what OpenRLHF's labels become: the sample's reference (text), its tests"
        " (a JSON object or JSON text), metadata.label, or nothing",
    )
    run_code: bool = Field(True, description="serve SandboxFusion's POST /run_code")
    run_code_max_timeout_s: float = Field(
        30.0, gt=0, le=300, description="run_timeout and compile_timeout are capped at this"
    )
    run_code_memory_mb: int = Field(
        512, gt=16, le=65536, description="memory limit when none is asked, and the most one may ask"
    )
    run_code_max_concurrency: int = Field(16, gt=0, description="programs run at once")
    run_code_allow_weaker_isolation: bool = Field(
        False, description="run /run_code programs on a host without full isolation (not root)"
    )


class WorkerSection(_Strict):
    """Worker processes for CPU-bound scorers (math and plugins that declare cpu_bound)."""

    processes: int | None = Field(
        None,
        gt=0,
        description="null: the CPU count of the host the server runs on, read when it starts"
        " (not where the config was loaded: a Ray replica sizes itself on its own node)",
    )

    def resolved_processes(self) -> int:
        return self.processes or max(1, os.cpu_count() or 1)


class ScorerConfig(_Strict):
    """A named scorer: a scorer type with default parameters and limits."""

    type: str | None = Field(None, description="scorer type; defaults to the table's name")
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(30.0, gt=0, description="hard limit per sample")
    max_concurrency: int = Field(256, gt=0, description="samples of this scorer scored at once")
    description: str | None = None


class ArbiterConfig(_Strict):
    """The whole configuration."""

    server: ServerSection = Field(default_factory=ServerSection)  # type: ignore[arg-type]
    workers: WorkerSection = Field(default_factory=WorkerSection)  # type: ignore[arg-type]
    http: HttpSection = Field(default_factory=HttpSection)  # type: ignore[arg-type]
    plugins: list[str] = Field(default_factory=list, description="modules to load scorers from")
    entry_points: bool = Field(True, description="load installed plugin packages (arbiter.scorers)")
    builtin_scorers: bool = Field(True, description="serve every registered type under its own name")
    defaults: ScorerConfig = Field(
        default_factory=ScorerConfig,  # type: ignore[arg-type]
        description="limits for scorers served under their type name",
    )
    scorers: dict[str, ScorerConfig] = Field(default_factory=dict)

    @field_validator("scorers")
    @classmethod
    def _names(cls, value: dict[str, ScorerConfig]) -> dict[str, ScorerConfig]:
        for name in value:
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"scorer name {name!r} must be non-empty and without spaces")
        return value


def _parse(text: str, suffix: str, origin: str) -> dict[str, Any]:
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{origin}: use a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{origin}: cannot parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a table/mapping")
    return data


def load_config(path: str | Path | None = None) -> ArbiterConfig:
    """The config in ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        text = resources.files("reward_server").joinpath("default_config.toml").read_text()
        origin, suffix = "embedded default config", ".toml"
    else:
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {file}: {exc}") from exc
        origin, suffix = str(file), file.suffix.lower()
    data = _parse(text, suffix, origin)
    try:
        return ArbiterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin} is invalid:\n{_problems(exc)}") from exc


def _problems(exc: ValidationError) -> str:
    return "\n".join(f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


def with_overrides(
    config: ArbiterConfig,
    *,
    server: Mapping[str, Any] | None = None,
    workers: Mapping[str, Any] | None = None,
    http: Mapping[str, Any] | None = None,
) -> ArbiterConfig:
    """``config`` with some server, worker or HTTP settings replaced, validated as a whole:
    an override can break a rule that spans fields (a TLS certificate without its
    key), and ``model_copy`` would not notice."""
    data = config.model_dump()
    data["server"].update(server or {})
    data["workers"].update(workers or {})
    data["http"].update(http or {})
    try:
        return ArbiterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings:\n{_problems(exc)}") from exc
