"""Tiny local models for tests, benchmarks and demos, built without any model hub.

``build_tiny_reward_model(directory)`` trains a small byte-level BPE tokenizer on
a built-in corpus, gives it a chat template, builds a randomly initialised Qwen2
sequence classifier (one label) and saves both with ``save_pretrained``, so that
the real ``from_pretrained`` loading path is what gets exercised. Needs the
``rm`` extra (torch, transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "build_tiny_causal_lm", "build_tiny_reward_model"]

# ChatML, with the assistant header when a prompt is rendered for generation.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "the answer is 42 because six times seven is forty two",
    "please think step by step and put the final answer in a box",
    "def add(a, b): return a + b",
    "the capital of france is paris and the capital of italy is rome",
    "a good reward model prefers helpful, honest and harmless answers",
    "numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000",
    "<think> reasoning </think> <answer> 7 </answer>",
]


def _tokenizer(target: Path) -> Any:
    """A byte-level BPE tokenizer trained on the built-in corpus, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    target.mkdir(parents=True, exist_ok=True)
    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(target)
    return tokenizer


def _config(tokenizer: Any, hidden_size: int, **extra: Any) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def build_tiny_reward_model(directory: str | Path, *, seed: int = 0, hidden_size: int = 32) -> Path:
    """Save a tiny reward model (one-label Qwen2 classifier) and tokenizer; returns the directory."""
    import torch
    from transformers import Qwen2ForSequenceClassification

    target = Path(directory)
    tokenizer = _tokenizer(target)
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(_config(tokenizer, hidden_size, num_labels=1))
    model.save_pretrained(target)
    return target


def build_tiny_causal_lm(directory: str | Path, *, seed: int = 0, hidden_size: int = 64) -> Path:
    """Save a tiny causal language model (Qwen2) and tokenizer, for trainer tests."""
    import torch
    from transformers import Qwen2ForCausalLM

    target = Path(directory)
    tokenizer = _tokenizer(target)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_config(tokenizer, hidden_size))
    model.save_pretrained(target)
    return target
