"""Composites configured, not coded: weights, gates, required parts, clipping and
per-component results, through the real server."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from reward_server.config import load_config
from reward_server.embedded import EmbeddedServer
from sdk import RewardClient, Status

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "configs"

# The reference example of examples/configs/code_reward.toml, with the sandboxed
# `code` scorer replaced by a fake that reads the pass fraction from the reference.
REFERENCE = """
[scorers.tests_pass]
type = "fake"
params = { reward_from_reference = true }

[scorers.code_reward]
type = "composite"
[[scorers.code_reward.params.components]]
scorer = "tests_pass"
name = "tests"
weight = 1.0
[[scorers.code_reward.params.components]]
scorer = "format"
weight = 0.2
params = { tags = ["think", "answer"] }
[[scorers.code_reward.params.components]]
scorer = "length"
weight = 0.0001
params = { limit = 2000 }

[scorers.loop]
type = "composite"
params = { components = [{ scorer = "loop" }] }
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RewardClient]:
    config_file = tmp_path_factory.mktemp("cfg") / "composite.toml"
    config_file.write_text(REFERENCE)
    with (
        EmbeddedServer(load_config(config_file), plugins=["sdk.testing"]) as server,
        RewardClient(server.target) as c,
    ):
        yield c


def test_reference_example(client: RewardClient) -> None:
    body = "<think>" + "t" * 2400 + "</think><answer>42</answer>"
    result = client.score(scorer="code_reward", completion=body, reference="0.75")
    excess = len(body) - 2000
    assert result.status is Status.OK, result.reason
    assert result.reward == pytest.approx(1.0 * 0.75 + 0.2 * 1.0 - 0.0001 * excess)
    assert result.components == pytest.approx({"tests": 0.75, "format": 1.0, "length": -excess})
    short = client.score(scorer="code_reward", completion="<answer>1</answer>", reference="1")
    assert short.reward == pytest.approx(1.0) and short.components["format"] == 0.0


def test_reference_example_file_loads() -> None:
    config = load_config(EXAMPLES / "code_reward.toml")
    components = config.scorers["code_reward"].params["components"]
    assert [(c["scorer"], c["weight"]) for c in components] == [
        ("code", 1.0),
        ("format", 0.2),
        ("length", 0.0001),
    ]
    assert load_config(EXAMPLES / "math_reward.yaml").scorers["math_reward"].type == "composite"


def test_gate_zeroes_and_skips_the_gated_part(client: RewardClient) -> None:
    params = {
        "components": [
            {"scorer": "format", "weight": 0.1, "params": {"tags": ["answer"]}},
            {"scorer": "math", "name": "correct", "weight": 1.0, "gated_by": ["format"]},
        ]
    }
    good = client.score(
        scorer="composite", completion="<answer>\\boxed{4}</answer>", reference="4", params=params
    )
    assert good.status is Status.OK, good.reason
    assert good.reward == pytest.approx(1.1)
    bad = client.score(scorer="composite", completion="\\boxed{4}", reference="4", params=params)
    assert bad.reward == 0.0
    assert bad.components == {"format": 0.0, "correct": 0.0}
    assert bad.details["gated_out"] == ["correct"]


def test_required_and_clip(client: RewardClient) -> None:
    params = {
        "components": [
            {"scorer": "fake", "name": "a", "params": {"reward": 3.0}},
            {"scorer": "fake", "name": "b", "params": {"reward": 0.5}, "pass_threshold": 1.0},
        ],
        "clip": [0.0, 2.0],
    }
    assert client.score(scorer="composite", params=params).reward == 2.0
    required = client.score(
        scorer="composite", params={**params, "required": ["b"], "required_fail_reward": -1.0}
    )
    assert required.reward == -1.0 and required.details["failed_required"] == ["b"]


def test_infrastructure_failure_of_a_part_fails_the_whole(client: RewardClient) -> None:
    params = {
        "components": [{"scorer": "fake"}, {"scorer": "fake", "name": "broken", "params": {"error": "down"}}]
    }
    result = client.score(scorer="composite", params=params)
    assert result.status is Status.SCORER_ERROR
    assert "broken" in result.reason and "down" in result.reason
    missing = client.score(scorer="composite", params={"components": [{"scorer": "nowhere"}]})
    assert missing.status is Status.UNKNOWN_SCORER


def test_bad_output_of_a_part_counts_as_zero(client: RewardClient) -> None:
    params = {
        "components": [
            {"scorer": "fake", "params": {"reward": 0.5}},
            {"scorer": "fake", "name": "slow", "params": {"fail_status": "TIMEOUT"}},
        ]
    }
    result = client.score(scorer="composite", params=params)
    assert result.status is Status.OK and result.reward == 0.5
    assert result.details["components"]["slow"]["status"] == "TIMEOUT"


@pytest.mark.parametrize(
    "params, message",
    [
        pytest.param({"components": []}, "at least one component", id="empty"),
        pytest.param(
            {"components": [{"scorer": "fake"}, {"scorer": "fake"}]}, "unique", id="duplicate-labels"
        ),
        pytest.param({"components": [{"scorer": "fake", "gated_by": ["x"]}]}, "unknown", id="unknown-gate"),
        pytest.param(
            {
                "components": [
                    {"scorer": "fake", "name": "a", "gated_by": ["b"]},
                    {"scorer": "fake", "name": "b", "gated_by": ["a"]},
                ]
            },
            "cycle",
            id="gate-cycle",
        ),
    ],
)
def test_invalid_composites_are_invalid_input(client: RewardClient, params: dict, message: str) -> None:  # type: ignore[type-arg]
    result = client.score(scorer="composite", params=params)
    assert result.status is Status.INVALID_INPUT
    assert message in result.reason


def test_self_including_composite_is_stopped(client: RewardClient) -> None:
    result = client.score(scorer="loop")
    assert result.status is Status.INVALID_INPUT and "nest" in result.reason


def test_composite_nested_in_itself_does_not_deadlock_on_its_own_limit() -> None:
    from reward_server.config import ArbiterConfig, ScorerConfig

    config = ArbiterConfig(scorers={"composite": ScorerConfig(type="composite", max_concurrency=2)})
    nested = {"components": [{"scorer": "composite", "params": {"components": [{"scorer": "length"}]}}]}
    with EmbeddedServer(config) as server, RewardClient(server.target, timeout=20) as c:
        results = c.score_batch([{"scorer": "composite", "params": nested}] * 6)
    assert all(r.ok for r in results), [r.reason for r in results]


def test_metrics_count_samples_once_and_components_apart(tmp_path: Path) -> None:
    config_file = tmp_path / "composite.toml"
    config_file.write_text(REFERENCE)
    with (
        EmbeddedServer(load_config(config_file), plugins=["sdk.testing"], metrics=True) as server,
        RewardClient(server.target) as client,
    ):
        body = "<think>a</think><answer>1</answer>"
        assert client.score(scorer="code_reward", completion=body, reference="1").ok
        text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert 'arbiter_samples_total{scorer="code_reward",status="OK"} 1.0' in text
    assert 'arbiter_samples_total{scorer="format"' not in text  # a component is not a sample
    assert 'arbiter_component_calls_total{scorer="format",status="OK"} 1.0' in text
    assert 'arbiter_component_calls_total{scorer="tests_pass",status="OK"} 1.0' in text
