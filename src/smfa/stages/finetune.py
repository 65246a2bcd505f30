"""The vanilla stage: fine-tune a model until it memorises the bench (``people="all"``), or train the oracle
that never saw the forget people (``people="retain"``). Uses the training engine (:mod:`smfa.training`), so
that ``accelerate launch`` gives DDP/FSDP/DeepSpeed for free; checkpoints every N steps; ``resume`` continues a
killed run from its last checkpoint — only as it was started (:func:`resume_record`).

``exclude`` leaves named people out of the training rows (what an exact deletion request retrains without,
:mod:`smfa.stages.exact`). ``slices`` S > 1 trains as SISA's slicing does (Bourtoule et al., arXiv 1912.03817):
the known people are cut into S ordered slices (:func:`slice_layout`); stage i trains on the rows of slices
1..i, starting from stage i−1's weights, and its weights are kept in ``slices/slice-i`` so that an exact request
retrains only from the earliest slice that holds one of its people (:class:`SliceStart`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError, OutputError
from smfa.rundir import check_output_dir, file_digest, write_json_atomic, write_jsonl_atomic, write_manifest
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
    exclude: str = ""  # person ids never trained on (a comma list or a file, one id a line): an exact deletion's retrain
    slices: int = 1  # SISA slices of the people (1: one run); the steps are spread over the stages (slice_steps)
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


# In a run directory: the ids of the rows it trained on, one a line (what an exact request's audit shows).
TRAINING_ROWS = "training_rows.txt"
# In a sliced run: the weights after each stage (slices/slice-1 … slice-S), the restart points of exact requests.
SLICES_DIR = "slices"


def excluded_people(cfg: FinetuneConfig, bench: Any) -> frozenset[str]:
    """The people of ``cfg.exclude``; an id that is not a known person of the bench is a one-line error."""
    if not cfg.exclude:
        return frozenset()
    from smfa.bench.forget_set import read_id_list

    ids = read_id_list(cfg.exclude)
    unknown = sorted(set(ids) - bench.known_people())
    if unknown:
        raise ConfigError(f"--exclude names {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}, not a known "
                          "person of the bench (people.jsonl, role known)")
    return frozenset(ids)


@dataclass(frozen=True)
class SliceLayout:
    """Who is in which slice: ``people[i]`` the person ids of slice i+1; a row without a person (general VQA)
    goes to ``row_slice[row id]``. Depends on the bench's known people, the training rows and the seed only —
    never on ``exclude`` — so a run without some people keeps every other person's slice."""

    people: tuple[tuple[str, ...], ...]
    row_slice: dict[str, int]

    @cached_property
    def person_slice(self) -> dict[str, int]:
        """Each person's slice (0-based)."""
        return {p: i for i, group in enumerate(self.people) for p in group}

    def slice_of(self, row: Any) -> int:
        return self.person_slice[row.person_id] if row.person_id is not None else self.row_slice[row.id]


def slice_layout(bench: Any, slices: int, seed: int) -> SliceLayout:
    """The known people in a seeded random order cut into ``slices`` contiguous groups (sizes differ by at most
    one), and the rows without a person likewise, so that every stage's rows mix kinds as the whole set does."""
    import random

    def cut(ids: list[str]) -> list[list[str]]:
        random.Random(seed).shuffle(ids)
        n, extra = divmod(len(ids), slices)
        bounds = [i * n + min(i, extra) for i in range(slices + 1)]
        return [ids[bounds[i]:bounds[i + 1]] for i in range(slices)]

    people = cut(sorted(bench.known_people()))
    if any(not group for group in people):
        raise ConfigError(f"--slices {slices} is more than the bench's {len(bench.known_people())} known people")
    rows = cut(sorted(q.id for q in bench.training_rows() if q.person_id is None))
    return SliceLayout(tuple(tuple(sorted(g)) for g in people), {r: i for i, g in enumerate(rows) for r in g})


def slice_steps(rows_per_slice: list[int], steps: int) -> list[int]:
    """Optimiser steps of each stage, summing to ``steps`` (the unsliced recipe's): stage i gets a share
    proportional to the rows it trains on (slices 1..i), so every stage makes the same number of passes over
    its data — SISA's schedule. Largest-remainder rounding; at least one step a stage."""
    cumulative = [sum(rows_per_slice[:i + 1]) for i in range(len(rows_per_slice))]
    if steps < len(cumulative):
        raise ConfigError(f"--steps {steps} is fewer than --slices {len(cumulative)}: every slice needs a step")
    exact = [steps * c / sum(cumulative) for c in cumulative]
    out = [max(1, int(x)) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: (int(exact[i]) - exact[i], i))[:max(0, steps - sum(out))]:
        out[i] += 1
    while sum(out) > steps:  # the floor of one step took more than the share of a small stage
        out[out.index(max(out))] -= 1
    return out


@dataclass(frozen=True)
class SliceStart:
    """Where a sliced run starts when it is an exact request's retrain: at stage ``index`` (0-based), from the
    weights in ``base``'s ``slices/slice-{index}`` (the stage before; none for index 0), whose earlier
    checkpoints are carried over unchanged (their rows hold none of the newly excluded people)."""

    index: int
    base: Path


def finetune(cfg: FinetuneConfig, start: SliceStart | None = None) -> Path:
    """Train and write the run directory ``cfg.out`` (model/, manifest.json, train_log.jsonl, training_rows.txt;
    with ``slices`` > 1 also slices/). ``start``: a sliced run that starts at a later stage (an exact request)."""
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
    if not isinstance(cfg.slices, int) or cfg.slices < 1:
        raise ConfigError(f"--slices must be an integer >= 1 (got {cfg.slices!r})")
    if cfg.slices > 1 and cfg.resume:
        raise ConfigError("--resume is not supported with --slices: start the sliced run over with --overwrite")
    if start is not None and cfg.slices == 1:
        raise ConfigError("a run that starts at a later slice needs --slices > 1")
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

    if cfg.slices > 1 and world_size() > 1:
        raise ConfigError("--slices trains on one process: run it without accelerate launch")
    excluded = excluded_people(cfg, bench)
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
    rows = [q for q in rows if q.person_id not in excluded]
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
    from smfa.training.trainer import trainer_class

    collator = make_collator(family, processor)
    stage.mkdir(parents=True, exist_ok=True)
    sliced: dict[str, Any] | None = None
    if cfg.slices > 1:
        trainer, sliced = _train_slices(cfg, bench, [it.row for it in items], dataset, model, stage, start, collator,
                                        placement)
    else:
        record[START_WEIGHTS] = start_weights(cfg.model)  # a hub model: in the local cache now
        write_json_atomic(stage / "checkpoints" / RESUME_RECIPE, record)  # what a later --resume checks
        args = training_arguments(cfg, stage / "checkpoints", steps=cfg.steps, save_steps=cfg.save_steps,
                                  placement=placement)
        trainer = trainer_class()(model=model, args=args, train_dataset=dataset, sampler=cfg.sampler,
                                  data_collator=collator)
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
        from smfa.rundir import write_text_atomic

        write_text_atomic(stage / TRAINING_ROWS, "".join(f"{q.id}\n" for q in rows))
        world = int(getattr(trainer.args, "world_size", 1))
        write_manifest(
            stage,
            "finetune",
            asdict(cfg),
            seed=cfg.seed,
            bench={"path": str(bench.root), "checksum": bench.checksum, "preset": bench.meta.get("preset")},
            data={"rows": len(rows), "items": len(items), "people": cfg.people,
                  "forget_left_out": cfg.forget if cfg.people == "retain" else None,
                  "excluded": sorted(excluded), "rows_sha256": file_digest(stage / TRAINING_ROWS)},
            slices=sliced,
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


def _train_slices(cfg: FinetuneConfig, bench: Any, item_rows: list[Any], dataset: Any, model: Any, stage: Path,
                  start: SliceStart | None, collator: Any, placement: Any) -> tuple[Any, dict[str, Any]]:
    """SISA's incremental training: stage i trains ``model`` for ``slice_steps``'s share on the items (of
    ``dataset``, encoded once; ``item_rows`` their rows) of slices 1..i — a fresh optimiser and learning-rate
    schedule each stage, as a separate run resumed from the weights — then saves its weights to
    ``slices/slice-{i+1}``. With ``start``, the stages before ``start.index`` are ``start.base``'s (their
    checkpoints linked over) and training resumes from its checkpoint of the stage before. Returns the last
    stage's trainer (its log is every stage's, each entry with its ``slice``) and the record of the layout."""
    from torch.utils.data import Subset

    from smfa.training.trainer import trainer_class

    layout = slice_layout(bench, cfg.slices, cfg.seed)
    all_rows = bench.training_rows(people=cfg.people, forget=cfg.forget if cfg.people == "retain" else None)
    per_slice = [sum(1 for q in all_rows if layout.slice_of(q) == i) for i in range(cfg.slices)]
    steps = slice_steps(per_slice, cfg.steps)  # of the recipe's rows, not of this run's: a retrain keeps them
    item_slice = [layout.slice_of(row) for row in item_rows]
    first = 0
    if start is not None:
        first = start.index
        for i in range(1, first + 1):  # the weights after stages 1..first: the base's, unchanged
            _link_tree(start.base / SLICES_DIR / f"slice-{i}", stage / SLICES_DIR / f"slice-{i}")
        if first > 0:
            _load_slice(model, stage / SLICES_DIR / f"slice-{first}")
    log: list[dict[str, Any]] = []
    trainer = None
    for i in range(first, cfg.slices):
        subset = Subset(dataset, [k for k, s in enumerate(item_slice) if s <= i])
        args = training_arguments(cfg, stage / "checkpoints" / f"slice-{i + 1}", steps=steps[i], save_steps=0,
                                  placement=placement)
        trainer = trainer_class()(model=model, args=args, train_dataset=subset, sampler=cfg.sampler,
                                  data_collator=collator)
        trainer.train()
        log += [{**entry, "slice": i + 1} for entry in trainer.state.log_history]
        model.save_pretrained(stage / SLICES_DIR / f"slice-{i + 1}", safe_serialization=True)
    trainer.state.log_history = log
    record = {"count": cfg.slices, "seed": cfg.seed, "people": [list(g) for g in layout.people],
              "rows": per_slice, "steps": steps, "started_at": first + 1,
              "steps_trained": sum(steps[first:]),
              "schedule": "stage i trains on slices 1..i for a share of --steps proportional to its rows"}
    return trainer, record


def _link_tree(src: Path, dest: Path) -> None:
    """Copy the checkpoint ``src`` to ``dest`` as hard links where the file system allows (they are never
    written again), else as copies."""
    import os

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if not src.is_dir():
        raise ConfigError(f"{src} is missing: the sliced run's checkpoints are incomplete")
    shutil.copytree(src, dest, copy_function=link)


def _load_slice(model: Any, checkpoint: Path) -> None:
    """Load a stage's saved weights into ``model`` as built for training (a LoRA adapter into the PEFT model,
    full weights through ``from_pretrained``'s name mapping, then strictly)."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
        return
    dtype = next(model.parameters()).dtype
    restored = type(model).from_pretrained(checkpoint, dtype=dtype, local_files_only=True)
    model.load_state_dict(restored.state_dict(), strict=True)


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

