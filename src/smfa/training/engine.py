"""The training engine every stage trains with: the HF ``TrainingArguments`` of every run, LoRA set-up,
gradient checkpointing (its one owner: on, off, whether on), the length-bucket sampler, and the vanilla
fine-tune's entry to the one ``Trainer`` (:mod:`smfa.training.trainer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from smfa.errors import ConfigError


def trainable_summary(model: torch.nn.Module) -> dict[str, Any]:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": n_train, "total_parameters": n_all, "trainable_tensors": names}


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Gradient checkpointing, the one setting of every stage (LoRA or full fine-tuning). Non-reentrant: the
    reentrant variant drops the gradients of blocks whose inputs do not require grad (frozen embeddings), and
    under DDP with a PEFT model it fires a LoRA weight's gradient hook twice per step ("marked ready twice").
    transformers 5 names the method ``activation_checkpointing_enable``; 4.x has the old name."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def disable_checkpointing(model: torch.nn.Module) -> None:
    """Undo :func:`enable_checkpointing`, including the input-embedding hook that enabling registered."""
    (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()
    model.disable_input_require_grads()


def checkpointing_on(model: torch.nn.Module) -> bool:
    """Whether any module of ``model`` recomputes its activations in the backward pass."""
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def apply_lora(model: torch.nn.Module, family: Any, r: int, alpha: int, dropout: float, gradient_checkpointing: bool = False):
    """Wrap ``model`` with a PEFT LoRA on the language model's linear layers only."""
    from peft import LoraConfig, get_peft_model

    targets = family.lora_targets(model)
    if not targets:
        raise ConfigError(f"no LoRA target found for family {family.name} (regex {family.lora_target_regex()})")
    if gradient_checkpointing:
        enable_checkpointing(model)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=family.lora_target_regex(), bias="none")
    return get_peft_model(model, config)


def training_arguments(cfg: Any, output_dir: Path, *, steps: int, save_steps: int, placement: Any = None,
                       **extra: Any):
    """The HF ``TrainingArguments`` of every training run; ``placement`` (a resolved ``--device``/``--dtype``,
    default the CPU in fp32) decides the device, ``cfg``'s ``bf16``/``fp16`` the mixed precision."""
    from smfa.models.placement import CPU_FP32
    from smfa.training.arguments import PlacedTrainingArguments

    placement = placement or CPU_FP32
    return PlacedTrainingArguments(
        placement_device=str(placement.device),
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        max_steps=steps,
        lr_scheduler_type="cosine",
        warmup_steps=int(round(getattr(cfg, "warmup_ratio", 0.0) * steps)),
        weight_decay=getattr(cfg, "weight_decay", 0.0),
        logging_steps=max(1, min(50, steps // 20)),
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=max(1, save_steps),
        save_total_limit=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        bf16=getattr(cfg, "bf16", False),
        fp16=getattr(cfg, "fp16", False),
        use_cpu=placement.device.type == "cpu",
        disable_tqdm=not getattr(cfg, "progress", True),
        save_only_model=False,
        **extra,
    )


SAMPLERS = ("random", "length_buckets")


def length_bucket_order(lengths: list[int], batch_size: int, seed: int, epoch: int, window: int = 50) -> list[int]:
    """One epoch's example order for ``sampler="length_buckets"``: a seeded shuffle, cut into windows of
    ``window`` batches, each window sorted by length and cut into batches, and then **the batches shuffled**
    across the whole epoch (leftover examples that fill no batch go last). Each batch holds examples of
    similar length (less padding) while the order of batches, and so of question kinds, stays random —
    HF's ``group_by_length`` serves each window longest-first, which on the tiny bench (lengths follow the
    question kind) cost the vanilla 40 points of image memory. Deterministic in (seed, epoch)."""
    if batch_size < 1 or window < 1:
        raise ConfigError(f"length buckets need batch_size >= 1 and window >= 1 (got {batch_size}, {window})")
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    span = window * batch_size
    batches: list[list[int]] = []
    rest: list[int] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        for j in range(0, len(chunk), batch_size):
            (batches.append if j + batch_size <= len(chunk) else rest.extend)(chunk[j:j + batch_size])
    shuffled = torch.randperm(len(batches), generator=g).tolist()
    return [i for b in shuffled for i in batches[b]] + rest


class LengthBucketSampler(torch.utils.data.Sampler):
    """Yields :func:`length_bucket_order`; the ``Trainer`` calls ``set_epoch`` before every epoch (resume too)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(length_bucket_order(self.lengths, self.batch_size, self.seed, self.epoch))


def resumable_trainer_class(sampler: str = "random"):
    """The one ``Trainer`` (:func:`smfa.training.trainer.trainer_class`) with ``sampler`` set: the vanilla
    fine-tune's entry point (its own loss, a resume that restores every architecture)."""
    import functools

    from smfa.training.trainer import trainer_class

    return functools.partial(trainer_class(), sampler=sampler)
