"""The unlearning losses on hand-made logits, with the expected numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from smfa.errors import ConfigError, SmfaError
from smfa.losses import (
    IGNORE_INDEX,
    accumulate_fisher,
    answer_mask,
    answer_positions,
    compact_labels,
    answer_nll,
    ga_diff_loss,
    ga_loss,
    kl_min_loss,
    kl_retain,
    mask_share,
    npo_loss,
    saliency_mask,
    sequence_logprob,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def forget_example(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """B=1, T=3, V=2. After the shift: position 0 ([0, 0], p = 1/2 each) predicts label 0 -> NLL ln 2;
    position 1 ([ln 3, 0], p(1) = 1/4) predicts label 1 -> NLL ln 4; position 2 predicts nothing, so
    its absurd logits must not matter. Mean NLL = (ln 2 + 2 ln 2) / 2 = 1.5 ln 2."""
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [100.0, -100.0]]], requires_grad=requires_grad)
    labels = torch.tensor([[IGNORE_INDEX, 0, 1]])
    return logits, labels


def test_answer_nll_mean_and_sum_use_the_shift():
    logits, labels = forget_example()
    assert answer_nll(logits, labels).item() == pytest.approx(1.5 * LN2)
    assert answer_nll(logits, labels, reduction="sum").item() == pytest.approx(3 * LN2)


def test_answer_nll_ignores_minus_100_and_the_first_label():
    logits, _ = forget_example()
    # labels[:, 0] is never a target (nothing predicts it); the -100 at position 1 drops the ln 2 term.
    labels = torch.tensor([[0, IGNORE_INDEX, 1]])
    assert answer_nll(logits, labels).item() == pytest.approx(2 * LN2)
    assert answer_mask(labels).tolist() == [[False, True]]


def test_answer_nll_per_sequence_and_empty_sequences():
    logits, labels = forget_example()
    logits2 = torch.cat([logits, torch.zeros_like(logits)])
    labels2 = torch.cat([labels, torch.full_like(labels, IGNORE_INDEX)])
    per_sequence = answer_nll(logits2, labels2, reduction="none")
    assert per_sequence.tolist() == pytest.approx([1.5 * LN2, 0.0])
    assert answer_mask(labels2).any(-1).tolist() == [True, False]
    # The empty sequence does not dilute the token mean.
    assert answer_nll(logits2, labels2).item() == pytest.approx(1.5 * LN2)


def test_shape_errors_are_programming_errors_with_a_traceback():
    """Bug: a wrong tensor shape raised ConfigError, which the CLI prints as a one-line "your input is wrong"
    (exit 2) and so hides the traceback of what is a bug in the calling code."""
    logits, labels = forget_example()
    calls = [lambda: answer_nll(logits[0], labels), lambda: answer_nll(logits, labels[:, :2]),
             lambda: kl_retain(logits, logits[:, :2], labels), lambda: npo_loss(torch.zeros(2), torch.zeros(3), 0.1),
             lambda: saliency_mask({"a": torch.ones(2)}, {"a": torch.ones(3)})]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, SmfaError)
    with pytest.raises(ConfigError, match="beta"):  # a recipe's hyper-parameter stays a one-line user error
        npo_loss(torch.zeros(2), torch.zeros(2), 0.0)


def test_answer_nll_rejects_a_batch_without_answer_tokens_and_bad_arguments():
    logits, labels = forget_example()
    with pytest.raises(ValueError, match="no answer tokens"):
        answer_nll(logits, torch.full_like(labels, IGNORE_INDEX))
    assert answer_nll(logits, torch.full_like(labels, IGNORE_INDEX), reduction="sum").item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        answer_nll(logits, labels, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels must be"):
        answer_nll(logits, labels[:, :2])
    with pytest.raises(ValueError, match="batch, seq_len, vocab"):
        answer_nll(logits[0], labels)


def test_answer_nll_upcasts_low_precision_logits():
    logits, labels = forget_example()
    value = answer_nll(logits.to(torch.bfloat16), labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(1.5 * LN2, rel=1e-2)


def test_sequence_logprob_sums_answer_tokens():
    logits, labels = forget_example()
    logits2 = torch.cat([logits, torch.zeros_like(logits)])
    labels2 = torch.cat([labels, torch.full_like(labels, IGNORE_INDEX)])
    # log(1/2) + log(1/4) = -3 ln 2; no answer tokens -> log 1 = 0.
    assert sequence_logprob(logits2, labels2).tolist() == pytest.approx([-3 * LN2, 0.0])


def test_ga_loss_is_negative_nll_and_descent_lowers_the_correct_token():
    logits, labels = forget_example(requires_grad=True)
    loss = ga_loss(logits, labels)
    assert loss.item() == pytest.approx(-1.5 * LN2)
    loss.backward()
    # d(-NLL_mean)/dz_y = (1 - p_y) / N with N = 2 answer tokens; d/dz_other = -p_other / N.
    assert logits.grad[0, 0].tolist() == pytest.approx([0.25, -0.25])  # p = (1/2, 1/2), label 0
    assert logits.grad[0, 1].tolist() == pytest.approx([-0.375, 0.375])  # p = (3/4, 1/4), label 1
    assert logits.grad[0, 2].tolist() == [0.0, 0.0]
    # One descent step on the GA loss lowers the correct-token logits and raises the forget NLL.
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad
    assert stepped[0, 0, 0] < logits[0, 0, 0] and stepped[0, 1, 1] < logits[0, 1, 1]
    assert answer_nll(stepped, labels).item() > 1.5 * LN2


def test_ga_diff_loss_combines_forget_ascent_and_retain_descent():
    forget_logits, forget_labels = forget_example()
    retain_logits = torch.zeros(1, 3, 2)  # uniform: every retain token has NLL ln 2
    retain_labels = torch.tensor([[IGNORE_INDEX, 1, 1]])
    value = ga_diff_loss(forget_logits, forget_labels, retain_logits, retain_labels, retain_weight=2.0)
    assert value.item() == pytest.approx(-1.5 * LN2 + 2 * LN2)
    with pytest.raises(ValueError, match="retain_weight"):
        ga_diff_loss(forget_logits, forget_labels, retain_logits, retain_labels, retain_weight=-1.0)


def kl_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two answer positions, V=2. Position 0: reference [0, 0] -> p = (1/2, 1/2), current [ln 9, 0] ->
    q = (9/10, 1/10). Position 1: reference [ln 3, 0] -> p = (3/4, 1/4), current uniform. Position 2
    predicts nothing (T=3), so its logits must not matter."""
    reference = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]]])
    current = torch.tensor([[[math.log(9.0), 0.0], [0.0, 0.0], [-5.0, 5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 0, 1]])
    return current, reference, labels


def test_kl_retain_is_kl_of_reference_from_current_on_hand_values():
    current, reference, labels = kl_example()
    # KL(p||q) at position 0: 1/2 ln(0.5/0.9) + 1/2 ln(0.5/0.1) = ln(5/3)
    kl0 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl0 == pytest.approx(math.log(5 / 3))
    # position 1: 3/4 ln(0.75/0.5) + 1/4 ln(0.25/0.5)
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kl_retain(current, reference, labels).item() == pytest.approx((kl0 + kl1) / 2)


def test_kl_direction_matters_and_is_zero_for_equal_models():
    current, reference, _ = kl_example()
    labels = torch.tensor([[IGNORE_INDEX, 0, IGNORE_INDEX]])  # position 0 only
    forward = kl_retain(current, reference, labels).item()  # KL(ref || current)
    backward = kl_retain(reference, current, labels).item()  # KL(current || ref)
    assert forward == pytest.approx(math.log(5 / 3))  # 0.5108
    assert backward == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2))  # 0.3681
    assert abs(forward - backward) > 0.1
    assert kl_retain(reference, reference.clone(), labels).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_retain_sends_no_gradient_to_the_reference():
    current, reference, labels = kl_example()
    current.requires_grad_(True)
    reference.requires_grad_(True)
    kl_retain(current, reference, labels).backward()
    assert reference.grad is None
    assert current.grad is not None and current.grad[0, 2].abs().sum() == 0  # non-answer position
    with pytest.raises(ValueError, match="same batch"):
        kl_retain(current, reference[:, :2], labels)


def test_kl_min_loss_value():
    forget_logits, forget_labels = forget_example()
    current, reference, labels = kl_example()
    value = kl_min_loss(forget_logits, forget_labels, current, reference, labels, retain_weight=0.5)
    expected_kl = kl_retain(current, reference, labels).item()
    assert value.item() == pytest.approx(-1.5 * LN2 + 0.5 * expected_kl)


@pytest.mark.parametrize("beta", [0.1, 0.2, 0.4, 1.0])
def test_npo_at_the_reference_is_two_over_beta_log_two(beta):
    logprob = torch.tensor([-3.0, -12.5])
    assert npo_loss(logprob, logprob.clone(), beta).item() == pytest.approx(2 / beta * LN2)


def test_npo_hand_values_and_monotone_decrease():
    beta = 0.2
    current = torch.tensor([-6.0, -3.0])
    reference = torch.tensor([-5.0, -5.0])  # differences -1 and +2
    expected = 0.5 * (
        (2 / beta) * math.log(1 + math.exp(-beta * 1.0)) + (2 / beta) * math.log(1 + math.exp(beta * 2.0))
    )  # -log sigma(x) = log(1 + e^-x)
    assert npo_loss(current, reference, beta).item() == pytest.approx(expected)
    values = [npo_loss(torch.tensor([d]), torch.tensor([0.0]), beta).item() for d in (3.0, 1.0, 0.0, -1.0, -5.0, -50.0)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] < 1e-3  # forgotten: the loss goes to 0


def test_npo_gradient_is_positive_so_descent_lowers_the_forget_likelihood():
    beta = 0.1
    current = torch.tensor([0.0, -2.0, 4.0], requires_grad=True)
    reference = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    npo_loss(current, reference, beta).backward()
    # d/d logpi = 2 sigma(beta * diff) / B
    expected = [2 / (1 + math.exp(-beta * d)) / 3 for d in (0.0, -2.0, 4.0)]
    assert current.grad.tolist() == pytest.approx(expected)
    assert (current.grad > 0).all()
    assert current.grad[0].item() == pytest.approx(1 / 3)  # at the reference: sigma(0) = 1/2
    assert reference.grad is None


def test_npo_is_stable_for_extreme_differences():
    beta = 0.1
    current = torch.tensor([1e4, -1e4], requires_grad=True)
    reference = torch.zeros(2)
    per_sequence = [npo_loss(current[i : i + 1], reference[i : i + 1], beta).item() for i in range(2)]
    # +1e4: (2/beta) * softplus(beta * 1e4) = 2e4 (linear, like GA); -1e4: 0.
    assert per_sequence[0] == pytest.approx(2e4)
    assert per_sequence[1] == pytest.approx(0.0, abs=1e-12)
    npo_loss(current, reference, beta).backward()
    assert torch.isfinite(current.grad).all()
    assert current.grad.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)  # 2 sigma(+-1000) / 2


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan"), float("inf")])
def test_npo_rejects_bad_beta(beta):
    with pytest.raises(ConfigError, match="beta"):
        npo_loss(torch.zeros(2), torch.zeros(2), beta)


def test_npo_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[batch\]"):
        npo_loss(torch.zeros(2), torch.zeros(3), 0.1)


def test_accumulate_fisher_adds_scaled_squared_gradients_in_place():
    layer = torch.nn.Linear(2, 1)
    fisher: dict[str, torch.Tensor] = {}
    layer.weight.grad = torch.tensor([[1.0, -2.0]])
    layer.bias.grad = None  # frozen / unused: skipped
    accumulate_fisher(fisher, layer.named_parameters(), scale=0.5)
    assert set(fisher) == {"weight"}
    assert fisher["weight"].tolist() == [[0.5, 2.0]]
    buffer = fisher["weight"]
    layer.weight.grad = torch.tensor([[3.0, 0.0]])
    layer.bias.grad = torch.tensor([-4.0])
    accumulate_fisher(fisher, layer.named_parameters(), scale=0.5)
    assert fisher["weight"] is buffer  # the same accumulator tensor, updated in place
    assert fisher["weight"].tolist() == [[5.0, 2.0]]
    assert fisher["bias"].tolist() == [8.0]
    assert layer.weight.grad.tolist() == [[3.0, 0.0]]  # gradients untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_accumulate_fisher_rounds_as_the_reference_formula(dtype):
    """The accumulator is ``Σ grad.float().pow(2).mul_(scale)`` bit for bit (the formula the saliency masks
    of earlier runs came from), with a scale that is not a power of two; the gradients stay untouched."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(64, 33, generator=g).to(dtype) for _ in range(3)]
    layer = torch.nn.Linear(33, 64, bias=False).to(dtype)
    fisher: dict[str, torch.Tensor] = {}
    reference = None
    for grad in grads:
        layer.weight.grad = grad.clone()
        accumulate_fisher(fisher, layer.named_parameters(), scale=1.0 / 3)
        assert torch.equal(layer.weight.grad, grad)
        squared = grad.float().pow(2).mul_(1.0 / 3)
        reference = squared if reference is None else reference.add_(squared)
    assert fisher["weight"].dtype == torch.float32
    assert torch.equal(fisher["weight"], reference)


def test_accumulate_fisher_rejects_shape_mismatch_and_negative_scale():
    layer = torch.nn.Linear(2, 1)
    layer.weight.grad = torch.ones(1, 2)
    with pytest.raises(ValueError, match="own dict"):
        accumulate_fisher({"weight": torch.zeros(3)}, layer.named_parameters())
    with pytest.raises(ValueError, match="scale"):
        accumulate_fisher({}, layer.named_parameters(), scale=-1.0)


def test_saliency_mask_and_share_on_small_dicts():
    forget = {"a": torch.tensor([4.0, 1.0, 0.0, 1e-3]), "b": torch.tensor([[0.0, 3.0]])}
    preserve = {"a": torch.tensor([2.0, 2.0, 0.0, 0.0]), "b": torch.tensor([[1.0, 1.0]])}
    # ratios: a = [2, 0.5, 0 / eps = 0, 1e-3 / eps = 1e9], b = [0, 3]
    mask = saliency_mask(forget, preserve)
    assert mask["a"].tolist() == [True, False, False, True]
    assert mask["b"].tolist() == [[False, True]]
    assert mask["a"].dtype == torch.bool
    assert mask_share(mask) == pytest.approx(3 / 6)
    strict = saliency_mask(forget, preserve, threshold=2.5)
    assert strict["a"].tolist() == [False, False, False, True]
    assert mask_share(strict) == pytest.approx(2 / 6)


def test_saliency_mask_free_consumes_both_dicts_and_gives_the_same_bits():
    g = torch.Generator().manual_seed(1)
    shapes = {"a": (40, 17), "b": (9,)}
    forget = {k: torch.rand(s, generator=g) ** 3 for k, s in shapes.items()}
    preserve = {k: torch.rand(s, generator=g) ** 3 for k, s in shapes.items()}
    forget["a"][0, :5] = 0.0
    preserve["a"][1, :5] = 0.0
    for threshold in (1.0, 0.7):
        kept = saliency_mask(forget, preserve, threshold=threshold)
        f_copy = {k: v.clone() for k, v in forget.items()}
        p_copy = {k: v.clone() for k, v in preserve.items()}
        freed = saliency_mask(f_copy, p_copy, threshold=threshold, free=True)
        assert f_copy == {} and p_copy == {}  # nothing Fisher-sized left
        assert set(freed) == set(kept)
        assert all(torch.equal(freed[k], kept[k]) for k in kept)
        assert 0.1 < mask_share(freed) < 0.9


def test_saliency_mask_errors():
    forget = {"a": torch.ones(2)}
    with pytest.raises(ValueError, match="different parameters"):
        saliency_mask(forget, {"b": torch.ones(2)})
    with pytest.raises(ValueError, match="shapes differ"):
        saliency_mask(forget, {"a": torch.ones(3)})
    with pytest.raises(ConfigError, match="threshold"):
        saliency_mask(forget, {"a": torch.ones(2)}, threshold=0.0)
    with pytest.raises(ValueError, match="empty"):
        mask_share({})


# ---- the answer view: the LM head only where an answer token is predicted -----------------------------
def ragged_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """B=3, T=7, V=5: answers at different positions per row, one row whose answer starts later, and
    padding (-100) after each answer."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, 5, generator=g)
    labels = torch.full((3, 7), IGNORE_INDEX)
    labels[0, 2:4] = torch.tensor([1, 2])
    labels[1, 4:7] = torch.tensor([0, 4, 3])
    labels[2, 3] = 2
    return logits, labels


def test_answer_positions_and_compact_labels_align_each_logit_with_its_label():
    _, labels = ragged_batch()
    keep = answer_positions(labels)
    assert keep.tolist() == [1, 2, 3, 4, 5]  # logits at t predict labels[:, t+1]; t=0 and t=6 predict nothing
    compact = compact_labels(labels, keep)
    assert compact.shape == (3, 6)
    assert compact[:, 0].tolist() == [IGNORE_INDEX] * 3
    assert compact[0].tolist() == [IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert compact[1].tolist() == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 0, 4, 3]


def test_every_loss_is_the_same_on_the_answer_view():
    logits, labels = ragged_batch()
    ref_logits, _ = ragged_batch(seed=1)
    keep = answer_positions(labels)
    pad = torch.full((3, 1, 5), 123.0)  # the unused last position: its values must not matter
    view = torch.cat([logits[:, keep], pad], dim=1)
    ref_view = torch.cat([ref_logits[:, keep], pad], dim=1)
    compact = compact_labels(labels, keep)
    assert answer_nll(view, compact).item() == pytest.approx(answer_nll(logits, labels).item(), abs=1e-6)
    assert answer_nll(view, compact, "none").tolist() == pytest.approx(answer_nll(logits, labels, "none").tolist(), abs=1e-6)
    assert sequence_logprob(view, compact).tolist() == pytest.approx(sequence_logprob(logits, labels).tolist(), abs=1e-5)
    assert kl_retain(view, ref_view, compact).item() == pytest.approx(kl_retain(logits, ref_logits, labels).item(), abs=1e-6)


def test_answer_logits_runs_the_head_on_answer_positions_only():
    from smfa.losses import answer_logits

    logits, labels = ragged_batch()

    class Head(torch.nn.Module):  # returns the fixed logits, sliced as transformers' models slice them
        def __init__(self):
            super().__init__()
            self.kept = None

        def forward(self, input_ids, logits_to_keep=None):
            self.kept = logits_to_keep
            from types import SimpleNamespace

            return SimpleNamespace(logits=logits if logits_to_keep is None else logits[:, logits_to_keep])

    model = Head()
    view, compact = answer_logits(model, {"input_ids": torch.zeros(3, 7, dtype=torch.long), "labels": labels})
    assert model.kept.tolist() == [1, 2, 3, 4, 5]
    assert view.shape == (3, 6, 5)
    assert answer_nll(view, compact).item() == pytest.approx(answer_nll(logits, labels).item(), abs=1e-6)
    empty = torch.full((3, 7), IGNORE_INDEX)  # no answer token: the whole batch, so answer_nll names the problem
    view, same = answer_logits(model, {"input_ids": torch.zeros(3, 7, dtype=torch.long), "labels": empty})
    assert model.kept is None and view.shape == (3, 7, 5) and same is empty
    with pytest.raises(ValueError, match="no answer tokens"):
        answer_nll(view, same)


def test_sft_loss_is_cross_entropy_on_plain_rows_and_kl_on_distill_rows():
    from smfa.losses import sft_loss

    logits, labels = ragged_batch()
    ref_logits, _ = ragged_batch(seed=1)
    none = torch.tensor([False, False, False])
    assert sft_loss(logits, labels).item() == pytest.approx(answer_nll(logits, labels).item())
    assert sft_loss(logits, labels, none, ref_logits).item() == pytest.approx(answer_nll(logits, labels).item())
    every = torch.tensor([True, True, True])
    assert sft_loss(logits, labels, every, ref_logits).item() == pytest.approx(kl_retain(logits, ref_logits, labels).item(), abs=1e-6)
    assert sft_loss(logits, labels, every, logits).item() == pytest.approx(0.0, abs=1e-6)  # the vanilla itself: nothing to pay
    # Row 1 (3 answer tokens) distilled, rows 0 and 2 (2 + 1 tokens) cross-entropy: a token-weighted mean.
    mixed = torch.tensor([False, True, False])
    ce_rows = answer_nll(logits[[0, 2]], labels[[0, 2]], "sum")
    kl_row = kl_retain(logits[[1]], ref_logits[[1]], labels[[1]]) * 3
    assert sft_loss(logits, labels, mixed, ref_logits).item() == pytest.approx(((ce_rows + kl_row) / 6).item(), abs=1e-6)
    with pytest.raises(ValueError, match="reference_logits"):
        sft_loss(logits, labels, mixed)
