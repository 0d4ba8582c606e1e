"""Configuration: the embedded default, TOML and YAML files, and errors that name
what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reward_server.config import ArbiterConfig, ConfigError, load_config, with_overrides
from reward_server.embedded import EmbeddedServer
from reward_server.server import build_registry, build_scorers
from sdk import ScorerDefinitionError


def test_embedded_default_serves_every_builtin_on_loopback() -> None:
    config = load_config()
    assert config.server.host == "127.0.0.1" and config.server.port == 50051
    served = build_scorers(config, build_registry(config))
    assert {"math", "format", "length", "composite"} <= set(served)
    assert served["math"].timeout_s == 10


@pytest.mark.parametrize(
    "name, text",
    [
        pytest.param(
            "c.toml",
            '[scorers.short]\ntype = "length"\nparams = { limit = 10 }\nmax_concurrency = 4\n',
            id="toml",
        ),
        pytest.param(
            "c.yaml",
            "scorers:\n  short:\n    type: length\n    params: {limit: 10}\n    max_concurrency: 4\n",
            id="yaml",
        ),
    ],
)
def test_named_scorers_from_files(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    config = load_config(path)
    served = build_scorers(config, build_registry(config))
    assert served["short"].entry.defaults == {"limit": 10}
    assert served["short"].max_concurrency == 4
    assert served["short"].entry.scorer.name == "length"


@pytest.mark.parametrize(
    "text, fragment",
    [
        pytest.param("[server]\nport = 'x'\n", "server.port", id="wrong-type"),
        pytest.param("[server]\nprot = 1\n", "server.prot", id="unknown-key"),
        pytest.param("[scorers.a]\ntimeout_s = -1\n", "scorers.a.timeout_s", id="bad-limit"),
        pytest.param("[server\n", "cannot parse", id="syntax"),
        pytest.param("[server]\ntls_cert_file = 'c.pem'\n", "tls_key_file", id="tls-half"),
    ],
)
def test_invalid_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(path)


def test_unsupported_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ConfigError, match="toml"):
        load_config(tmp_path / "c.ini")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_unknown_type_lists_what_is_registered(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[scorers.x]\ntype = "sandbox9000"\n')
    config = load_config(path)
    with pytest.raises(ScorerDefinitionError, match=r"no scorer type .sandbox9000.*math"):
        build_scorers(config, build_registry(config))


def test_invalid_default_params_name_the_scorer(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[scorers.short]\ntype = "length"\nparams = { limit = "long" }\n')
    config = load_config(path)
    with pytest.raises(ScorerDefinitionError, match=r"\[scorers.short\].*limit"):
        build_scorers(config, build_registry(config))


def test_overrides_are_validated_like_a_config_file(tmp_path: Path) -> None:
    """A TLS certificate without its key must not quietly serve plaintext, whether it
    comes from a file, the command line or an embedded server's arguments."""
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked before the pair is")
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file"):
        with_overrides(ArbiterConfig(), server={"tls_cert_file": cert})
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file"):
        EmbeddedServer(plugins=["sdk.testing"], tls_cert_file=cert)
    with pytest.raises(ConfigError, match="processes"):
        with_overrides(ArbiterConfig(), workers={"processes": 0})


def test_worker_count_is_read_where_the_server_starts() -> None:
    # Not fixed when the config is loaded: a config built on a Ray driver and pickled to
    # a replica on another node must size the pool to that node.
    config = load_config()
    assert config.workers.processes is None
    assert config.workers.resolved_processes() == max(1, os.cpu_count() or 1)
    assert with_overrides(config, workers={"processes": 3}).workers.resolved_processes() == 3
