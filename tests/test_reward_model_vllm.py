"""The reward-model scorer's vLLM backend: the same scores as the transformers
backend and as a direct forward pass, through the real server. Needs vLLM and a
CUDA GPU; where either is missing the comparison is skipped with the reason, and
what can run here does: asking for the backend without them stops the server at
start-up with a reason that says what to install or use instead."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the reward model scorer needs the rm extra (torch)")
pytest.importorskip("transformers", reason="the reward model scorer needs transformers")

from reward_server.config import ArbiterConfig, ScorerConfig  # noqa: E402
from reward_server.devtools import build_tiny_reward_model  # noqa: E402
from reward_server.embedded import EmbeddedServer  # noqa: E402
from sdk import RewardClient, ScorerDefinitionError, Status  # noqa: E402
from tests.test_reward_model import COMPLETIONS, PROMPTS, direct_score  # noqa: E402

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
HAVE_CUDA = bool(torch.cuda.is_available())
MISSING = [
    *([] if HAVE_VLLM else ["vLLM is not installed (pip install 'arbiter-reward[vllm]')"]),
    *([] if HAVE_CUDA else ["no CUDA GPU"]),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm-vllm"))


def _config(model_dir: Path, **named: dict[str, object]) -> ArbiterConfig:
    return ArbiterConfig(
        scorers={
            name: ScorerConfig(type="reward_model", params={"model_path": str(model_dir), **params})
            for name, params in named.items()
        }
    )


@pytest.mark.skipif(HAVE_VLLM and HAVE_CUDA, reason="vLLM and a GPU are here: the backend loads")
def test_vllm_backend_without_vllm_or_a_gpu_fails_at_start_with_the_reason(model_dir: Path) -> None:
    reason = "needs vLLM" if not HAVE_VLLM else "needs a CUDA GPU"
    with pytest.raises(ScorerDefinitionError, match=reason):
        EmbeddedServer(_config(model_dir, rm={"backend": "vllm"})).start()


@pytest.mark.skipif(bool(MISSING), reason="the vllm backend needs vLLM and a GPU: " + "; ".join(MISSING))
def test_vllm_scores_equal_transformers_and_a_direct_forward_pass(model_dir: Path) -> None:
    config = _config(
        model_dir,
        rm_vllm={"backend": "vllm", "dtype": "float32", "max_batch_size": 8, "max_wait_ms": 20},
        rm_hf={"device": "cuda", "dtype": "float32", "max_batch_size": 8, "max_wait_ms": 20},
    )
    items = [{"prompt": p, "completion": c} for p in PROMPTS for c in COMPLETIONS]
    with EmbeddedServer(config) as server, RewardClient(server.target, timeout=300) as client:
        by_vllm = client.score_batch([{"scorer": "rm_vllm", **item} for item in items])
        by_hf = client.score_batch([{"scorer": "rm_hf", **item} for item in items])
    for item, v, h in zip(items, by_vllm, by_hf, strict=True):
        assert v.status is Status.OK and h.status is Status.OK, (v.reason, h.reason)
        expected = direct_score(model_dir, item["prompt"], item["completion"])
        assert v.reward == pytest.approx(h.reward, abs=1e-3, rel=1e-3)
        assert v.reward == pytest.approx(expected, abs=1e-3, rel=1e-3)
