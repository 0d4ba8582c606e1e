"""Each SFT loss variant pinned on a hand-computed example.

Vocabulary of 2; logits [ln 3, 0] give p(token 0) = 3/4, so the cross-entropy is
ln(4/3) for token 0; logits [0, 0] give ln 2 for either token.

    sequence 0: labels [_, 0, 1]     -> losses ln(4/3), ln 2      weights 1, 3
    sequence 1: labels [_, -100, 0]  -> (masked), ln(4/3)         weight 2
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="the losses need torch (rm extra)")

from trainer_adapter.losses import LOSS_TYPES, SFTLoss, sft_loss  # noqa: E402

A, B = math.log(4 / 3), math.log(2)
EXPECTED = {
    "token_mean": (A + B + A) / 3,  # 0.42284
    "weighted": (1 * A + 3 * B + 2 * A) / (1 + 3 + 2),  # 0.49041
    "sequence_mean": ((A + B) / 2 + A / 1) / 2,  # 0.38905
    "sequence_sum": ((A + B) + A) / 2,  # 0.63426
}


def _example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    three = math.log(3)
    logits = torch.tensor(
        [
            [[three, 0.0], [0.0, 0.0], [9.0, 9.0]],  # the last position predicts nothing
            [[0.0, 5.0], [three, 0.0], [9.0, 9.0]],  # position 0 is masked, any logits
        ],
        requires_grad=True,
    )
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 0]])
    weights = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.0, 2.0]])
    return logits, labels, weights


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_formula_on_a_hand_computed_example(loss_type: str) -> None:
    logits, labels, weights = _example()
    value = sft_loss(logits, labels, loss_type, weights=weights)  # type: ignore[arg-type]
    assert value.item() == pytest.approx(EXPECTED[loss_type], abs=1e-6)
    value.backward()
    assert logits.grad is not None and logits.grad[:, -1].abs().sum() == 0  # no loss on the last position
    assert logits.grad[1, 0].abs().sum() == 0  # nor on the masked one


def test_the_values_are_what_the_docstring_says() -> None:
    assert [round(EXPECTED[k], 5) for k in LOSS_TYPES] == [0.42284, 0.49041, 0.38905, 0.63426]


def test_token_mean_over_an_accumulated_batch_uses_its_token_count() -> None:
    logits, labels, _ = _example()
    assert sft_loss(logits, labels, num_items_in_batch=6).item() == pytest.approx((A + B + A) / 6)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_a_sequence_without_targets_changes_nothing_and_none_at_all_gives_zero(loss_type: str) -> None:
    logits, labels, weights = _example()
    extra_logits = torch.cat([logits.detach(), torch.zeros(1, 3, 2)])
    extra_labels = torch.cat([labels, torch.full((1, 3), -100)])
    extra_weights = torch.cat([weights, torch.ones(1, 3)])
    value = sft_loss(extra_logits, extra_labels, loss_type, weights=extra_weights)  # type: ignore[arg-type]
    assert value.item() == pytest.approx(EXPECTED[loss_type], abs=1e-6)
    nothing = sft_loss(torch.zeros(1, 3, 2), torch.full((1, 3), -100), loss_type, weights=torch.ones(1, 3))  # type: ignore[arg-type]
    assert nothing.item() == 0.0


def test_weighted_needs_weights_and_unknown_types_are_refused() -> None:
    logits, labels, _ = _example()
    with pytest.raises(ValueError, match="per-token weights"):
        sft_loss(logits, labels, "weighted")
    with pytest.raises(ValueError, match="unknown loss type 'mean'"):
        SFTLoss("mean")  # type: ignore[arg-type]


def test_the_trainer_hook_uses_the_batch_weights() -> None:
    logits, labels, weights = _example()
    loss = SFTLoss("weighted")
    loss.weights = weights

    class Outputs:
        pass

    outputs = Outputs()
    outputs.logits = logits  # type: ignore[attr-defined]
    assert loss(outputs, labels, num_items_in_batch=99).item() == pytest.approx(EXPECTED["weighted"])
    assert not loss.normalises_over_accumulated_batch
    assert SFTLoss("token_mean").normalises_over_accumulated_batch
