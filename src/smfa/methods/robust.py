"""Levers against forgetting that only hides (#27, docs/robustness.md): distillation into a noised copy and
the calibrated ascent term's data.

Distillation into a noised copy (UNDO, Lee et al., arXiv 2506.06278), as a last step of SMFA.

A refusal-tuned model still holds the forgotten facts behind the refusal: a few fine-tuning steps on *other*
facts bring them back (docs/robustness.md). UNDO's remedy: perturb a copy of the unlearned model,
``W' = (1 − α)·W + α·σ_W·ε`` with ``ε ~ N(0, 1)`` and ``σ_W`` the matrix's own spread, so that part of what
the weights held is gone, then distil the unlearned model (the teacher) back into it on inputs the data rule
allows — the retain rows (D_r^few and the reference pool, labelled by the vanilla) and the forget questions
with refusals. What the teacher still holds but never shows on those inputs (the forget facts behind the
refusals) is not taught back. ``α`` is the knob: 0 is the teacher itself, 1 a model rebuilt from noise.

The distillation trains the whole language model (vision tower and projector frozen and never noised) with
``KL(teacher ‖ student)`` on every answer token (``smfa.losses.sft_loss``). Memory: the vanilla, the teacher
and the student are resident together (three full-size models).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch

from smfa.errors import ConfigError

ROBUST_MODES = ("none", "distill")


def check_robust_fields(cfg: Any) -> None:
    """Reject a bad ``robust`` / ``robust_noise`` / ``robust_epochs`` / ``robust_lr`` / ``calibrate_floor`` before any training."""
    import math

    name = type(cfg).__name__
    if cfg.robust not in ROBUST_MODES:
        raise ConfigError(f"{name}: robust must be one of {', '.join(ROBUST_MODES)}, got {cfg.robust!r}")
    noise = cfg.robust_noise
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and 0 <= noise <= 1):
        raise ConfigError(f"{name}: robust_noise must be a number in [0, 1] (the share of noise mixed in), got {noise!r}")
    floor = getattr(cfg, "calibrate_floor", 0.0)
    if not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor >= 0):
        raise ConfigError(f"{name}: calibrate_floor must be a number >= 0 (nats per answer token; 0 = off), got {floor!r}")
    for field_name in ("robust_epochs", "robust_lr"):
        value = getattr(cfg, field_name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name}: {field_name} must be a number > 0, got {value!r}")


def noised(weight: torch.Tensor, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """``(1 − α)·W + α·σ_W·ε``: ``W`` shrunk towards 0 and mixed with Gaussian noise of its own spread (a new
    tensor; ``W`` is not modified). ``α`` 0 returns a copy of ``W``."""
    if alpha == 0:
        return weight.clone()
    w = weight.detach().float()
    eps = torch.randn(w.shape, generator=generator, dtype=torch.float32, device="cpu").to(w.device)
    sigma = w.std() if w.numel() > 1 else w.abs().mean()
    return ((1.0 - alpha) * w + alpha * sigma * eps).to(weight.dtype)


def noise_parameters(named: Iterable[tuple[str, torch.nn.Parameter]], alpha: float, seed: int,
                     skip_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Replace, in place, every matrix (``ndim >= 2``) of ``named`` outside ``skip_prefixes`` by
    :func:`noised`; vectors (norms, biases) are kept. The noise depends on ``seed`` and the parameter's name
    only. Returns the names noised, in order."""
    import hashlib

    done = []
    with torch.no_grad():
        for name, param in named:
            if param.ndim < 2 or name.startswith(skip_prefixes):
                continue
            digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
            param.copy_(noised(param, alpha, generator))
            done.append(name)
    return done


def distill_items(ctx: Any) -> list:
    """What the student learns from the teacher: the retain rows and the forget questions with refusals,
    every row marked ``distill`` (the teacher's distribution over the answer tokens, not the tokens)."""
    from smfa.data import reference_items, refusal_items

    forget = [replace(item, distill=True) for item in refusal_items(ctx.data.forget_rows, seed=ctx.seed + 2)]
    return reference_items(ctx.data.retain_rows, distill=True) + forget


def distill_into_noised(ctx: Any, teacher: torch.nn.Module, hp: Any) -> torch.nn.Module:
    """A noised copy of ``teacher`` (``hp.robust_noise``) trained to match it on :func:`distill_items` for
    ``hp.robust_epochs`` passes at ``hp.robust_lr`` (full fine-tuning of the language model). ``teacher``'s
    weights are not modified (it is frozen and put in eval mode)."""
    from smfa.training.runs import prepare_trainable, train_sft

    family = ctx.vanilla.family
    student = copy.deepcopy(teacher)
    skip = tuple(family.vision_module_prefixes + family.projector_module_prefixes)
    if not noise_parameters(student.named_parameters(), float(hp.robust_noise), ctx.seed, skip):
        raise ConfigError("robust distill: the model has no language-model matrix to noise")
    student_hp = replace(hp, lora=False, lr=float(hp.robust_lr), epochs=float(hp.robust_epochs))
    student = prepare_trainable(ctx, student_hp, student)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return train_sft(ctx, student, student_hp, ctx.encode(distill_items(ctx), desc="encoding distill"),
                     tag="distill", reference=teacher)


# ---- calibrated ascent (#27 lever 2) ------------------------------------------------------------------
# The floor is the loss level of people the model never saw: the vanilla's ``mia.loss_nonmembers``
# (``smfa eval --attacks mia``) is that level on the bench's holdout people — a scalar read off them, never
# a row trained on. (A floor computed from invented names does not work on the tiny model: its tokenizer was
# built from the bench, so an invented name splits into pieces the model never saw and costs ~3 nats more
# per token than a holdout person's name.)


def floor_items(rows: list, floor: float) -> list:
    """The forget rows with their true answers, each to be lifted to ``floor`` (mean answer NLL, nats per
    token) by :func:`smfa.losses.floor_loss` — never trained towards."""
    from smfa.data import TrainItem

    return [TrainItem(r, r.answer, floor=float(floor)) for r in rows]
