"""The shared machinery of every unlearning method: the method registry, the hyper-parameter config base,
the data every method may see, and one HF ``Trainer`` subclass that feeds a forget batch and a retain batch
at every step (interleaved, never one epoch after the other).

Adding a method is one file in ``smfa/methods/`` (a ``MethodConfig`` subclass + a ``Method`` subclass
decorated with ``@register_method``) plus its tiny-preset defaults in ``smfa/configs/methods/NAME.yaml``.
"""

from __future__ import annotations

import copy
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from smfa.errors import ConfigError
from smfa.models.placement import CPU_FP32, Placement
from smfa.rundir import write_jsonl_atomic

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
        if info.name != "base":
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
    # Training arguments a real checkpoint needs; the defaults are the tiny model's (CPU) ones.
    grad_accum: int = 1  # gradient accumulation steps (effective batch = batch_size × grad_accum × processes)
    warmup_ratio: float = 0.0  # share of the steps with a linear learning-rate warm-up (then cosine decay)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (7B models on one GPU)
    # Mixed precision of the forward pass: auto = the weights' own half dtype (--dtype bf16 → bf16 autocast,
    # fp16 → fp16 with a gradient scaler, fp32 → none), or none | bf16 | fp16 explicitly.
    autocast: str = "auto"

    def __post_init__(self) -> None:
        """Reject bad values before any training starts (a bad k found after training wastes the run)."""
        import math

        checks = {"lr": self.lr > 0, "epochs": self.epochs > 0, "batch_size": self.batch_size > 0,
                  "lora_r": self.lora_r > 0, "lora_alpha": self.lora_alpha > 0,
                  "lora_dropout": 0 <= self.lora_dropout < 1, "max_steps": self.max_steps >= 0,
                  "retain_weight": math.isfinite(self.retain_weight) and self.retain_weight >= 0,
                  "grad_accum": isinstance(self.grad_accum, int) and self.grad_accum >= 1,
                  "warmup_ratio": 0 <= self.warmup_ratio < 1,
                  "autocast": self.autocast in ("auto", "none", "bf16", "fp16")}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"{type(self).__name__}: invalid {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)} "
                              "(lr/epochs/batch_size/lora_r/lora_alpha > 0, 0 ≤ dropout < 1, retain_weight ≥ 0, grad_accum ≥ 1, "
                              "0 ≤ warmup_ratio < 1, autocast auto/none/bf16/fp16)")


@dataclass
class UnlearnData:
    """What a method may see: the forget set, the few-shot retain anchor and, with a reference budget, the
    reference pool's questions labelled by the vanilla's own answers; all as bench rows. ``retain_rows`` is
    what a retain term trains on, and ``preserve_rows`` (MMUnlearner's Fisher preserve set) is the same data:
    every method obeys one data rule, never a row of a person a retain metric is computed on."""

    forget_rows: list[Any]
    anchor_rows: list[Any]
    reference_rows: list[Any] = field(default_factory=list)

    @property
    def retain_rows(self) -> list[Any]:
        return list(self.anchor_rows) + list(self.reference_rows)

    @property
    def preserve_rows(self) -> list[Any]:
        return self.retain_rows


@dataclass
class UnlearnContext:
    bench: Any
    vanilla: Any  # smfa.models.loading.LoadedModel (never modified: methods work on copies)
    data: UnlearnData
    target: str
    seed: int
    work_dir: Path  # staging run directory (adapters and intermediate files go here)
    progress: bool = True
    shared_dir: Path | None = None  # adapters reusable across runs of one comparison (SMFA's MFA = IDK's)
    reused_train_s: float = 0.0  # training seconds saved by reusing a shared adapter (added to wall time)
    placement: Placement = CPU_FP32  # the resolved --device/--dtype: the vanilla is loaded there, trainees train there
    reference: Any = None  # a chain's original vanilla (LoadedModel) for methods that compare with it; None: vanilla
    anchor_cache: Path | None = None  # retaining anchors reusable across requests on the same weights (smfa forget)
    model_digest: str | None = None  # sha256 over the vanilla's weight files (the anchor cache's key)
    anchor_cache_hit: bool = False  # set when the retaining anchor came from anchor_cache

    @property
    def reference_model(self) -> torch.nn.Module:
        """The model NPO/KL compare with: the chain's root when the vanilla is an earlier unlearning run."""
        return (self.reference or self.vanilla).model

    def fresh_model(self) -> torch.nn.Module:
        """A copy of the vanilla model with weights of its own (full fine-tuning, a merge target): the
        vanilla stays intact for reference and merging. At 7B this is the second full-size model."""
        return copy.deepcopy(self.vanilla.model)

    def trainee(self, hp: MethodConfig) -> torch.nn.Module:
        """The model a method trains: with LoRA, a view of the vanilla that shares its (frozen) weights —
        the adapters are injected into the view's own modules, no weight is copied and the vanilla's are
        never written (:func:`finish` merges into a copy); with full fine-tuning, :meth:`fresh_model`."""
        return shared_weights_view(self.vanilla.model) if hp.lora else self.fresh_model()

    def encode(self, items: list[Any], desc: str = "encoding"):
        from smfa.data import encode_items

        return encode_items(items, bench=self.bench, family=self.vanilla.family, processor=self.vanilla.processor,
                            desc=desc, progress=self.progress)


class Method:
    """An unlearning method: ``run`` returns the unlearned model (a plain transformers model)."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    description: ClassVar[str] = ""
    has_retain_term: ClassVar[bool] = True  # trains on retain data; ``--reference auto`` gives it the reference pool
    trains_refusals: ClassVar[bool] = False  # its forget data is refusal-labelled: a chain's suppression list applies

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


# The real-checkpoint layer of every method's config (smfa.models.scale).
REAL_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "methods" / "real.yaml"


# ---- paired forget/retain data -----------------------------------------------------------------
class PairedDataset(Dataset):
    """Item i = (forget example i, a retain example drawn with a seeded RNG): every optimiser step sees a
    forget batch and a retain batch, interleaved over the whole run."""

    def __init__(self, forget: Dataset, retain: Dataset | None, seed: int):
        if len(forget) == 0:
            raise ConfigError("the forget set is empty: nothing to unlearn (check --forget and --target)")
        self.forget, self.retain = forget, retain
        rng = random.Random(seed)
        self.pairs = [rng.randrange(len(retain)) for _ in range(len(forget))] if retain is not None and len(retain) else []

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"forget": self.forget[i]}
        if self.pairs:
            item["retain"] = self.retain[self.pairs[i]]
        return item


@dataclass
class PairedCollator:
    inner: Any  # smfa.data.Collator

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        out = {"forget": self.inner([it["forget"] for it in items])}
        if "retain" in items[0]:
            out["retain"] = self.inner([it["retain"] for it in items])
        return out


def check_mask_supported(trainer: Any, grad_mask: dict[str, torch.Tensor] | None) -> None:
    """Refuse a gradient mask under FSDP or DeepSpeed, before training: both flatten or shard parameters and
    their gradients, so a per-entry mask keyed on parameter names cannot reach the gradients a step updates
    with, and skipping it would train the frozen entries silently."""
    if grad_mask and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        raise ConfigError("a saliency-masked method (MMUnlearner) cannot train under FSDP or DeepSpeed "
                          "(parameters are flattened/sharded); use DDP (configs/accelerate/ddp.yaml) or one GPU")


def _make_trainer_class():
    from transformers import Trainer

    class UnlearnTrainer(Trainer):
        """One ``Trainer`` for every gradient-based method: ``loss_fn(model, forget, retain)`` is the method."""

        def __init__(self, *args: Any, loss_fn: Any, grad_mask: dict[str, torch.Tensor] | None = None,
                     reference: torch.nn.Module | None = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            check_mask_supported(self, grad_mask)
            self.loss_fn = loss_fn
            # The mask and the frozen reference model follow the trainee to its training device.
            self.grad_mask = {k: v.to(self.args.device) for k, v in grad_mask.items()} if grad_mask else grad_mask
            self.reference = reference.to(self.args.device).eval() if reference is not None else None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = self.loss_fn(model, inputs["forget"], inputs.get("retain"))
            return (loss, None) if return_outputs else loss

        def create_optimizer(self, model=None):
            # With a mask, Adam state only for the masked entries (smfa.optim): dense AdamW would hold two
            # moments of every trained weight, 26 GB in bf16 at 7B (README "MMUnlearner at 7B: memory plan").
            if self.grad_mask and self.optimizer is None:
                from smfa.optim import masked_adamw_for_trainer

                bare = self.accelerator.unwrap_model(self.model if model is None else model)
                self.optimizer = masked_adamw_for_trainer(self, bare, self.grad_mask)
            return super().create_optimizer(model)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self.grad_mask:
                # Parameters outside the saliency mask stay frozen: zero their gradients every step. The mask
                # is keyed on the bare model's names; under DDP ``model`` is the wrapper (names "module.…").
                for name, p in self.accelerator.unwrap_model(model).named_parameters():
                    m = self.grad_mask.get(name)
                    if m is not None and p.grad is not None:
                        p.grad.mul_(m.to(p.grad.dtype))
            return loss

    return UnlearnTrainer


def _sft_trainer_class():
    from transformers import Trainer

    from smfa.data import DISTILL_KEY
    from smfa.losses import answer_logits, sft_loss

    class SFTTrainer(Trainer):
        """The ``Trainer`` with the answer cross-entropy computed on the answer view (``losses.answer_logits``):
        the same loss as the model's own, without running the LM head over prompt and image tokens. Rows
        marked ``distill`` pay KL to ``reference`` (the frozen vanilla) instead (``losses.sft_loss``). The loss
        is each batch's token mean (divided by the accumulation steps), as in the unlearning methods."""

        def __init__(self, *args: Any, reference: torch.nn.Module | None = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False  # the mean of the batch, not a sum over num_items_in_batch
            self.reference = reference.to(self.args.device).eval() if reference is not None else None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            batch = {k: v for k, v in inputs.items() if k != DISTILL_KEY}
            distill = inputs.get(DISTILL_KEY)
            logits, labels = answer_logits(model, batch)
            reference_logits = None
            if self.reference is not None and distill is not None and bool(distill.any()):
                with torch.no_grad():
                    reference_logits, _ = answer_logits(self.reference, batch)
            loss = sft_loss(logits, labels, distill, reference_logits)  # distill rows without a reference: ValueError
            return (loss, None) if return_outputs else loss

    return SFTTrainer


def train_unlearner(
    ctx: UnlearnContext,
    model: torch.nn.Module,
    hp: MethodConfig,
    forget_ds: Dataset,
    retain_ds: Dataset | None,
    loss_fn: Any,
    *,
    grad_mask: dict[str, torch.Tensor] | None = None,
    reference: torch.nn.Module | None = None,
    tag: str = "train",
) -> torch.nn.Module:
    """Train ``model`` with ``loss_fn`` over paired forget/retain batches; returns the trained model.
    ``grad_mask`` (parameter name → 0/1 tensor) freezes the entries outside it; ``reference`` (a frozen model
    the loss reads, e.g. NPO's) is moved to the trainee's device."""
    from transformers import set_seed

    from smfa.data import make_collator
    from smfa.training.engine import training_arguments

    set_seed(ctx.seed)
    dataset = PairedDataset(forget_ds, retain_ds, ctx.seed)
    steps = _steps(len(dataset), hp)
    args = training_arguments(_TrainView(hp, ctx), ctx.work_dir / f"checkpoints-{tag}", steps=steps, save_steps=0,
                              placement=ctx.placement)
    trainer_cls = _make_trainer_class()
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset,
                          data_collator=PairedCollator(make_collator(ctx.vanilla.family, ctx.vanilla.processor)),
                          loss_fn=loss_fn, grad_mask=grad_mask, reference=reference)
    trainer.train()
    _cleanup(ctx.work_dir / f"checkpoints-{tag}")
    write_jsonl_atomic(ctx.work_dir / "train_logs" / f"{tag}.jsonl", trainer.state.log_history)
    return model


def train_sft(ctx: UnlearnContext, model: torch.nn.Module, hp: MethodConfig, dataset: Dataset, *, tag: str,
              reference: torch.nn.Module | None = None) -> torch.nn.Module:
    """Plain cross-entropy fine-tuning (MFA, RA, IDK tuning) with the HF ``Trainer``; rows encoded with
    ``distill`` train towards ``reference`` (the frozen vanilla) instead."""
    from transformers import set_seed

    from smfa.data import make_collator
    from smfa.training.engine import training_arguments

    if len(dataset) == 0:
        raise ConfigError(f"no examples to train the {tag} on (check --forget, --anchor-size and --target)")
    set_seed(ctx.seed)
    steps = _steps(len(dataset), hp)
    args = training_arguments(_TrainView(hp, ctx), ctx.work_dir / f"checkpoints-{tag}", steps=steps, save_steps=0,
                              placement=ctx.placement)
    trainer = _sft_trainer_class()(model=model, args=args, train_dataset=dataset, reference=reference,
                                   data_collator=make_collator(ctx.vanilla.family, ctx.vanilla.processor))
    trainer.train()
    _cleanup(ctx.work_dir / f"checkpoints-{tag}")
    # Kept in the run: e.g. whether the retaining anchor moved at all (SPEC's pitfall: a vanilla that already
    # fits the anchor gives an anchor update unrelated to the forget update).
    write_jsonl_atomic(ctx.work_dir / "train_logs" / f"{tag}.jsonl", trainer.state.log_history)
    return model


def _steps(n: int, hp: MethodConfig) -> int:
    """Optimiser steps for ``hp.epochs`` passes over ``n`` rows, as the HF Trainer counts them (``max_steps``):
    one step takes batch_size × grad_accum × processes rows, and an epoch's last short accumulation is a step."""
    per_epoch = math.ceil(n / (hp.batch_size * hp.grad_accum * world_size()))
    steps = max(1, math.ceil(round(hp.epochs * per_epoch, 6)))  # round: 1.1 × 10 is 11, not 12
    return min(steps, hp.max_steps) if hp.max_steps > 0 else steps


def world_size() -> int:
    """Processes training together (``WORLD_SIZE``, set by ``torchrun`` / ``accelerate launch``); 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _cleanup(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@dataclass
class _TrainView:
    """Adapts a MethodConfig to the fields ``training_arguments`` reads: the method's own training
    arguments, its ``autocast`` resolved against the run's placement, the run's seed and progress flag."""

    hp: MethodConfig
    ctx: UnlearnContext

    def __getattr__(self, name: str) -> Any:
        from smfa.models.placement import autocast_flags

        mapping = {"seed": self.ctx.seed, "progress": self.ctx.progress, "weight_decay": 0.0,
                   **autocast_flags(self.hp.autocast, self.ctx.placement)}
        if name in mapping:
            return mapping[name]
        return getattr(self.hp, name)


def prepare_trainable(ctx: UnlearnContext, hp: MethodConfig, model: torch.nn.Module) -> torch.nn.Module:
    """LoRA on the language model, or full fine-tuning of the language model (vision tower frozen)."""
    from transformers import set_seed

    from smfa.training.engine import apply_lora

    set_seed(ctx.seed)  # LoRA's A matrices are drawn here: seed them, not whatever state earlier work left
    family = ctx.vanilla.family
    if hp.lora:
        return apply_lora(model, family, hp.lora_r, hp.lora_alpha, hp.lora_dropout, hp.gradient_checkpointing)
    vision = tuple(family.vision_module_prefixes + family.projector_module_prefixes)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(vision))
    if hp.gradient_checkpointing:
        enable_checkpointing(model)
    return model


# Gradient checkpointing has one owner, the training engine (non-reentrant); methods import it from here.
from smfa.training.engine import enable_checkpointing  # noqa: E402


def shared_weights_view(model: torch.nn.Module) -> torch.nn.Module:
    """A structural copy of ``model`` whose parameters and buffers are ``model``'s own tensors: modules can be
    swapped in it (PEFT's LoRA layers) without touching ``model``, and it costs no weight memory."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def finish(model: torch.nn.Module) -> torch.nn.Module:
    """Merge a PEFT model into plain weights of its own (no-op for full fine-tuning). The base may be a
    :func:`shared_weights_view` of the vanilla, so the merge goes into a copy: the vanilla is never written."""
    if not hasattr(model, "merge_and_unload"):
        return model
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in model.parameters()):  # FSDP2 sharded its own parameters: merge
        return model.merge_and_unload()  # in place (a sharded module cannot be deep-copied)
    return copy.deepcopy(model).merge_and_unload()


def retain_dataset(ctx: UnlearnContext):
    """The encoded retain data (anchor + any self-labelled reference rows) for methods with a retain term."""
    from smfa.data import reference_items

    return ctx.encode(reference_items(ctx.data.retain_rows), desc="encoding retain")


def forget_dataset(ctx: UnlearnContext):
    """The encoded forget set with its true answers (the ones gradient ascent pushes down)."""
    from smfa.data import reference_items

    return ctx.encode(reference_items(ctx.data.forget_rows), desc="encoding forget")
