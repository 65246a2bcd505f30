"""The training runs of the unlearning methods, on the one ``Trainer`` (:mod:`smfa.training.trainer`):
the trainee's set-up (LoRA or full fine-tuning of the language model, a weight-sharing view, the merge
after), paired forget/retain data, the step count, and the two runs — ``train_unlearner`` (a method's
loss over paired batches) and ``train_sft`` (cross-entropy on the answer view).

``run`` below is a method's unlearning run (``smfa.methods.context.UnlearnContext``); only its ``seed``,
``work_dir``, ``placement``, ``progress`` and ``vanilla`` (``family``, ``processor``) are read here.
"""

from __future__ import annotations

import copy
import math
import random
import shutil
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from smfa.distributed import parameter_sharding, world_size
from smfa.errors import ConfigError
from smfa.rundir import write_jsonl_atomic
from smfa.training import trainer as engine_trainer
from smfa.training.engine import apply_lora, enable_checkpointing, training_arguments


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


# ---- the runs --------------------------------------------------------------------------------------
def train_unlearner(run: Any, model: torch.nn.Module, hp: Any, forget_ds: Dataset, retain_ds: Dataset | None,
                    loss_fn: Any, *, grad_mask: dict[str, torch.Tensor] | None = None,
                    reference: torch.nn.Module | None = None, tag: str = "train") -> torch.nn.Module:
    """Train ``model`` with ``loss_fn(model, forget batch, retain batch)`` over paired forget/retain batches;
    returns the trained model. ``grad_mask`` (parameter name → 0/1 tensor) freezes the entries outside it;
    ``reference`` (a frozen model the loss reads, e.g. NPO's) is moved to the trainee's device."""
    from transformers import set_seed

    from smfa.data import make_collator

    set_seed(run.seed)
    dataset = PairedDataset(forget_ds, retain_ds, run.seed)
    collator = PairedCollator(make_collator(run.vanilla.family, run.vanilla.processor))
    return _train(run, model, hp, dataset, collator, engine_trainer.paired_loss_fn(loss_fn), tag,
                  grad_mask=grad_mask, reference=reference)


def train_sft(run: Any, model: torch.nn.Module, hp: Any, dataset: Dataset, *, tag: str,
              reference: torch.nn.Module | None = None, callbacks: list[Any] | None = None) -> torch.nn.Module:
    """Plain cross-entropy fine-tuning (MFA, RA, IDK tuning) on the answer view; rows encoded with
    ``distill`` train towards ``reference`` (the frozen vanilla) instead. ``callbacks``: HF ``TrainerCallback``s
    (UNDO's stop rule, ``smfa.methods.robust``)."""
    from transformers import set_seed

    from smfa.data import make_collator

    if len(dataset) == 0:
        raise ConfigError(f"no examples to train the {tag} on (check --forget, --anchor-size and --target)")
    set_seed(run.seed)
    collator = make_collator(run.vanilla.family, run.vanilla.processor)
    return _train(run, model, hp, dataset, collator, engine_trainer.sft_loss_fn(reference), tag, reference=reference,
                  callbacks=callbacks)


def _train(run: Any, model: torch.nn.Module, hp: Any, dataset: Dataset, collator: Any, loss: Any, tag: str,
           **trainer_kwargs: Any) -> torch.nn.Module:
    """One run on the ``Trainer``: ``optimizer_steps`` steps, no checkpoint kept; the log stays in the run
    (``train_logs/TAG.jsonl``: e.g. whether the retaining anchor moved at all — SPEC's pitfall: a vanilla
    that already fits the anchor gives an anchor update unrelated to the forget update)."""
    checkpoints = run.work_dir / f"checkpoints-{tag}"
    args = training_arguments(TrainView(hp, run), checkpoints, steps=optimizer_steps(len(dataset), hp), save_steps=0,
                              placement=run.placement)
    trainer = engine_trainer.trainer_class()(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                             loss=loss, **trainer_kwargs)
    trainer.train()
    shutil.rmtree(checkpoints, ignore_errors=True)
    write_jsonl_atomic(run.work_dir / "train_logs" / f"{tag}.jsonl", trainer.state.log_history)
    return model


def optimizer_steps(n: int, hp: Any) -> int:
    """Optimiser steps for ``hp.epochs`` passes over ``n`` rows, as the HF Trainer counts them (``max_steps``):
    one step takes batch_size × grad_accum × processes rows, and an epoch's last short accumulation is a step;
    at least ``hp.min_steps`` (small data), at most ``hp.max_steps`` when set."""
    per_epoch = math.ceil(n / (hp.batch_size * hp.grad_accum * world_size()))
    steps = max(1, math.ceil(round(hp.epochs * per_epoch, 6)), int(getattr(hp, "min_steps", 0)))  # round: 1.1 × 10 is 11, not 12
    return min(steps, hp.max_steps) if hp.max_steps > 0 else steps


@dataclass
class TrainView:
    """Adapts a method's config to the fields ``training_arguments`` reads: the method's own training
    arguments, its ``autocast`` resolved against the run's placement, the run's seed and progress flag."""

    hp: Any  # smfa.methods.base.MethodConfig
    run: Any

    def __getattr__(self, name: str) -> Any:
        from smfa.models.placement import autocast_flags

        mapping = {"seed": self.run.seed, "progress": self.run.progress, "weight_decay": 0.0,
                   **autocast_flags(self.hp.autocast, self.run.placement)}
        if name in mapping:
            return mapping[name]
        return getattr(self.hp, name)


# ---- the trainee ------------------------------------------------------------------------------------
def prepare_trainable(run: Any, hp: Any, model: torch.nn.Module) -> torch.nn.Module:
    """LoRA on the language model, or full fine-tuning of the language model (vision tower frozen)."""
    from transformers import set_seed

    set_seed(run.seed)  # LoRA's A matrices are drawn here: seed them, not whatever state earlier work left
    family = run.vanilla.family
    if hp.lora:
        return apply_lora(model, family, hp.lora_r, hp.lora_alpha, hp.lora_dropout, hp.gradient_checkpointing)
    vision = tuple(family.vision_module_prefixes + family.projector_module_prefixes)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(vision))
    if hp.gradient_checkpointing:
        enable_checkpointing(model)
    return model


def shared_weights_view(model: torch.nn.Module) -> torch.nn.Module:
    """A structural copy of ``model`` whose parameters and buffers are ``model``'s own tensors: modules can be
    swapped in it (PEFT's LoRA layers) without touching ``model``, and it costs no weight memory. Refused under
    FSDP or ZeRO-3: every rank holds ``model`` (the vanilla) whole for evaluation and merging, so sharding the
    view would add shards beside it (FSDP) or partition the vanilla's own tensors (ZeRO-3), saving nothing."""
    sharding = parameter_sharding()
    if sharding is not None:
        raise ConfigError(f"LoRA unlearning trains a view sharing the vanilla's weights, which every rank holds "
                          f"whole: {sharding} would shard nothing (ZeRO-3 would partition the vanilla itself); "
                          "launch with configs/accelerate/ddp.yaml or zero2.yaml (a LoRA's optimiser state is small)")
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

