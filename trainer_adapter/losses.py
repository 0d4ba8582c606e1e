"""SFT loss variants, as plain torch functions over logits, labels and weights.

Each takes the model's ``logits`` (B, T, V) and ``labels`` (B, T) unshifted, in the
Hugging Face convention (position t predicts ``labels[t + 1]``; -100 carries no
loss), and returns a scalar. With ``l[b, t]`` the cross-entropy of the token that
follows position t and ``m[b, t]`` its mask (1 where it carries loss):

- ``token_mean``: ``sum(m * l) / sum(m)``. The standard; every target token counts
  the same, so long replies weigh more than short ones.
- ``weighted``: ``sum(w * m * l) / sum(w * m)``, with ``w`` the per-token weights
  (from each message's ``weight`` in the data).
- ``sequence_mean`` (length-normalised): ``mean_b( sum_t(m * l) / sum_t(m) )``: each
  sequence's own mean, then the mean over sequences; short and long replies weigh
  the same.
- ``sequence_sum``: ``mean_b( sum_t(m * l) )``: the sequence's total log-likelihood,
  averaged over sequences; long replies weigh more still.

A sequence with no loss-carrying token adds nothing (and counts as no sequence in
the two sequence-level means); a batch with none at all gives 0, never NaN.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = ["LOSS_TYPES", "LossType", "SFTLoss", "sft_loss", "token_losses"]

LossType = Literal["token_mean", "weighted", "sequence_mean", "sequence_sum"]
LOSS_TYPES: tuple[str, ...] = get_args(LossType)
IGNORE_INDEX = -100


def token_losses(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Per-token cross-entropy of the next token and its mask, both (B, T - 1), in float32."""
    import torch
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        torch.where(mask, shift_labels, 0).reshape(-1),
        reduction="none",
    ).view_as(shift_labels)
    return losses * mask, mask.to(losses.dtype)


def sft_loss(
    logits: Any,
    labels: Any,
    loss_type: LossType = "token_mean",
    *,
    weights: Any = None,
    num_items_in_batch: Any = None,
) -> Any:
    """One of the four variants (see the module docstring). ``weights`` (B, T) is aligned
    with ``labels`` (the weight of the token at that position) and used by ``weighted``
    only. ``num_items_in_batch``, when given, replaces ``sum(m)`` for ``token_mean``, so
    the mean is over every target token of an accumulated batch."""
    losses, mask = token_losses(logits, labels)
    if loss_type == "token_mean":
        denominator = mask.sum() if num_items_in_batch is None else num_items_in_batch
        return losses.sum() / _at_least_one(denominator)
    if loss_type == "weighted":
        if weights is None:
            raise ValueError("the weighted loss needs per-token weights")
        w = weights[:, 1:].to(losses.dtype) * mask
        return (losses * w).sum() / _at_least_one(w.sum())
    per_sequence = losses.sum(dim=1)
    tokens = mask.sum(dim=1)
    has_tokens = (tokens > 0).to(losses.dtype)
    sequences = _at_least_one(has_tokens.sum())
    if loss_type == "sequence_mean":
        return (per_sequence / tokens.clamp(min=1)).sum() / sequences
    if loss_type == "sequence_sum":
        return per_sequence.sum() / sequences
    raise ValueError(f"unknown loss type {loss_type!r}; one of {', '.join(LOSS_TYPES)}")


def _at_least_one(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.clamp(min=1)
    return max(value, 1)


class SFTLoss:
    """The ``compute_loss_func`` handed to TRL's SFTTrainer. The trainer sets ``weights``
    for the batch about to be scored (the collator's ``loss_weights``), since
    ``compute_loss_func`` itself only receives the outputs and labels."""

    def __init__(self, loss_type: LossType) -> None:
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss type {loss_type!r}; one of {', '.join(LOSS_TYPES)}")
        self.loss_type: LossType = loss_type
        self.weights: Any = None

    @property
    def normalises_over_accumulated_batch(self) -> bool:
        """Only ``token_mean`` uses the accumulated token count; the others are per-batch
        means, which the trainer divides by the gradient accumulation steps."""
        return self.loss_type == "token_mean"

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        return sft_loss(
            outputs.logits,
            labels,
            self.loss_type,
            weights=self.weights,
            num_items_in_batch=num_items_in_batch if self.normalises_over_accumulated_batch else None,
        )
