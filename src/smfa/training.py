"""The vanilla stage: fine-tune a model until it memorises the bench (``people="all"``), or train the oracle
that never saw the forget people (``people="retain"``). Uses the HF ``Trainer`` so that
``accelerate launch`` gives DDP/FSDP/DeepSpeed for free; checkpoints every N steps; ``resume`` continues a
killed run from its last checkpoint."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from smfa.errors import ConfigError, OutputError
from smfa.rundir import check_output_dir, write_json_atomic, write_jsonl_atomic, write_manifest


@dataclass
class FinetuneConfig:
    """How the vanilla (or oracle) model is trained. Defaults are the tiny preset's, measured on 2 CPU cores."""

    bench: str = ""  # bench directory (smfa bench build)
    model: str = "tiny"  # "tiny" (built-in, random init) or a HF model directory / hf:ORG/NAME (hub)
    out: str = ""  # run directory to write
    people: str = "all"  # "all" → vanilla; "retain" → oracle (never sees the forget people)
    forget: str = "15"  # with people=retain: which forget split the oracle leaves out (15 ⊇ 10 ⊇ 5)
    lora: bool = False  # LoRA on the language model instead of full fine-tuning (real checkpoints)
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    steps: int = 6000  # optimiser steps (tiny bench v2: 6,000 × 32 ≈ 12 epochs; docs/testbed.md)
    batch_size: int = 32  # per device
    grad_accum: int = 1
    lr: float = 1e-3  # tiny model from scratch; use ~2e-5 (full) / 1e-4 (LoRA) for real checkpoints
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    sampler: str = "random"  # random | length_buckets (similar lengths per batch, batches in random order; faster)
    augment: int = 0  # extra copies of every image row, each through its own fixed random view (data.augment_image)
    pretrained: bool = True  # tiny vanilla: use a shipped model trained on this bench with this recipe (smfa.pretrained)
    seed: int = 0
    save_steps: int = 500  # checkpoint interval (resume point)
    gradient_checkpointing: bool | None = None  # None: on for a real checkpoint (smfa.models.scale), off for the tiny model
    bf16: bool = False  # bf16 autocast (mixed precision) in the forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N (smfa.models.placement)
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32: the weights' dtype (auto: bf16 on a GPU, fp32 on the CPU)
    trust_remote_code: bool = False
    overwrite: bool = False
    resume: bool = False
    progress: bool = True


def staging_dir(out: Path) -> Path:
    """Where a run is written before it is renamed to ``out``; kept on failure so ``--resume`` finds it."""
    return out.parent / f".{out.name}.partial"


# The staged run's recipe, beside its checkpoints (removed with them when the run finishes).
RESUME_RECIPE = "recipe.json"


def resume_record(cfg: FinetuneConfig, bench_checksum: str, dtype: str) -> dict[str, Any]:
    """What must not change between a killed run and its resume: the recipe (:func:`smfa.pretrained.recipe_of`)
    but for ``save_steps`` (where resume points fall, not the weights), the bench's checksum, and the weights'
    resolved dtype (``--dtype auto`` is bf16 on a GPU and fp32 on the CPU)."""
    from smfa.pretrained import recipe_of

    recipe = {k: v for k, v in recipe_of(cfg).items() if k != "save_steps"}
    return json.loads(json.dumps({**recipe, "bench checksum": bench_checksum, "weights dtype": dtype}))


def resume_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name old -> new`` for every field of a :func:`resume_record` that differs."""
    return [f"{k} {recorded.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(recorded) | set(current))
            if recorded.get(k) != current.get(k)]


def trainable_summary(model: torch.nn.Module) -> dict[str, Any]:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": n_train, "total_parameters": n_all, "trainable_tensors": names}


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Gradient checkpointing, the one setting of every stage (LoRA or full fine-tuning). Non-reentrant: the
    reentrant variant drops the gradients of blocks whose inputs do not require grad (frozen embeddings), and
    under DDP with a PEFT model it fires a LoRA weight's gradient hook twice per step ("marked ready twice")."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


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
    """The HF ``TrainingArguments`` of every training stage; ``placement`` (a resolved ``--device``/``--dtype``,
    default the CPU in fp32) decides the device, ``cfg``'s ``bf16``/``fp16`` the mixed precision."""
    from smfa.models.placement import CPU_FP32
    from smfa.trainer_args import PlacedTrainingArguments

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
    """The HF ``Trainer`` with a resume that restores the model for every architecture.

    transformers saves some architectures (LLaVA among them) under legacy tensor names that the Trainer's
    own resume passes to ``load_state_dict(strict=False)`` unmapped — silently restoring nothing. Loading
    the checkpoint with ``from_pretrained`` maps the names; a strict load then fails loudly if anything is
    still missing.
    """
    from transformers import Trainer

    class ResumableTrainer(Trainer):
        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
            model = model if model is not None else self.model
            if hasattr(model, "peft_config"):  # adapter checkpoints use PEFT's own names
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            dtype = next(model.parameters()).dtype
            restored = type(model).from_pretrained(resume_from_checkpoint, dtype=dtype, local_files_only=True)
            model.load_state_dict(restored.state_dict(), strict=True)
            return None

        def _get_train_sampler(self, train_dataset=None):
            if sampler != "length_buckets":
                return super()._get_train_sampler(train_dataset)
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            lengths = [len(example["input_ids"]) for example in dataset]
            return LengthBucketSampler(lengths, self.args.train_batch_size, self.args.seed)

    return ResumableTrainer


def finetune(cfg: FinetuneConfig) -> Path:
    """Train and write the run directory ``cfg.out`` (model/, manifest.json, train_log.jsonl)."""
    from transformers import set_seed

    from smfa.bench import Bench
    from smfa.data import augmented_items, encode_items, make_collator, reference_items
    from smfa.models.families import family_for
    from smfa.models.loading import load_model
    from smfa.models.tiny import build_tiny

    if cfg.people not in ("all", "retain"):
        raise ConfigError(f"--people must be 'all' or 'retain', got {cfg.people!r}")
    if cfg.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {cfg.sampler!r}")
    if cfg.steps <= 0 or cfg.batch_size <= 0:
        raise ConfigError("--steps and --batch-size must be positive")
    if not isinstance(cfg.augment, int) or cfg.augment < 0:
        raise ConfigError(f"--augment must be an integer >= 0 (got {cfg.augment!r})")
    from smfa.models.placement import check_trainable, master_weights, place, resolve_placement

    placement = resolve_placement(cfg.device, cfg.dtype)
    check_trainable(placement, not cfg.lora, "smfa finetune without --lora")
    placement, mixed = master_weights(placement, not cfg.lora, cfg.dtype)
    if mixed:  # fp32 master weights, bf16 forward (recorded in the manifest's config)
        cfg = replace(cfg, bf16=True)
    out = Path(cfg.out).expanduser().resolve()
    stage = staging_dir(out)
    if stage.exists() and not (cfg.resume or cfg.overwrite):
        raise OutputError(f"an unfinished run of {out} exists in {stage}; pass --resume to continue it or --overwrite to start over")
    if stage.exists() and cfg.overwrite and not cfg.resume:
        shutil.rmtree(stage)
    check_output_dir(out, cfg.overwrite)

    bench = Bench.load(cfg.bench)
    record = resume_record(cfg, bench.checksum, placement.dtype_name)
    resuming = cfg.resume and any((stage / "checkpoints").glob("checkpoint-*"))
    if resuming:
        resuming = _check_resume(stage, record, cfg.overwrite, cfg.progress)
    if cfg.model == "tiny" and not resuming:  # a shipped vanilla, or a shipped oracle of a known split
        from smfa.pretrained import find_pretrained, install_pretrained

        shipped, why = find_pretrained(bench, cfg) if cfg.pretrained else (None, "--no-pretrained")
        if shipped is not None:
            if cfg.progress:
                print(f"using the {why}: no training needed (--no-pretrained trains it)", flush=True)
            return install_pretrained(shipped, bench, cfg, out)
        if cfg.progress:
            print(f"training the tiny vanilla: {why}", flush=True)
    rows = bench.training_rows(people=cfg.people, forget=cfg.forget if cfg.people == "retain" else None)
    set_seed(cfg.seed)
    if cfg.model == "tiny":
        model, processor = build_tiny(bench, seed=cfg.seed)
        model = place(model, placement)
        family = family_for(model)
    else:
        loaded = load_model(cfg.model, placement=placement, trust_remote_code=cfg.trust_remote_code)
        model, processor, family = loaded.model, loaded.processor, loaded.family
    if cfg.gradient_checkpointing is None:  # recorded resolved in the manifest
        from smfa.models.scale import is_real_scale

        cfg = replace(cfg, gradient_checkpointing=is_real_scale(model))
    if cfg.lora:
        model = apply_lora(model, family, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        enable_checkpointing(model)

    items = reference_items(rows)
    items += augmented_items(items, cfg.augment)
    dataset = encode_items(items, bench=bench, family=family, processor=processor, progress=cfg.progress)
    stage.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stage / "checkpoints" / RESUME_RECIPE, record)  # what a later --resume checks
    args = training_arguments(cfg, stage / "checkpoints", steps=cfg.steps, save_steps=cfg.save_steps,
                              placement=placement)
    trainer = resumable_trainer_class(cfg.sampler)(model=model, args=args, train_dataset=dataset,
                                        data_collator=make_collator(family, processor))
    trainer.train(resume_from_checkpoint=True if resuming else None)

    summary = trainable_summary(model)
    if cfg.lora:
        model = model.merge_and_unload()
    from smfa.distributed import full_state_dict

    weights = full_state_dict(model)  # FSDP / ZeRO-3: gathered from every rank (None: the module's own)
    if trainer.is_world_process_zero():  # one writer under DDP/FSDP
        model.save_pretrained(stage / "model", state_dict=weights, safe_serialization=True)
        processor.save_pretrained(stage / "model")
        write_jsonl_atomic(stage / "train_log.jsonl", trainer.state.log_history)
        world = int(getattr(trainer.args, "world_size", 1))
        write_manifest(
            stage,
            "finetune",
            asdict(cfg),
            seed=cfg.seed,
            bench={"path": str(bench.root), "checksum": bench.checksum, "preset": bench.meta.get("preset")},
            data={"rows": len(rows), "items": len(items), "people": cfg.people, "forget_left_out": cfg.forget if cfg.people == "retain" else None},
            family=family.name,
            trainable={k: v for k, v in summary.items() if k != "trainable_tensors"},
            trainable_modules=sorted({n.rsplit(".", 1)[0] for n in summary["trainable_tensors"]})[:2000],
            effective_batch_size=cfg.batch_size * cfg.grad_accum * world,
            world_size=world,
            placement=placement.describe(),
            final_loss=_last_loss(trainer.state.log_history),
        )
        shutil.rmtree(stage / "checkpoints", ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    return out


def _check_resume(stage: Path, record: dict[str, Any], overwrite: bool, progress: bool) -> bool:
    """Whether the checkpoints in ``stage`` may be resumed with ``record``'s recipe: yes when it is the one
    they were trained with; a different one is a one-line error, or with ``--overwrite`` a fresh start (the
    stage is removed). A stage from before recipes were recorded cannot be checked: it resumes, with a warning."""
    import sys

    from smfa.rundir import read_json

    path = stage / "checkpoints" / RESUME_RECIPE
    if not path.is_file():
        print(f"warning: {stage} records no recipe (written by an older smfa): resuming without checking that "
              "the options are the ones it was started with", file=sys.stderr)
        return True
    recorded = read_json(path, lambda msg: OutputError(f"{msg}: the unfinished run's record is corrupt; pass "
                                                        "--overwrite without --resume to start over"))
    changes = resume_changes(recorded, record)
    if not changes:
        return True
    if not overwrite:
        raise ConfigError(f"the unfinished run in {stage} was started with other options ({'; '.join(changes)}): "
                          "pass the same options to resume it, or --overwrite to start over")
    if progress:
        print(f"starting over: the unfinished run in {stage} was started with other options ({'; '.join(changes)})",
              flush=True)
    shutil.rmtree(stage)
    return False


def _last_loss(history: list[dict[str, Any]]) -> float | None:
    losses = [h["loss"] for h in history if "loss" in h]
    return float(losses[-1]) if losses else None


def read_train_log(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
