"""The reward model's forward pass on vLLM (``backend = "vllm"``).

vLLM runs sequence classifiers as pooling models: it pools each sequence's last
token (no padding, so no pad-token pitfall) and applies the classifier head. Its
``classify`` applies an activation (sigmoid or softmax) by default; the scorer
asks for raw logits instead, so both backends give the same raw score and the
scorer's own normalisation and sigmoid apply alike.

The token ids come from the scorer (the Hugging Face tokenizer and its chat
template), never from vLLM's own rendering, so both backends see the same input.
Dynamic batching stays the scorer's: one ``classify`` call per gathered batch.

Needs a CUDA GPU and the ``vllm`` extra; without either, loading fails with the
reason at start-up. LoRA adapters are not applied here: merge them first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sdk import SampleError

if TYPE_CHECKING:
    from .reward_model import RewardModelParams

__all__ = ["VllmEngine"]


class VllmEngine:
    def __init__(self, params: RewardModelParams) -> None:
        assert params.model_path is not None
        try:
            import torch
            import vllm
        except ImportError as exc:
            raise SampleError(
                f"backend 'vllm' needs vLLM: pip install 'arbiter-reward[vllm]' ({exc})"
            ) from None
        if params.device == "cpu" or not torch.cuda.is_available():
            raise SampleError("backend 'vllm' needs a CUDA GPU; use backend 'transformers' on the CPU")
        if params.adapter_path:
            raise SampleError(
                "backend 'vllm' serves merged models: merge the adapter (peft merge_and_unload,"
                " save_pretrained) and point model_path at the result"
            )
        from transformers import AutoConfig

        self.device = "cuda"
        self.dtype_name = "auto" if params.dtype == "auto" else params.dtype
        self.num_labels = int(AutoConfig.from_pretrained(params.model_path).num_labels)
        # vLLM runs the model in processes of its own; spawn them, never fork a
        # process that may already run gRPC threads.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        self.llm: Any = vllm.LLM(
            model=params.model_path,
            tokenizer=params.model_path,
            runner="pooling",
            convert="classify",
            dtype=self.dtype_name,
            max_model_len=params.max_length,
            gpu_memory_utilization=params.gpu_memory_utilization,
            seed=0,
        )
        # What vLLM reserves on the GPU (weights, activations, its cache), by its budget.
        total = torch.cuda.get_device_properties(0).total_memory
        self.memory_bytes = int(params.gpu_memory_utilization * total)
        self.raw = _raw_pooling_params(vllm.PoolingParams)

    def logits(self, batch: Sequence[list[int]], pad_id: int) -> list[list[float]]:
        del pad_id  # vLLM does not pad
        prompts = [{"prompt_token_ids": list(ids)} for ids in batch]
        outputs = self.llm.classify(prompts, pooling_params=self.raw, use_tqdm=False)
        return [[float(v) for v in output.outputs.probs] for output in outputs]


def _raw_pooling_params(pooling_params: Any) -> Any:
    """PoolingParams that turn the classifier's activation off: the field was
    ``activation`` and is ``use_activation`` in later vLLM releases."""
    fields = set(getattr(pooling_params, "__struct_fields__", ()))
    for name in ("use_activation", "activation"):
        if name in fields:
            return pooling_params(**{name: False})
    raise SampleError(
        "this vLLM's PoolingParams cannot turn the classifier's activation off;"
        " use backend 'transformers' or a vLLM release that can"
    )
