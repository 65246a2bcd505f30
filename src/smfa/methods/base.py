"""What every unlearning method is: the method registry, the hyper-parameter config base, the ``Method``
base class, and ``LossMethod`` — a method that is its loss over paired forget/retain batches.

Adding a method is one file in ``smfa/methods/`` (a ``MethodConfig`` subclass + a ``Method`` subclass
decorated with ``@register_method``) plus its tiny-preset defaults in ``smfa/configs/methods/NAME.yaml``.
The data and run a method sees are in :mod:`smfa.methods.context`; training is :mod:`smfa.training`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from smfa.errors import ConfigError

if TYPE_CHECKING:
    from smfa.methods.context import UnlearnContext

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register an unlearning method under ``cls.name``."""
    if not cls.name or cls.name in _METHODS:
        raise ValueError(f"method name {cls.name!r} empty or registered twice")
    _METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    _import_all()
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    _import_all()
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]()


def _import_all() -> None:
    """Import every module beside this one (each registers its method); read from the folder, so the
    registry does not import its own package."""
    import importlib
    import pkgutil
    from pathlib import Path

    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in ("base", "context"):
            importlib.import_module(f"smfa.methods.{info.name}")


@dataclass
class MethodConfig:
    """Hyper-parameters every method has. Subclasses add their own, each documented."""

    lr: float = 1e-3  # learning rate (tiny model; real checkpoints use ~1e-4 LoRA / 1e-5 full)
    epochs: float = 5.0  # passes over the forget set (SMFA paper: 5)
    batch_size: int = 16  # forget examples per step (and as many retain examples)
    lora: bool = True  # LoRA on the language model (False: full fine-tuning of the language model)
    lora_r: int = 16  # SMFA paper: r 16, alpha 16, dropout 0.05
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    retain_weight: float = 1.0  # weight of the retain term where the method has one
    max_steps: int = 0  # >0 caps the number of optimiser steps
    # At least this many optimiser steps per training run whatever the data's size: epochs chosen on 200 people
    # are a handful of steps on 8 (max_steps, when set, still caps); 0 = epochs alone decide.
    min_steps: int = 0
    # Training arguments a real checkpoint needs; the defaults are the tiny model's (CPU) ones.
    grad_accum: int = 1  # gradient accumulation steps (effective batch = batch_size × grad_accum × processes)
    warmup_ratio: float = 0.0  # share of the steps with a linear learning-rate warm-up (then cosine decay)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (7B models on one GPU)
    # Mixed precision of the forward pass: auto = the weights' own half dtype (--dtype bf16 → bf16 autocast,
    # fp16 → fp16 with a gradient scaler, fp32 → none), or none | bf16 | fp16 explicitly.
    autocast: str = "auto"
    # With a reference budget (--reference self|self-full): at most this many reference-pool questions, a
    # seeded sample spread over kinds and people (smfa.reference.balanced_sample), so the work is fixed whatever
    # the pool's size; 0 = the whole pool.
    reference_cap: int = 0
    # With a reference budget: this share of the sample's memory questions goes to hard negatives — pool people
    # who share a name word with or look like a forgotten person (smfa.reference.with_hard_negatives, issue 36),
    # within reference_cap; 0 = the balanced sample alone.
    hard_negatives: float = 0.0
    hard_negative_repeat: int = 1  # the hard negatives' questions that many times (copies on top of reference_cap)
    # With a reference budget: this many by-name questions per forgotten person about made-up people whose name
    # shares a word with theirs, answered by the vanilla (smfa.decoys.name_decoys, issue 36), on top of
    # reference_cap; 0 = none.
    decoys: int = 0

    def __post_init__(self) -> None:
        """Reject bad values before any training starts (a bad k found after training wastes the run)."""
        import math

        checks = {"lr": self.lr > 0, "epochs": self.epochs > 0, "batch_size": self.batch_size > 0,
                  "lora_r": self.lora_r > 0, "lora_alpha": self.lora_alpha > 0,
                  "lora_dropout": 0 <= self.lora_dropout < 1, "max_steps": self.max_steps >= 0,
                  "min_steps": isinstance(self.min_steps, int) and self.min_steps >= 0,
                  "retain_weight": math.isfinite(self.retain_weight) and self.retain_weight >= 0,
                  "grad_accum": isinstance(self.grad_accum, int) and self.grad_accum >= 1,
                  "warmup_ratio": 0 <= self.warmup_ratio < 1,
                  "autocast": self.autocast in ("auto", "none", "bf16", "fp16"),
                  "reference_cap": isinstance(self.reference_cap, int) and self.reference_cap >= 0,
                  "hard_negatives": 0 <= self.hard_negatives <= 1,
                  "hard_negative_repeat": isinstance(self.hard_negative_repeat, int) and self.hard_negative_repeat >= 1,
                  "decoys": isinstance(self.decoys, int) and self.decoys >= 0}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"{type(self).__name__}: invalid {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)} "
                              "(lr/epochs/batch_size/lora_r/lora_alpha > 0, 0 ≤ dropout < 1, min_steps an integer ≥ 0, retain_weight ≥ 0, grad_accum ≥ 1, "
                              "0 ≤ warmup_ratio < 1, autocast auto/none/bf16/fp16, reference_cap an integer ≥ 0, 0 ≤ hard_negatives ≤ 1, hard_negative_repeat an integer ≥ 1, decoys an integer ≥ 0)")


class Method:
    """An unlearning method: ``run`` returns the unlearned model (a plain transformers model)."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    description: ClassVar[str] = ""
    has_retain_term: ClassVar[bool] = True  # trains on retain data; ``--reference auto`` gives it the reference pool
    trains_refusals: ClassVar[bool] = False  # its forget data is refusal-labelled: a chain's suppression list applies
    uses_reference_model: ClassVar[bool] = False  # its loss reads a frozen reference: a chain compares with its root

    def default_config_path(self, target: str = "all") -> Path:
        """The shipped tiny-preset defaults: ``configs/methods/NAME.yaml``; for ``target="visual"`` the
        visual-setting values tuned on validation, ``configs/methods/visual/NAME.yaml`` (layered over the first)."""
        root = Path(__file__).resolve().parent.parent / "configs" / "methods"
        return root / f"{self.name}.yaml" if target == "all" else root / target / f"{self.name}.yaml"

    def reference_config_path(self) -> Path:
        """The values tuned on validation for a reference budget (``--reference self|self-full``):
        ``configs/methods/reference/NAME.yaml``, layered over the setting's defaults."""
        return Path(__file__).resolve().parent.parent / "configs" / "methods" / "reference" / f"{self.name}.yaml"

    def config(self, yaml_path: str | None = None, overrides: dict[str, Any] | None = None,
               target: str = "all", reference: str = "none", real: bool = False) -> MethodConfig:
        """Dataclass defaults ← shipped tiny-preset YAML (← its visual-setting layer ← its reference-budget
        layer ← with ``real``, the real-checkpoint memory plan ``configs/methods/real.yaml``) ← user YAML ←
        overrides."""
        from smfa.config import resolve_config

        shipped = [self.default_config_path()] + ([self.default_config_path(target)] if target != "all" else [])
        shipped += [self.reference_config_path()] if reference != "none" else []
        shipped += [REAL_CONFIG] if real else []
        return resolve_config(self.config_cls, [p for p in shipped if p.is_file()] + [yaml_path], overrides)

    def run(self, ctx: UnlearnContext, hp: MethodConfig) -> torch.nn.Module:
        raise NotImplementedError

    def escalations(self, hp: MethodConfig) -> list[dict[str, Any]]:
        """Stronger settings to try, cheapest first, when a request's people still leak above the target after
        ``run`` (:func:`smfa.stages.unlearn.forget_until_target`): overrides of ``hp``. Default: twice, then four
        times the optimiser steps (epochs and the step floor both scaled)."""
        return [{"epochs": hp.epochs * f, "min_steps": hp.min_steps * f} for f in (2, 4)]


# The real-checkpoint layer of every method's config (smfa.models.scale).
REAL_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "methods" / "real.yaml"


class LossMethod(Method):
    """A method that is its loss: ``loss(hp, model, forget, retain, reference)`` over paired forget/retain
    batches (``retain`` None without a retain term; ``reference`` the frozen reference model when the method
    uses one, else None), trained on a LoRA view or a copy of the vanilla (:mod:`smfa.training.runs`)."""

    def loss(self, hp: Any, model: torch.nn.Module, forget: Any, retain: Any,
             reference: torch.nn.Module | None) -> torch.Tensor:
        raise NotImplementedError

    def run(self, ctx: UnlearnContext, hp: MethodConfig) -> torch.nn.Module:
        from smfa.methods.context import forget_dataset, retain_dataset
        from smfa.training.runs import finish, prepare_trainable, train_unlearner

        model = prepare_trainable(ctx, hp, ctx.trainee(hp))
        reference = ctx.reference_model.eval() if self.uses_reference_model else None
        forget = forget_dataset(ctx)
        retain = retain_dataset(ctx) if self.has_retain_term else None
        model = train_unlearner(ctx, model, hp, forget, retain, lambda m, f, r: self.loss(hp, m, f, r, reference),
                                reference=reference, tag=self.name)
        reference = None
        ctx.release_reference()  # a chain's root is not needed by the merge: at most 2 models at any time
        return finish(model)
