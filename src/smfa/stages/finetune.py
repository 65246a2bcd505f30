"""The vanilla stage: fine-tune a model until it memorises the bench (``people="all"``), or train the oracle
that never saw the forget people (``people="retain"``). Uses the training engine (:mod:`smfa.training`), so
that ``accelerate launch`` gives DDP/FSDP/DeepSpeed for free; checkpoints every N steps; ``resume`` continues a
killed run from its last checkpoint — only as it was started (:func:`resume_record`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError, OutputError
from smfa.rundir import check_output_dir, write_json_atomic, write_jsonl_atomic, write_manifest
from smfa.training.engine import apply_lora, enable_checkpointing, trainable_summary, training_arguments
from smfa.training.samplers import SAMPLERS


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


# Keys that a resume record written by an older smfa lacks (it resumes with a warning: :func:`_check_resume`).
WORLD_SIZE, START_WEIGHTS = "world size", "start weights"


def resume_record(cfg: FinetuneConfig, bench_checksum: str, dtype: str, world: int,
                  start_weights: str | None) -> dict[str, Any]:
    """What must not change between a killed run and its resume: the recipe (:func:`smfa.pretrained.recipe_of`)
    but for ``save_steps`` (where resume points fall, not the weights), the bench's checksum, the weights'
    resolved dtype (``--dtype auto`` is bf16 on a GPU and fp32 on the CPU), the number of processes and the
    digest of the weights the run started from (:func:`start_weights`).

    A resume that differs in any of them is refused in one line (``--overwrite`` starts over): a demanding
    user expects the resumed run to be the one it continues. Under another number of processes the batch per
    optimiser step, the data order and the optimiser state's sharding differ from the checkpoint's; from other
    starting weights (the same --model path holding another model) a LoRA run would add its checkpointed
    adapter to another base, and any run's record would name weights it did not start from."""
    from smfa.pretrained import recipe_of

    recipe = {k: v for k, v in recipe_of(cfg).items() if k != "save_steps"}
    return json.loads(json.dumps({**recipe, "bench checksum": bench_checksum, "weights dtype": dtype,
                                  WORLD_SIZE: world, START_WEIGHTS: start_weights}))


def start_weights(model: str) -> str | None:
    """The digest (:func:`smfa.models.digest.model_digest`) of the weights a run of ``--model model`` starts from:
    None for the built-in tiny model (its random init is the recipe's seed); for a hub id, its snapshot in the
    local hub cache (None before it is downloaded). Hashing is memoised per file within a process."""
    from smfa.models.digest import model_digest, weight_files, weight_hashes
    from smfa.models.loading import hub_id, model_dir_of

    if model == "tiny":
        return None
    repo = hub_id(model)
    if repo is None:
        path = model_dir_of(model)
    else:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(repo, "config.json")
        path = Path(config).parent if isinstance(config, str) else None
    return model_digest(weight_hashes(path)) if path is not None and weight_files(path) else None


def resume_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name old -> new`` for every field of a :func:`resume_record` that differs."""
    return [f"{k} {recorded.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(recorded) | set(current))
            if recorded.get(k) != current.get(k)]


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
    from smfa.models.memory_plan import check_fits, finetune_inputs

    check_fits(finetune_inputs(cfg, placement), placement.device)  # a planned peak over the GPU's memory: refused now
    out = Path(cfg.out).expanduser().resolve()
    stage = staging_dir(out)
    if stage.exists() and not (cfg.resume or cfg.overwrite):
        raise OutputError(f"an unfinished run of {out} exists in {stage}; pass --resume to continue it or --overwrite to start over")
    if stage.exists() and cfg.overwrite and not cfg.resume:
        shutil.rmtree(stage)
    check_output_dir(out, cfg.overwrite)

    bench = Bench.load(cfg.bench)
    from smfa.distributed import world_size

    record = resume_record(cfg, bench.checksum, placement.dtype_name, world_size(), start_weights(cfg.model))
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
    record[START_WEIGHTS] = start_weights(cfg.model)  # a hub model: in the local cache now
    write_json_atomic(stage / "checkpoints" / RESUME_RECIPE, record)  # what a later --resume checks
    args = training_arguments(cfg, stage / "checkpoints", steps=cfg.steps, save_steps=cfg.save_steps,
                              placement=placement)
    from smfa.training.trainer import trainer_class

    trainer = trainer_class()(model=model, args=args, train_dataset=dataset, sampler=cfg.sampler,
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
            start_weights=record[START_WEIGHTS],
            placement=placement.describe(),
            final_loss=_last_loss(trainer.state.log_history),
        )
        shutil.rmtree(stage / "checkpoints", ignore_errors=True)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    return out


def _check_resume(stage: Path, record: dict[str, Any], overwrite: bool, progress: bool) -> bool:
    """Whether the checkpoints in ``stage`` may be resumed with ``record`` (:func:`resume_record`): yes when it is
    the one they were trained with; a different one is a one-line error, or with ``--overwrite`` a fresh start
    (the stage is removed). What an older smfa did not record (no record at all, or no world size and starting
    weights) cannot be checked: it resumes, with a warning."""
    import sys

    from smfa.rundir import read_json

    path = stage / "checkpoints" / RESUME_RECIPE
    if not path.is_file():
        print(f"warning: {stage} records no recipe (written by an older smfa): resuming without checking that "
              "the options are the ones it was started with", file=sys.stderr)
        return True
    recorded = read_json(path, lambda msg: OutputError(f"{msg}: the unfinished run's record is corrupt; pass "
                                                        "--overwrite without --resume to start over"))
    unrecorded = [k for k in (WORLD_SIZE, START_WEIGHTS) if k not in recorded]
    if unrecorded:
        print(f"warning: {stage} records no {' and no '.join(unrecorded)} (written by an older smfa): resuming without "
              "checking them", file=sys.stderr)
        recorded = {**recorded, **{k: record[k] for k in unrecorded}}
    changes = resume_changes(recorded, record)
    if not changes:
        return True
    if not overwrite:
        raise ConfigError(f"the unfinished run in {stage} was started otherwise ({'; '.join(changes)}): resume it "
                          "as it was started (the same options, number of processes and starting weights), or pass "
                          "--overwrite to start over")
    if progress:
        print(f"starting over: the unfinished run in {stage} was started otherwise ({'; '.join(changes)})",
              flush=True)
    shutil.rmtree(stage)
    return False


def _last_loss(history: list[dict[str, Any]]) -> float | None:
    losses = [h["loss"] for h in history if "loss" in h]
    return float(losses[-1]) if losses else None

