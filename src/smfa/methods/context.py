"""What an unlearning method may see and work with: the data (forget set, retain anchor, reference rows) and
the run's context (bench, vanilla, seed, staging directory, placement, shared adapters and caches)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smfa.models.placement import CPU_FP32, Placement
from smfa.training.runs import shared_weights_view


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

    def release_reference(self) -> None:
        """Drop the chain's root (:attr:`reference`) once the training that reads it is over, so that the
        merge's copy is the second model in memory, not the third."""
        if self.reference is not None:
            import gc

            self.reference = None
            gc.collect()  # the Trainer that held it may sit in reference cycles

    def fresh_model(self) -> torch.nn.Module:
        """A copy of the vanilla model with weights of its own (full fine-tuning, a merge target): the
        vanilla stays intact for reference and merging. At 7B this is the second full-size model."""
        return copy.deepcopy(self.vanilla.model)

    def trainee(self, hp: Any) -> torch.nn.Module:
        """The model a method trains: with LoRA, a view of the vanilla that shares its (frozen) weights —
        the adapters are injected into the view's own modules, no weight is copied and the vanilla's are
        never written (:func:`smfa.training.runs.finish` merges into a copy); with full fine-tuning, :meth:`fresh_model`."""
        return shared_weights_view(self.vanilla.model) if hp.lora else self.fresh_model()

    def encode(self, items: list[Any], desc: str = "encoding"):
        from smfa.data import encode_items

        return encode_items(items, bench=self.bench, family=self.vanilla.family, processor=self.vanilla.processor,
                            desc=desc, progress=self.progress)


def retain_dataset(ctx: UnlearnContext):
    """The encoded retain data (anchor + any self-labelled reference rows) for methods with a retain term."""
    from smfa.data import reference_items

    return ctx.encode(reference_items(ctx.data.retain_rows), desc="encoding retain")


def forget_dataset(ctx: UnlearnContext):
    """The encoded forget set with its true answers (the ones gradient ascent pushes down)."""
    from smfa.data import reference_items

    return ctx.encode(reference_items(ctx.data.forget_rows), desc="encoding forget")
