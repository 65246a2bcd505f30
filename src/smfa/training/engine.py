"""The training engine every stage trains with: the HF ``TrainingArguments`` of every run, LoRA set-up,
gradient checkpointing (its one owner: on, off, whether on), and the vanilla fine-tune's entry to the one
``Trainer`` (:mod:`smfa.training.trainer`); the samplers are :mod:`smfa.training.samplers`."""

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
