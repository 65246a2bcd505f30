"""The unlearning losses of the baselines, as small pure functions of model outputs.

Conventions shared by every function here:

- ``logits`` is ``[B, T, V]`` and ``labels`` is ``[B, T]`` with :data:`IGNORE_INDEX` (-100) at every
  position that is not an answer token (prompt, image, padding).
- The shift is done here, the Hugging Face way: ``logits[:, t]`` predicts ``labels[:, t + 1]``, so
  callers pass the model's ``logits`` and the same ``labels`` they would give the model — or, cheaper, the
  *answer view* of both (:func:`answer_logits`): the LM head run only where an answer token is predicted,
  with labels compacted to match, which every loss here accepts unchanged.
- Log-probabilities are computed in float32 whatever the logits' dtype (bf16 log-softmax loses digits
  that NPO's log-ratios need).
- Reference-model outputs are constants: they are detached here, so no gradient reaches the reference.

Formulas follow SPEC.md, "Baselines" table (GA, GA Difference, KL Minimisation, NPO, MMUnlearner).

Errors: a wrong shape, reduction or batch is a bug in the caller, so it raises ``ValueError`` (with a
traceback); only the hyper-parameters a recipe sets and no config checks first (NPO's ``beta``,
MMUnlearner's ``threshold``) raise :class:`ConfigError`, the one-line user error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from smfa.errors import ConfigError

IGNORE_INDEX = -100

Reduction = Literal["mean", "sum", "none"]


def _check_logits_labels(logits: Tensor, labels: Tensor, what: str = "logits") -> None:
    if logits.dim() != 3:
        raise ValueError(f"{what} must be [batch, seq_len, vocab]; got shape {tuple(logits.shape)}")
    if labels.dim() != 2 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must be [batch, seq_len] matching {what} {tuple(logits.shape[:2])}; got {tuple(labels.shape)}"
        )
    if labels.shape[1] < 2:
        raise ValueError(f"sequences must have at least 2 positions to predict a next token; got {labels.shape[1]}")


def _check_weight(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")


def answer_mask(labels: Tensor) -> Tensor:
    """Bool ``[B, T-1]``: which shifted target positions are answer tokens (label != -100)."""
    return labels[:, 1:] != IGNORE_INDEX


def answer_positions(labels: Tensor) -> Tensor:
    """``[P]`` (ascending): the positions ``t`` whose logits predict an answer token in at least one row of
    the batch (``labels[:, t + 1] != -100``) — the only logits any loss here reads."""
    return answer_mask(labels).any(dim=0).nonzero().squeeze(1)


def compact_labels(labels: Tensor, positions: Tensor) -> Tensor:
    """``[B, P + 1]`` labels aligned with logits taken at ``positions`` (``[B, P, V]``) plus one unused last
    position: ``out[:, i + 1] = labels[:, positions[i] + 1]`` and ``out[:, 0] = -100``, so the usual shift
    pairs each kept logit with the label it predicts."""
    head = labels.new_full((labels.shape[0], 1), IGNORE_INDEX)
    return torch.cat([head, labels[:, positions + 1]], dim=1)


def answer_logits(model: torch.nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(logits, labels)`` of a collated batch in the answer view: the model's LM head runs only at
    :func:`answer_positions` (``logits_to_keep``), and the labels are compacted to match
    (:func:`compact_labels`). Every loss here gives the same value on this view as on the full logits, at a
    fraction of the head's cost (prompt and image tokens are most of a sequence). A batch without answer
    tokens is returned whole, so the losses raise their own error about it."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    keep = answer_positions(labels)
    if keep.numel() == 0:
        return model(**inputs).logits, labels
    logits = model(**inputs, logits_to_keep=keep).logits
    pad = logits.new_zeros(logits.shape[0], 1, logits.shape[2])  # the unused last position (no label follows it)
    return torch.cat([logits, pad], dim=1), compact_labels(labels, keep)


def token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-token NLL ``[B, T-1]`` of the shifted targets, ``-log p(labels[:, t+1] | logits[:, t])``,
    with 0 at ignored positions."""
    _check_logits_labels(logits, labels)
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return nll.view(shift_labels.shape)


def answer_nll(logits: Tensor, labels: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Negative log-likelihood of the answer tokens (the standard causal-LM loss on answer tokens only).

    ``NLL = -(1/N) Σ_{b,t: label ≠ -100} log p_θ(y_{b,t+1} | x_{b,≤t})``, N = number of answer tokens.

    - ``"mean"``: the token-level mean over the whole batch (what HF's loss gives). A batch with no
      answer token at all raises ``ValueError`` (its mean is undefined; it means every answer
      was truncated away or masked).
    - ``"sum"``: the sum over all answer tokens (0 for a batch without answer tokens).
    - ``"none"``: per-sequence mean ``[B]``. A sequence without answer tokens gets 0 (it carries no
      signal and adds no gradient); use :func:`answer_mask` ``(labels).any(-1)`` to tell those apart.
      For per-sequence *sums* (NPO), use :func:`sequence_logprob`.
    """
    nll = token_nll(logits, labels)
    mask = answer_mask(labels)
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        count = int(mask.sum())
        if count == 0:
            raise ValueError(
                "the batch has no answer tokens (every label is -100): check the answer-only label masking, "
                "or raise max_length so answers are not truncated away"
            )
        return nll.sum() / count
    if reduction == "none":
        counts = mask.sum(dim=-1)
        return nll.sum(dim=-1) / counts.clamp(min=1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


def sequence_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]``: ``log π(y | x) = Σ_t log p(y_{t+1} | x, y_{≤t})`` over each sequence's answer tokens
    (0 for a sequence without answer tokens). The sequence likelihood NPO compares with the reference."""
    return -token_nll(logits, labels).sum(dim=-1)


def ga_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Gradient Ascent (SPEC "GA": maximise NLL on forget answers): ``L = −NLL_f``.

    Minimising it ascends the forget NLL, pushing the answer tokens' probability down."""
    return -answer_nll(logits, labels, reduction="mean")


def ga_diff_loss(
    forget_logits: Tensor,
    forget_labels: Tensor,
    retain_logits: Tensor,
    retain_labels: Tensor,
    retain_weight: float = 1.0,
) -> Tensor:
    """GA Difference (SPEC "GA Difference"): ``L = −NLL_f + w · NLL_r``.

    Ascent on a forget batch and descent on a retain batch in the same step (interleaved, not one
    epoch after the other); ``w`` = ``retain_weight`` ≥ 0."""
    _check_weight("retain_weight", retain_weight)
    return ga_loss(forget_logits, forget_labels) + retain_weight * answer_nll(retain_logits, retain_labels)


def kl_retain(current_logits: Tensor, reference_logits: Tensor, labels: Tensor) -> Tensor:
    """``KL(original ‖ current)`` on retain answers (SPEC "KL Minimisation").

    ``KL = (1/N) Σ_{answer positions} Σ_v p_ref(v) · (log p_ref(v) − log p_cur(v))``, averaged over the
    N answer tokens of the batch, with the same shift as :func:`answer_nll`. The expectation is under
    the reference (vanilla) distribution, so it penalises the current model for losing mass where the
    vanilla model had it. ``reference_logits`` is detached."""
    _check_logits_labels(current_logits, labels, "current_logits")
    if reference_logits.shape != current_logits.shape:
        raise ValueError(
            f"reference_logits {tuple(reference_logits.shape)} must match current_logits "
            f"{tuple(current_logits.shape)}: run both models on the same batch"
        )
    mask = answer_mask(labels)
    count = int(mask.sum())
    if count == 0:
        raise ValueError(
            "the retain batch has no answer tokens (every label is -100): check the answer-only label masking, "
            "or raise max_length so answers are not truncated away"
        )
    log_p_cur = F.log_softmax(current_logits[:, :-1, :].float(), dim=-1)
    log_p_ref = F.log_softmax(reference_logits[:, :-1, :].detach().float(), dim=-1)
    # F.kl_div(input, target) = Σ target · (log target − input) = KL(target ‖ input) = KL(ref ‖ current).
    per_position = F.kl_div(log_p_cur, log_p_ref, reduction="none", log_target=True).sum(dim=-1)
    return (per_position * mask).sum() / count


def sft_loss(logits: Tensor, labels: Tensor, distill: Tensor | None = None,
             reference_logits: Tensor | None = None) -> Tensor:
    """The fine-tuning loss of the MFA: the answer cross-entropy, except on the rows marked ``distill``
    (``[B]`` bool), whose answer tokens instead pay ``KL(vanilla ‖ current)`` at the same positions
    (``reference_logits``: the vanilla on the same batch, detached). The mean is over every answer token
    of the batch, so a row weighs by its length under either objective. Without a marked row this is
    :func:`answer_nll`."""
    if distill is None or not bool(distill.any()):
        return answer_nll(logits, labels)
    if reference_logits is None:
        raise ValueError("rows marked distill need reference_logits (the vanilla's logits on the same batch)")
    if reference_logits.shape != logits.shape or distill.shape != labels.shape[:1]:
        raise ValueError(f"reference_logits {tuple(reference_logits.shape)} must match logits {tuple(logits.shape)} "
                         f"and distill {tuple(distill.shape)} must be [batch] = [{labels.shape[0]}]")
    mask = answer_mask(labels)
    count = int(mask.sum())
    if count == 0:
        raise ValueError("the batch has no answer tokens (every label is -100): check the answer-only label masking")
    log_p_cur = F.log_softmax(logits[:, :-1, :].float(), dim=-1)
    log_p_ref = F.log_softmax(reference_logits[:, :-1, :].detach().float(), dim=-1)
    kl = F.kl_div(log_p_cur, log_p_ref, reduction="none", log_target=True).sum(dim=-1)
    per_token = torch.where(distill[:, None], kl, token_nll(logits, labels))
    return (per_token * mask).sum() / count


def floor_loss(logits: Tensor, labels: Tensor, floor: Tensor) -> Tensor:
    """The calibrated ascent term (#27 lever 2): ``mean_b relu(floor_b − NLL_b)`` over the rows with a finite
    ``floor`` (``[B]``, NaN elsewhere), ``NLL_b`` the row's mean answer-token NLL. It lifts a remembered
    answer's loss up to a never-seen level and no further (0 gradient once there): pushing it beyond would
    make the row stand out the other way under membership inference. 0 when no row has a floor."""
    rows = torch.isfinite(floor)
    if not bool(rows.any()):
        return logits.sum() * 0.0
    nll = answer_nll(logits[rows], labels[rows], reduction="none")
    return F.relu(floor[rows].to(nll.dtype) - nll).mean()


def kl_min_loss(
    forget_logits: Tensor,
    forget_labels: Tensor,
    retain_logits: Tensor,
    retain_reference_logits: Tensor,
    retain_labels: Tensor,
    retain_weight: float = 1.0,
) -> Tensor:
    """KL Minimisation (SPEC "KL Minimisation"): ``L = −NLL_f + w · KL(original ‖ current)_r``."""
    _check_weight("retain_weight", retain_weight)
    return ga_loss(forget_logits, forget_labels) + retain_weight * kl_retain(
        retain_logits, retain_reference_logits, retain_labels
    )


def npo_loss(logprob_current: Tensor, logprob_reference: Tensor, beta: float) -> Tensor:
    """Negative Preference Optimisation on forget sequences (SPEC "NPO"; Zhang et al. 2024):

    ``L = mean_b −(2/β) · log σ(−β · (log π_θ(y_b|x_b) − log π_ref(y_b|x_b)))``

    with sequence log-likelihoods from :func:`sequence_logprob`, reference = the vanilla model
    (detached). At ``log π_θ = log π_ref`` it equals ``(2/β) log 2``; it falls towards 0 as the current
    likelihood drops below the reference, and its derivative w.r.t. ``log π_θ`` is ``2σ(β·Δ)/B > 0``,
    so descent lowers the forget likelihood, with a weight that vanishes once it is forgotten (unlike
    GA's constant push). ``F.logsigmoid`` keeps it finite for any Δ. The retain NLL term of the
    baseline is added by the method. SPEC's range for β is 0.1–0.4."""
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ConfigError(f"NPO beta must be a finite number > 0 (SPEC uses 0.1–0.4); got {beta!r}")
    if logprob_current.dim() != 1 or logprob_current.shape != logprob_reference.shape:
        raise ValueError(
            "logprob_current and logprob_reference must both be [batch] (one log-likelihood per sequence); "
            f"got {tuple(logprob_current.shape)} and {tuple(logprob_reference.shape)}"
        )
    if logprob_current.numel() == 0:
        raise ValueError("npo_loss got an empty batch")
    log_ratio = logprob_current.float() - logprob_reference.detach().float()
    return (-(2.0 / beta) * F.logsigmoid(-beta * log_ratio)).mean()


def accumulate_fisher(
    fisher: dict[str, Tensor], named_params: Iterable[tuple[str, torch.nn.Parameter]], scale: float = 1.0
) -> None:
    """Add ``scale · grad²`` of every parameter that has a gradient into ``fisher[name]`` (the empirical
    diagonal Fisher, MMUnlearner's saliency; SPEC "MMUnlearner").

    Call after each backward pass; ``scale`` = 1/number-of-batches gives the mean. Updated in place
    because ``fisher`` is the caller's accumulator: one float32 tensor per parameter, kept across
    batches, and copying it on each call would double the memory of a model-sized buffer. The only
    temporary is one float32 copy of the parameter being added (``grad² · scale`` is rounded exactly as
    ``grad.float().pow(2).mul_(scale)``; a fused ``addcmul_`` would round differently and move mask bits).
    An accumulator may live on another device than the gradient (MMUnlearner keeps finished ones on the
    CPU). Parameters whose ``grad`` is None (frozen or unused) are skipped and get no entry."""
    _check_weight("scale", scale)
    for name, param in named_params:
        if param.grad is None:
            continue
        squared = param.grad.detach().to(torch.float32, copy=True).square_().mul_(scale)
        if name not in fisher:
            fisher[name] = squared
            continue
        if fisher[name].shape != squared.shape:
            raise ValueError(
                f"Fisher entry {name!r} has shape {tuple(fisher[name].shape)} but the gradient has "
                f"{tuple(squared.shape)}: accumulate each model into its own dict"
            )
        fisher[name].add_(squared.to(fisher[name].device))


def saliency_mask(
    fisher_forget: Mapping[str, Tensor],
    fisher_preserve: Mapping[str, Tensor],
    threshold: float = 1.0,
    eps: float = 1e-12,
    *,
    free: bool = False,
) -> dict[str, Tensor]:
    """MMUnlearner's parameter mask (SPEC: ``mask = F_f / F_p ≥ 1``): for each parameter,
    ``mask = F_f / (F_p + ε) ≥ threshold`` element-wise — the entries more important to the forget
    set than to what must be preserved. Entries with zero forget Fisher are never masked.

    Both dicts must have the same names and shapes; returns bool tensors under the same names, each on
    the device of its preserve Fisher. ``free=True`` consumes both dicts (they must be mutable dicts that
    nothing else reads): each parameter's pair is popped and divided in place as its mask is made, so the
    Fisher memory shrinks while the mask (1 byte an entry against 8) grows, and nothing Fisher-sized is
    left afterwards. Both ways give the same bits."""
    if not math.isfinite(threshold) or threshold <= 0:
        raise ConfigError(f"saliency threshold must be a finite number > 0 (MMUnlearner uses 1.0); got {threshold!r}")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0; got {eps!r}")
    missing = sorted(set(fisher_forget) ^ set(fisher_preserve))
    if missing:
        raise ValueError(
            f"forget and preserve Fisher dicts name different parameters ({missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}): compute both on the same trainable parameters"
        )
    for name, forget in fisher_forget.items():
        if forget.shape != fisher_preserve[name].shape:
            raise ValueError(
                f"Fisher shapes differ for {name!r}: forget {tuple(forget.shape)} vs preserve "
                f"{tuple(fisher_preserve[name].shape)}"
            )
    masks = {}
    for name in list(fisher_forget):
        if free:
            preserve = fisher_preserve.pop(name).float().add_(eps)  # type: ignore[attr-defined]
            forget = fisher_forget.pop(name).float().to(preserve.device)  # type: ignore[attr-defined]
            masks[name] = forget.div_(preserve) >= threshold
        else:
            preserve = fisher_preserve[name].float()
            masks[name] = fisher_forget[name].float().to(preserve.device) / (preserve + eps) >= threshold
    return masks


def mask_share(mask: Mapping[str, Tensor]) -> float:
    """Share of masked entries over all entries of all parameters in ``mask`` (0.0–1.0)."""
    total = sum(m.numel() for m in mask.values())
    if total == 0:
        raise ValueError("the mask is empty (no parameters): compute the Fisher on at least one trainable parameter")
    return sum(int(m.sum()) for m in mask.values()) / total
