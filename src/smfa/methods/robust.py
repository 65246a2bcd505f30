"""Levers against forgetting that only hides (#27, docs/robustness.md; #37, docs/undo.md): UNDO after SMFA,
and the calibrated ascent term's data.

UNDO (Unlearn-Noise-Distill-on-Outputs; Lee et al., arXiv 2506.06278), as the paper does it, as a last step of
SMFA (``robust: distill``). A refusal-tuned model still holds the forgotten facts behind the refusal: a few
fine-tuning steps on *other* facts bring them back (docs/robustness.md). UNDO's remedy has two steps:

1. **Noise** — shrink and perturb a copy of the unlearned model (the teacher), every parameter of its language
   model: ``θ' = (1 − α)·θ + α·β·N`` with ``N`` drawn as Xavier-uniform initialisation draws a matrix
   (``U(−b, b)``, ``b = √(6 / (fan_in + fan_out))``); vectors (RMSNorm / LayerNorm gains, biases) have no
   Xavier draw, so, as in the authors' code, their noise is 0 and they are only shrunk, ``(1 − α)·θ``. ``α`` 0
   is the teacher itself; ``α`` 1 with ``β`` 1 a freshly initialised model (norm gains at 0).
2. **Distil** — train the noised copy (the student: full fine-tuning of the language model, vision tower and
   projector frozen and never noised) on the inputs the data rule allows: the retain rows towards the
   teacher's distribution (``KL(teacher ‖ student)`` on every answer token) and the forget rows towards
   **hard** refusals (cross-entropy on a refusal drawn from ``smfa.refusals``' pool, the same targets the MFA
   trained on): the teacher's residual preference for a forgotten answer is never taught back. Training runs
   until the student's retain score on a held-out share of the retain rows (never trained on) is within a
   tolerance (5 %) of the teacher's, checked before the first step and every ``check_every`` steps, or until a
   step cap; the run records which (``undo.json`` in the run). The score (``stop``): ``accuracy`` (default) — the
   share of held-out rows whose whole answer is the model's argmax at every answer token, i.e. what greedy
   decoding answers, the retain memory the evaluation reads; or ``nll`` — the answer tokens' mean NLL, the
   paper's rule (relative cross-entropy on held-out retain data). On rows the teacher has memorised its NLL is
   ~0.02 nats, so 5 % of it is 0.001 nats, a bar no noised student meets (docs/undo.md); on the paper's
   held-out corpus (2-3 nats) 5 % is a tenth of a nat.

Memory: the vanilla, the teacher and the student are resident together (three full-size models).
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from smfa.errors import ConfigError

ROBUST_MODES = ("none", "distill")
STOP_SCORES = ("accuracy", "nll")  # what "retain recovered" is measured by (module docstring)
UNDO_RECORD = "undo.json"  # in the run directory: the noise, the stop rule and every check


def check_robust_fields(cfg: Any) -> None:
    """Reject a bad ``robust`` / ``robust_*`` / ``calibrate_floor`` value before any training."""
    name = type(cfg).__name__

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if cfg.robust not in ROBUST_MODES:
        raise ConfigError(f"{name}: robust must be one of {', '.join(ROBUST_MODES)}, got {cfg.robust!r}")
    for field_name, what in (("robust_noise", "the shrink share α"), ("robust_beta", "the noise scale β")):
        value = getattr(cfg, field_name)
        if not (number(value) and 0 <= value <= 1):
            raise ConfigError(f"{name}: {field_name} must be a number in [0, 1] ({what}), got {value!r}")
    floor = getattr(cfg, "calibrate_floor", 0.0)
    if not (number(floor) and floor >= 0):
        raise ConfigError(f"{name}: calibrate_floor must be a number >= 0 (nats per answer token; 0 = off), got {floor!r}")
    for field_name in ("robust_lr", "robust_tolerance"):
        value = getattr(cfg, field_name)
        if not (number(value) and value > 0):
            raise ConfigError(f"{name}: {field_name} must be a number > 0, got {value!r}")
    for field_name in ("robust_max_steps", "robust_check_every"):
        value = getattr(cfg, field_name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"{name}: {field_name} must be an integer >= 1, got {value!r}")
    if cfg.robust_stop not in STOP_SCORES:
        raise ConfigError(f"{name}: robust_stop must be one of {', '.join(STOP_SCORES)}, got {cfg.robust_stop!r}")
    share = cfg.robust_holdout
    if not (number(share) and 0 < share < 1):
        raise ConfigError(f"{name}: robust_holdout must be a number in (0, 1) (the share of retain rows held out), got {share!r}")


# ---- 1. noise ------------------------------------------------------------------------------------------
def shrink_perturb(theta: torch.Tensor, alpha: float, beta: float, generator: torch.Generator) -> torch.Tensor:
    """``(1 − α)·θ + α·β·N``, ``N`` Xavier-uniform for a tensor of 2 or more dimensions (``generator``: a CPU
    generator) and 0 for a vector (a norm gain, a bias: only shrunk). A new tensor in ``θ``'s dtype and device;
    ``θ`` is not modified."""
    w = theta.detach().float()
    out = (1.0 - alpha) * w
    if theta.ndim >= 2 and alpha * beta != 0:
        noise = torch.nn.init.xavier_uniform_(torch.empty(w.shape, dtype=torch.float32), generator=generator)
        out = out + (alpha * beta) * noise.to(w.device)
    return out.to(theta.dtype)


def parameter_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator that depends on ``seed`` and the parameter's ``name`` only (not on the order)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def shrink_perturb_parameters(named: Iterable[tuple[str, torch.nn.Parameter]], alpha: float, beta: float, seed: int,
                              skip_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Replace, in place, every parameter of ``named`` outside ``skip_prefixes`` by :func:`shrink_perturb`
    (matrices and vectors alike). Returns the names changed, in order."""
    done = []
    with torch.no_grad():
        for name, param in named:
            if name.startswith(skip_prefixes):
                continue
            param.copy_(shrink_perturb(param, alpha, beta, parameter_generator(seed, name)))
            done.append(name)
    return done


# ---- 2. distil -----------------------------------------------------------------------------------------
def split_holdout(rows: Sequence[Any], share: float, seed: int) -> tuple[list[Any], list[Any]]:
    """``(trained, held out)``: a seeded ``share`` of ``rows`` (at least one row, never all) held out, both
    in ``rows``' order."""
    if len(rows) < 2:
        raise ConfigError(f"robust distill holds out a share of the retain rows to decide when to stop: it needs "
                          f"at least 2 retain rows, got {len(rows)}")
    n = min(len(rows) - 1, max(1, round(share * len(rows))))
    held = set(random.Random(seed).sample(range(len(rows)), n))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def undo_items(retain_rows: Sequence[Any], forget_rows: Sequence[Any], seed: int) -> list:
    """What the student trains on: each retain row marked ``distill`` (the teacher's distribution over its
    answer tokens) and each forget row with a hard refusal drawn from the pool (its tokens, cross-entropy)."""
    from smfa.data import reference_items, refusal_items

    return reference_items(retain_rows, distill=True) + refusal_items(forget_rows, seed=seed)


@dataclass(frozen=True)
class RetainScore:
    """A model on the held-out retain rows: ``nll`` — the answer tokens' mean NLL (every token weighs the
    same, as a cross-entropy loss); ``accuracy`` — the share of rows whose every answer token is the model's
    argmax (under greedy decoding, the rows it answers exactly)."""

    nll: float
    accuracy: float


def recovery_gap(student: RetainScore, teacher: RetainScore, stop: str) -> float:
    """How much worse the student is than the teacher, relative: ``(s − t) / t`` for ``nll``, ``(t − s) / t``
    for ``accuracy`` (``t`` at least 1e-6); ≤ the tolerance is recovered (better than the teacher: < 0)."""
    if stop == "nll":
        return (student.nll - teacher.nll) / max(teacher.nll, 1e-6)
    return (teacher.accuracy - student.accuracy) / max(teacher.accuracy, 1e-6)


@dataclass
class RecoveryMonitor:
    """The stop rule: :meth:`check` at step 0 and :meth:`after_step` after every optimiser step, measuring
    (``measure()``: the student's :class:`RetainScore`) at step 0, every ``every`` steps and at ``max_steps``;
    recovered at the first measurement whose :func:`recovery_gap` (by ``stop``) is within ``tolerance``."""

    teacher: RetainScore
    stop: str
    tolerance: float
    every: int
    max_steps: int
    measure: Callable[[], RetainScore]
    checks: list[dict[str, float]] = field(default_factory=list)
    recovered: bool = False

    def check(self, step: int) -> bool:
        score = self.measure()
        gap = recovery_gap(score, self.teacher, self.stop)
        self.recovered = gap <= self.tolerance
        self.checks.append({"step": step, "nll": round(score.nll, 6), "accuracy": round(score.accuracy, 6),
                            "gap": round(gap, 6)})
        return self.recovered

    def after_step(self, step: int) -> bool:
        """Whether to stop after optimiser step ``step``."""
        if step % self.every == 0 or step >= self.max_steps:
            return self.check(step) or step >= self.max_steps
        return False

    @property
    def steps(self) -> int:
        return int(self.checks[-1]["step"]) if self.checks else 0


def retain_score(model: torch.nn.Module, dataset: Any, collator: Callable, batch_size: int) -> RetainScore:
    """``model``'s :class:`RetainScore` over ``dataset`` (one forward pass per batch); its train/eval mode is
    restored."""
    from smfa.losses import answer_logits, answer_mask, answer_nll
    from smfa.models.placement import move_batch

    was_training = model.training
    model.eval()
    total, tokens, exact, rows = 0.0, 0, 0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = move_batch(collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]), model)
            logits, labels = answer_logits(model, batch)
            mask = answer_mask(labels)
            total += float(answer_nll(logits, labels, reduction="sum"))
            tokens += int(mask.sum())
            hit = (logits[:, :-1].argmax(-1) == labels[:, 1:]) | ~mask
            has_answer = mask.any(-1)
            exact += int((hit.all(-1) & has_answer).sum())
            rows += int(has_answer.sum())
    model.train(was_training)
    if tokens == 0:
        raise ConfigError("robust distill: the held-out retain rows have no answer token to measure")
    return RetainScore(nll=total / tokens, accuracy=exact / rows)


def recovery_callback(monitor: RecoveryMonitor) -> Any:
    """The HF ``TrainerCallback`` that asks ``monitor`` after every optimiser step and stops the run."""
    from transformers import TrainerCallback

    class RecoveryCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if monitor.after_step(state.global_step):
                control.should_training_stop = True
            return control

    return RecoveryCallback()


def distill_into_noised(ctx: Any, teacher: torch.nn.Module, hp: Any) -> torch.nn.Module:
    """UNDO (module docstring): a copy of ``teacher`` shrunk and perturbed (``hp.robust_noise`` α,
    ``hp.robust_beta`` β) and distilled from it at ``hp.robust_lr`` until its held-out retain score
    (``hp.robust_stop``) is within ``hp.robust_tolerance`` of the teacher's (checked every ``hp.robust_check_every`` steps) or
    ``hp.robust_max_steps``; writes ``undo.json`` to ``ctx.work_dir``. ``teacher``'s weights are not modified
    (it is frozen and put in eval mode)."""
    import time

    from smfa.data import make_collator, reference_items
    from smfa.rundir import write_json_atomic
    from smfa.training.runs import prepare_trainable, train_sft

    family = ctx.vanilla.family
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    trained_retain, held = split_holdout(ctx.data.retain_rows, float(hp.robust_holdout), ctx.seed + 3)
    collate = make_collator(family, ctx.vanilla.processor)
    held_ds = ctx.encode(reference_items(held), desc="encoding held-out retain")
    batch = int(hp.batch_size)
    teacher_score = retain_score(teacher, held_ds, collate, batch)

    student = copy.deepcopy(teacher)
    skip = tuple(family.vision_module_prefixes + family.projector_module_prefixes)
    noised = shrink_perturb_parameters(student.named_parameters(), float(hp.robust_noise), float(hp.robust_beta),
                                       ctx.seed, skip)
    if not noised:
        raise ConfigError("robust distill: the model has no language-model parameter to noise")
    cap = int(hp.robust_max_steps)
    # The run is the cap's steps long (its cosine schedule too); the monitor ends it earlier once recovered.
    student_hp = replace(hp, lora=False, lr=float(hp.robust_lr), max_steps=cap, min_steps=cap)
    student = prepare_trainable(ctx, student_hp, student)
    monitor = RecoveryMonitor(teacher_score, hp.robust_stop, float(hp.robust_tolerance), int(hp.robust_check_every),
                              cap, lambda: retain_score(student, held_ds, collate, batch))
    t0 = time.perf_counter()
    if not monitor.check(0):
        items = undo_items(trained_retain, ctx.data.forget_rows, ctx.seed + 2)
        student = train_sft(ctx, student, student_hp, ctx.encode(items, desc="encoding distill"), tag="distill",
                            reference=teacher, callbacks=[recovery_callback(monitor)])
    write_json_atomic(ctx.work_dir / UNDO_RECORD, {
        "method": "UNDO (arXiv 2506.06278): shrink-and-perturb, then distil until retain recovers",
        "alpha": float(hp.robust_noise), "beta": float(hp.robust_beta), "seed": ctx.seed, "lr": float(hp.robust_lr),
        "parameters_noised": len(noised), "retain_rows_trained": len(trained_retain), "retain_rows_held_out": len(held),
        "forget_rows": len(ctx.data.forget_rows), "teacher_nll": round(teacher_score.nll, 6),
        "teacher_accuracy": round(teacher_score.accuracy, 6), "stop": hp.robust_stop, "tolerance": float(hp.robust_tolerance), "check_every": int(hp.robust_check_every), "max_steps": cap,
        "recovered": monitor.recovered, "steps": monitor.steps, "checks": monitor.checks,
        "train_s": round(time.perf_counter() - t0, 2)})
    return student


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
