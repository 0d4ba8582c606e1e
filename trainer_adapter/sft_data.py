"""SFT data: JSONL rows to token ids with loss on assistant tokens only.

Two row shapes are read (``format: auto`` tells them apart by their keys):

- conversational: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool",
  "content": str, "weight": float?}, ...]}``; every assistant message is a target
  (``weight: 0`` leaves one out, as in OpenAI's fine-tuning format);
- prompt-completion: ``{"prompt": str | messages, "completion": str | messages}``;
  only the completion is a target.

Conversations are rendered with the model's own chat template. Which tokens carry
loss is found in one of two ways: with TRL's ``{% generation %}`` markers when the
template has them (transformers' ``return_assistant_tokens_mask``), otherwise by
rendering the conversation prefix by prefix: the text up to each assistant reply
(with the generation prompt), then the reply through its end-of-turn token. The
pieces are tokenised one by one and joined, so the prompt part is tokenised exactly
as it is at inference, and no prompt token can be counted as a target.

:func:`check_masking` then checks the result independently of how it was built: every
row has a loss-carrying token, and every run of loss-carrying tokens decodes to text
from a target reply (never from a system or user message or a role header, and never
whitespace alone). The targets are the replies' text and end-of-turn token, whichever
way the tokens were found.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .jsonl import read_jsonl_objects

__all__ = [
    "DataFormat",
    "SFTDataError",
    "SFTDataWarning",
    "TokenizedRow",
    "check_masking",
    "compare_chat_templates",
    "detect_format",
    "has_generation_markers",
    "loss_sample",
    "read_jsonl",
    "resolve_chat_template",
    "tokenize_rows",
    "turns_of",
]

DataFormat = Literal["auto", "messages", "prompt_completion"]
IGNORE_INDEX = -100
LOSS_OPEN, LOSS_CLOSE = "\u27e6", "\u27e7"  # ⟦ ⟧ around loss-carrying text in the printed sample
_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


class SFTDataError(ValueError):
    """The data cannot train the model as asked; the message names the row and the fix."""


class SFTDataWarning(UserWarning):
    """Training can go on, but something is likely wrong (a template mismatch, a reply
    whose end-of-turn token is not trained)."""


@dataclass(frozen=True)
class Turn:
    """One message; ``weight`` is None for messages that carry no loss."""

    role: str
    content: str
    weight: float | None


@dataclass
class TokenizedRow:
    input_ids: list[int]
    labels: list[int]
    weights: list[float]
    targets: list[str] = field(default_factory=list)  # the text each loss run must come from
    truncated: bool = False

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; blank lines are skipped, anything else must be a JSON object."""
    return read_jsonl_objects(path, SFTDataError)


def detect_format(rows: Sequence[dict[str, Any]], requested: DataFormat = "auto") -> DataFormat:
    """``messages`` or ``prompt_completion``; ``auto`` decides from the first row's keys."""
    if requested != "auto":
        return requested
    first = rows[0]
    if "messages" in first:
        return "messages"
    if "prompt" in first and "completion" in first:
        return "prompt_completion"
    raise SFTDataError(
        f"row 1 has keys {sorted(first)}: expected 'messages' (conversational) or 'prompt' and 'completion'"
    )


def turns_of(row: dict[str, Any], data_format: DataFormat, index: int = 0) -> list[Turn] | str:
    """The row as messages with their loss weights, or (plain-text prompt-completion)
    the prompt text; :func:`_text_pair` handles that case."""
    where = f"row {index + 1}"
    if data_format == "messages":
        return _messages(row.get("messages"), where, trained=True)
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        return prompt
    if isinstance(prompt, list) and isinstance(completion, list):
        return _messages(prompt, where, trained=False) + _messages(completion, where, trained=True)
    raise SFTDataError(
        f"{where}: 'prompt' and 'completion' must both be strings or both be message lists "
        f"(got {type(prompt).__name__} and {type(completion).__name__})"
    )


def _messages(value: Any, where: str, *, trained: bool) -> list[Turn]:
    if not isinstance(value, list) or not value:
        raise SFTDataError(f"{where}: expected a non-empty list of messages")
    turns: list[Turn] = []
    for number, message in enumerate(value, 1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise SFTDataError(f"{where}, message {number}: expected an object with a 'role'")
        content = message.get("content")
        if not isinstance(content, str):
            raise SFTDataError(f"{where}, message {number}: 'content' must be a string")
        weight: float | None = None
        if message["role"] == "assistant" and trained:
            raw = message.get("weight", 1.0)
            if not isinstance(raw, int | float) or isinstance(raw, bool) or raw < 0:
                raise SFTDataError(f"{where}, message {number}: 'weight' must be a number >= 0")
            weight = float(raw) if raw > 0 else None
            if weight is not None and not content.strip():
                raise SFTDataError(
                    f"{where}, message {number}: empty assistant reply; drop the row or give it 'weight': 0"
                )
        turns.append(Turn(message["role"], content, weight))
    return turns


def has_generation_markers(template: str | None) -> bool:
    return template is not None and _GENERATION_TAG.search(template) is not None


def tokenize_rows(
    tokenizer: Any, rows: Sequence[dict[str, Any]], data_format: DataFormat, max_length: int | None
) -> list[TokenizedRow]:
    """Token ids, labels (-100 off the targets) and per-token weights for every row,
    truncated to ``max_length`` from the right."""
    data_format = detect_format(rows, data_format)
    out: list[TokenizedRow] = []
    untrained_stop = 0
    for index, row in enumerate(rows):
        turns = turns_of(row, data_format, index)
        if isinstance(turns, str):
            tokenized = _text_pair(tokenizer, turns, row["completion"])
        elif has_generation_markers(tokenizer.chat_template):
            tokenized = _with_generation_markers(tokenizer, turns, index)
        else:
            tokenized, stop_trained = _prefix_by_prefix(tokenizer, turns, index)
            untrained_stop += not stop_trained
        if max_length is not None and len(tokenized.input_ids) > max_length:
            tokenized.input_ids = tokenized.input_ids[:max_length]
            tokenized.labels = tokenized.labels[:max_length]
            tokenized.weights = tokenized.weights[:max_length]
            tokenized.truncated = True
        out.append(tokenized)
    if untrained_stop:
        warnings.warn(
            f"{untrained_stop} row(s): no end-of-turn token ({tokenizer.eos_token!r}) follows the assistant "
            "reply in the chat template, so the model is not trained to stop",
            SFTDataWarning,
            stacklevel=2,
        )
    return out


def _encode(tokenizer: Any, text: str) -> list[int]:
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def _from_pieces(
    tokenizer: Any, pieces: Iterable[tuple[str, float | None]], targets: list[str]
) -> TokenizedRow:
    row = TokenizedRow(input_ids=[], labels=[], weights=[], targets=targets)
    for text, weight in pieces:
        if not text:
            continue
        ids = _encode(tokenizer, text)
        row.input_ids += ids
        row.labels += ids if weight is not None else [IGNORE_INDEX] * len(ids)
        row.weights += [weight if weight is not None else 0.0] * len(ids)
    return row


def _text_pair(tokenizer: Any, prompt: str, completion: str) -> TokenizedRow:
    eos = tokenizer.eos_token or ""
    if eos and not completion.endswith(eos):
        completion += eos  # the model must learn to stop
    return _from_pieces(tokenizer, [(prompt, None), (completion, 1.0)], [completion])


def _render(tokenizer: Any, turns: Sequence[Turn], *, generation_prompt: bool = False) -> str:
    text: str = tokenizer.apply_chat_template(
        [{"role": t.role, "content": t.content} for t in turns],
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )
    return text


def _prefix_by_prefix(tokenizer: Any, turns: Sequence[Turn], index: int) -> tuple[TokenizedRow, bool]:
    full = _render(tokenizer, turns)
    eos = tokenizer.eos_token or ""
    pieces: list[tuple[str, float | None]] = []
    targets: list[str] = []
    cursor = 0
    stop_trained = True
    for i, turn in enumerate(turns):
        if turn.role != "assistant" or turn.weight is None:
            continue
        before = _render(tokenizer, turns[:i], generation_prompt=True) if i else ""
        through = _render(tokenizer, turns[: i + 1])
        if not full.startswith(before) or not full.startswith(through) or len(before) < cursor:
            raise SFTDataError(
                f"row {index + 1}: the chat template does not render this conversation prefix by prefix "
                "(an earlier turn changes when later ones are added); give the template "
                "{% generation %} markers (TRL's convention) so the assistant tokens can be found"
            )
        content = turn.content.strip()
        start = through.find(content, len(before))
        if start < 0:
            raise SFTDataError(
                f"row {index + 1}: the chat template changes the text of assistant message {i + 1}, so its "
                "tokens cannot be found; give the template {% generation %} markers (TRL's convention)"
            )
        end = start + len(content)
        stop = through.find(eos, end) if eos else -1
        if stop >= 0:
            end = stop + len(eos)
        else:
            stop_trained = False
        pieces += [(full[cursor:start], None), (full[start:end], turn.weight)]
        targets.append(full[start:end])
        cursor = end
    pieces.append((full[cursor:], None))
    return _from_pieces(tokenizer, pieces, targets), stop_trained


def _with_generation_markers(tokenizer: Any, turns: Sequence[Turn], index: int) -> TokenizedRow:
    encoded = tokenizer.apply_chat_template(
        [{"role": t.role, "content": t.content} for t in turns],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids: list[int] = list(encoded["input_ids"])
    mask: list[int] = list(encoded["assistant_masks"])
    runs = _runs([bool(m) for m in mask])
    assistant = [t for t in turns if t.role == "assistant"]
    loss_runs = [(a, b) for a, b, on in runs if on]
    if len(loss_runs) != len(assistant):
        raise SFTDataError(
            f"row {index + 1}: the template's {{% generation %}} markers cover {len(loss_runs)} span(s) "
            f"but the conversation has {len(assistant)} assistant message(s)"
        )
    row = TokenizedRow(input_ids=ids, labels=[IGNORE_INDEX] * len(ids), weights=[0.0] * len(ids))
    eos = tokenizer.eos_token or ""
    for (a, b), turn in zip(loss_runs, assistant, strict=True):
        if turn.weight is None:
            continue
        row.labels[a:b] = ids[a:b]
        row.weights[a:b] = [turn.weight] * (b - a)
        # What the run must come from: the reply and its end-of-turn, as on the prefix path,
        # never the run itself (check_masking would then compare each run with itself).
        row.targets.append(turn.content.strip() + eos)
    return row


def _runs(flags: Sequence[bool]) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal flags as (start, end, flag)."""
    runs: list[tuple[int, int, bool]] = []
    start = 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            runs.append((start, i, flags[start]))
            start = i
    return runs


def check_masking(tokenizer: Any, rows: Sequence[TokenizedRow]) -> None:
    """Raise :class:`SFTDataError` when a row has no loss-carrying token, or when loss
    falls on text that is not from a target reply (the prompt, a role header, ...)."""
    empty = [i + 1 for i, row in enumerate(rows) if row.loss_tokens == 0]
    if empty:
        truncated = [i for i in empty if rows[i - 1].truncated]
        hint = f" ({len(truncated)} of them cut by max_length: raise it)" if truncated else ""
        raise SFTDataError(
            f"no token carries loss in {len(empty)} row(s){hint}; first rows: {empty[:10]}. "
            "A row needs an assistant reply (prompt-completion: a completion) that fits in max_length"
        )
    for number, row in enumerate(rows, 1):
        flags = [label != IGNORE_INDEX for label in row.labels]
        for a, b, on in _runs(flags):
            if not on:
                continue
            text = tokenizer.decode(row.input_ids[a:b])
            if not text.strip():
                raise SFTDataError(
                    f"row {number}: loss falls on whitespace only ({text!r}), not on an assistant reply"
                )
            # whitespace aside: a template may put a newline between a reply and its end-of-turn
            if not any(_squeezed(text) in _squeezed(target) for target in row.targets):
                raise SFTDataError(
                    f"row {number}: loss falls on text outside the assistant replies: {text!r}; "
                    "prompt, system and user tokens must have label -100"
                )


def _squeezed(text: str) -> str:
    return "".join(text.split())


def loss_sample(tokenizer: Any, row: TokenizedRow) -> str:
    """The row decoded, with the loss-carrying text between ⟦ and ⟧."""
    parts = []
    for a, b, on in _runs([label != IGNORE_INDEX for label in row.labels]):
        text = tokenizer.decode(row.input_ids[a:b])
        parts.append(f"{LOSS_OPEN}{text}{LOSS_CLOSE}" if on else text)
    return "".join(parts)


def resolve_chat_template(value: str | Path) -> str:
    """A chat template given as a file (Jinja text, or a tokenizer_config.json / chat_template.jinja),
    a model directory, or the template text itself."""
    path = Path(value)
    looks_like_path = isinstance(value, Path) or ("{" not in str(value) and len(str(value)) < 4096)
    if looks_like_path and path.is_dir():
        for name in ("chat_template.jinja", "tokenizer_config.json"):
            if (path / name).is_file():
                return resolve_chat_template(path / name)
        raise SFTDataError(f"{path}: no chat_template.jinja or tokenizer_config.json with a chat template")
    if looks_like_path and path.is_file():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            template = json.loads(text).get("chat_template")
            if not isinstance(template, str):
                raise SFTDataError(f"{path}: no 'chat_template' string in it")
            return template
        return text
    if looks_like_path:
        raise SFTDataError(f"chat template {value}: no such file or directory")
    return str(value)


def compare_chat_templates(
    tokenizer: Any, training: str, inference: str, conversations: Sequence[Sequence[Turn]]
) -> str | None:
    """None when both templates render these conversations identically (``{% generation %}``
    markers render as nothing); otherwise where the first rendering differs."""
    for number, turns in enumerate(conversations, 1):
        messages = [{"role": t.role, "content": t.content} for t in turns]
        renders = [
            tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
            for template in (training, inference)
        ]
        if renders[0] != renders[1]:
            at = next(
                (i for i, (x, y) in enumerate(zip(*renders, strict=False)) if x != y),
                min(map(len, renders)),
            )
            window = slice(max(0, at - 20), at + 40)
            return (
                f"the training and inference chat templates render conversation {number} differently "
                f"from character {at}: training {renders[0][window]!r} vs inference {renders[1][window]!r}"
            )
    return None
