"""The ``reward_model`` scorer: a learned reward model, served with dynamic batching.

Loads any ``AutoModelForSequenceClassification``-style model from a local
directory (``from_pretrained``), optionally with a PEFT/LoRA adapter merged in, on
CUDA when present (bf16/fp16) and on the CPU otherwise (fp32); or, with
``backend = "vllm"``, on vLLM (a GPU and the ``vllm`` extra; see ``_vllm_engine``).

Correctness choices, each a known pitfall:

* **Chat template**: prompt and completion are rendered with the model tokenizer's
  own chat template, exactly as reward-model training does; without a template the
  texts are concatenated (and ``details`` says so).
* **Where the score is read**: decoder reward models read the score at the last
  token. Transformers finds it as "the last token that is not padding", which is
  wrong whenever the pad token equals the end-of-turn token that ends every chat.
  Here the batch is right-padded and the score is read at each sequence's own
  known last position, so padding never changes a score.
* **Truncation**: a sequence longer than ``max_length`` keeps its *end* (the
  completion being judged) by dropping tokens from the start (``"left"``), or is
  refused (``"error"``).

Batching: samples from concurrent requests are gathered (``max_batch_size``,
``max_wait_ms``), sorted by length and run on the model's own thread, off the
event loop. ``max_batch_size = 1`` turns batching off.

Pairwise mode scores ``completion`` (chosen) against ``metadata["rejected"]`` and
returns the margin, with ``details["chosen_preferred"]``, for measuring an RM's
accuracy on preference data (``arbiter score --input prefs.jsonl`` prints it).

Process mode scores each step: the completion is split on ``step_separator`` and
every prefix (steps 1..k) is scored as its own sequence, in one batch; the step
rewards (after normalisation) are in ``details["steps"]`` and ``aggregate`` makes
them one reward (``min`` by default: a chain is as good as its worst step).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from sdk import CONFIG_ONLY, Message, Sample, SampleError, Scorer, ScoreResult, content_from_value

from ..batching import DynamicBatcher

if TYPE_CHECKING:
    from ._vllm_engine import VllmEngine

__all__ = ["RewardModelParams", "RewardModelScorer"]

log = logging.getLogger("arbiter.reward_model")

_PINNED: JsonDict = {CONFIG_ONLY: True}  # requests cannot change these


class RewardModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str | None = Field(None, description="local model directory", json_schema_extra=_PINNED)
    adapter_path: str | None = Field(None, description="PEFT adapter directory", json_schema_extra=_PINNED)
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="vllm: a CUDA GPU and the vllm extra", json_schema_extra=_PINNED
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=_PINNED)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", json_schema_extra=_PINNED)
    max_batch_size: int = Field(32, ge=1, le=4096, json_schema_extra=_PINNED)
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, json_schema_extra=_PINNED)
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="vllm: the share of GPU memory it may take", json_schema_extra=_PINNED
    )
    max_length: int = Field(4096, ge=8)
    truncation: Literal["left", "error"] = "left"
    chat_template: bool = Field(True, description="render prompt + completion with the tokenizer's template")
    label_index: int = Field(0, ge=0, description="which logit is the reward")
    normalize: Literal["none", "affine", "running"] = "none"
    scale: float = Field(1.0, description="affine: reward = raw * scale + shift")
    shift: float = 0.0
    sigmoid: bool = Field(False, description="apply a sigmoid after normalisation")
    pairwise: bool = Field(False, description="score completion against metadata['rejected']")
    process: bool = Field(False, description="process RM: score every step of the completion")
    step_separator: str = Field("\n\n", min_length=1, description="what splits a completion into steps")
    aggregate: Literal["min", "mean", "last", "product"] = Field("min", description="steps -> one reward")


@dataclass
class _Running:
    """Running mean and variance (Welford), for ``normalize = "running"``."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, value: float) -> tuple[float, float]:
        with self.lock:
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (value - self.mean)
            std = math.sqrt(self.m2 / self.count) if self.count > 1 else 0.0
            return self.mean, std


class _TransformersEngine:
    """Forward passes with transformers, on CUDA or the CPU."""

    def __init__(self, params: RewardModelParams) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        assert params.model_path is not None
        self.torch = torch
        device = params.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise SampleError("device 'cuda' was asked for but no CUDA device is available")
        dtype_name = params.dtype
        if dtype_name == "auto":
            if device == "cuda":
                dtype_name = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
            else:
                dtype_name = "float32"
        self.device, self.dtype_name = device, dtype_name
        model: Any = AutoModelForSequenceClassification.from_pretrained(
            params.model_path, dtype=getattr(torch, dtype_name)
        )
        if params.adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, params.adapter_path).merge_and_unload()
        self.model = model.to(device).eval()
        self.num_labels = int(self.model.config.num_labels)
        self.memory_bytes = sum(t.numel() * t.element_size() for t in self.model.parameters()) + sum(
            t.numel() * t.element_size() for t in self.model.buffers()
        )
        # Decoder reward models: backbone + a per-token head named `score`; read it at
        # each row's own last position. Others (encoders) pool inside the model.
        prefix = getattr(self.model, "base_model_prefix", "")
        self.backbone = getattr(self.model, prefix, None) if prefix else None
        self.head = getattr(self.model, "score", None)

    def logits(self, batch: Sequence[list[int]], pad_id: int) -> list[list[float]]:
        torch = self.torch
        lengths = [len(ids) for ids in batch]
        width = max(lengths)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        with torch.inference_mode():
            if self.backbone is not None and self.head is not None:
                hidden = self.backbone(input_ids=input_ids, attention_mask=attention).last_hidden_state
                last = torch.tensor(lengths, device=self.device) - 1
                pooled = hidden[torch.arange(len(batch), device=self.device), last]
                logits = self.head(pooled)
            else:
                logits = self.model(input_ids=input_ids, attention_mask=attention).logits
        values: list[list[float]] = logits.float().cpu().tolist()
        return values


class _LoadedModel:
    """One model on one device (transformers or vLLM), with its tokenizer and batcher."""

    def __init__(self, params: RewardModelParams) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        assert params.model_path is not None
        hf_logging.disable_progress_bar()  # a server logs JSON lines, not progress bars
        # The tokenizer (and its chat template) is the same whichever engine runs the
        # model, so both see exactly the same token ids.
        self.tokenizer: Any = AutoTokenizer.from_pretrained(params.model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.engine: _TransformersEngine | VllmEngine
        if params.backend == "vllm":
            from ._vllm_engine import VllmEngine

            self.engine = VllmEngine(params)
        else:
            self.engine = _TransformersEngine(params)
        self.num_labels = self.engine.num_labels
        self.memory_bytes = self.engine.memory_bytes
        self.batcher: DynamicBatcher[list[int], tuple[list[float], int]] = DynamicBatcher(
            self.forward,
            max_batch_size=params.max_batch_size,
            max_wait_ms=params.max_wait_ms,
            name="reward-model",
        )
        self.running = _Running()
        log.info(
            "reward model loaded",
            extra={
                "model": params.model_path,
                "adapter": params.adapter_path,
                "backend": params.backend,
                "device": self.engine.device,
                "dtype": self.engine.dtype_name,
                "memory_bytes": self.memory_bytes,
            },
        )

    def forward(self, batch: Sequence[list[int]]) -> list[tuple[list[float], int]]:
        """Logits of each sequence, with the size of the batch it ran in (run on the
        batcher's thread)."""
        return [(row, len(batch)) for row in self.engine.logits(batch, self.pad_id)]

    def encode(self, prompt: Any, completion: Any, params: RewardModelParams) -> tuple[list[int], bool]:
        """Token ids of prompt + completion; also whether the chat template was used."""
        template = bool(params.chat_template and getattr(self.tokenizer, "chat_template", None))
        if template:
            messages = _messages(prompt, role="user") + _messages(completion, role="assistant")
            ids = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages], tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # newer versions return a BatchEncoding
                ids = ids["input_ids"]
            ids = list(ids)
        else:
            text = _text(prompt) + _text(completion)
            ids = list(self.tokenizer(text)["input_ids"])
        if len(ids) > params.max_length:
            if params.truncation == "error":
                raise SampleError(f"sample is {len(ids)} tokens; max_length is {params.max_length}")
            ids = ids[-params.max_length :]
        if not ids:
            raise SampleError("prompt and completion are both empty")
        return ids, template


def _messages(content: Any, *, role: str) -> list[Message]:
    if isinstance(content, str):
        return [Message(role=role, content=content)] if content else []
    return list(content)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(m.content for m in content)


class RewardModelScorer(Scorer):
    """A learned reward model (sequence classifier) from a local directory, batched."""

    name = "reward_model"
    Params = RewardModelParams
    serve_by_default = False  # useless without a configured model_path

    def __init__(self) -> None:
        self._models: dict[tuple[Any, ...], _LoadedModel] = {}
        self._lock = threading.Lock()

    def setup(self, params: RewardModelParams) -> None:
        """Load the configured model at start-up (nothing to do without a model_path)."""
        if params.model_path is not None:
            self._model(params)

    def close(self) -> None:
        for model in self._models.values():
            model.batcher.close()
        self._models.clear()

    def _model(self, params: RewardModelParams) -> _LoadedModel:
        if params.model_path is None:
            raise SampleError("reward_model needs a model: configure a named scorer with params.model_path")
        key = (
            params.model_path,
            params.adapter_path,
            params.backend,
            params.gpu_memory_utilization,
            params.device,
            params.dtype,
            params.max_batch_size,
            params.max_wait_ms,
        )
        with self._lock:
            model = self._models.get(key)
            if model is None:
                try:
                    model = _LoadedModel(params)
                except SampleError:
                    raise
                except Exception as exc:
                    raise SampleError(f"cannot load reward model {params.model_path!r}: {exc}") from exc
                self._models[key] = model
            return model

    async def score(self, sample: Sample, params: RewardModelParams) -> ScoreResult:
        model = self._model(params)
        if params.label_index >= model.num_labels:
            raise SampleError(f"label_index {params.label_index} but the model has {model.num_labels} labels")
        chosen_ids, template = model.encode(sample.prompt, sample.completion, params)
        logits, batch_size = await model.batcher.submit(chosen_ids, len(chosen_ids))
        chosen_raw = logits[params.label_index]
        details: dict[str, Any] = {
            "raw": chosen_raw,
            "batch_size": batch_size,
            "tokens": len(chosen_ids),
            "chat_template": template,
            "model_memory_bytes": model.memory_bytes,
        }
        if params.process:
            return await self._process(sample, params, model, details)
        if not params.pairwise:
            return ScoreResult(reward=self._transform(chosen_raw, model, params, details), details=details)
        rejected_value = sample.metadata.get("rejected")
        if rejected_value is None:
            raise SampleError("pairwise mode needs the rejected completion in metadata['rejected']")
        try:
            rejected = content_from_value(rejected_value, field_name="metadata.rejected")
        except TypeError as exc:
            raise SampleError(str(exc)) from None
        rejected_ids, _ = model.encode(sample.prompt, rejected, params)
        rejected_raw = (await model.batcher.submit(rejected_ids, len(rejected_ids)))[0][params.label_index]
        margin = chosen_raw - rejected_raw
        details.update({"chosen": chosen_raw, "rejected": rejected_raw, "chosen_preferred": margin > 0})
        return ScoreResult(reward=margin, details=details)

    async def _process(
        self, sample: Sample, params: RewardModelParams, model: _LoadedModel, details: dict[str, Any]
    ) -> ScoreResult:
        steps = [s for s in sample.completion_text.split(params.step_separator) if s.strip()]
        if not steps:
            raise SampleError("process mode found no steps in the completion")
        prefixes = [params.step_separator.join(steps[: k + 1]) for k in range(len(steps))]
        encoded = [model.encode(sample.prompt, prefix, params)[0] for prefix in prefixes]
        outputs = await asyncio.gather(*(model.batcher.submit(ids, len(ids)) for ids in encoded))
        step_rewards = [
            self._transform(logits[params.label_index], model, params, {}) for logits, _ in outputs
        ]
        if params.aggregate == "min":
            reward = min(step_rewards)
        elif params.aggregate == "mean":
            reward = sum(step_rewards) / len(step_rewards)
        elif params.aggregate == "last":
            reward = step_rewards[-1]
        else:
            reward = math.prod(step_rewards)
        details.update({"steps": step_rewards, "aggregate": params.aggregate})
        return ScoreResult(reward=reward, details=details)

    @staticmethod
    def _transform(
        raw: float, model: _LoadedModel, params: RewardModelParams, details: dict[str, Any]
    ) -> float:
        value = raw
        if params.normalize == "affine":
            value = raw * params.scale + params.shift
        elif params.normalize == "running":
            mean, std = model.running.update(raw)
            value = (raw - mean) / std if std > 1e-6 else 0.0
            details["running_mean"], details["running_std"] = mean, std
        if params.sigmoid:
            value = 1.0 / (1.0 + math.exp(-value)) if value > -700 else 0.0
        return value
