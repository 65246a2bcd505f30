"""SMFA (Sculpted Memory Forgetting Adapter, arXiv 2511.20196).

1. MFA: LoRA fine-tune with plain cross-entropy on ``D_f^idk ∪ D_r^few`` (forget answers replaced by
   refusals drawn per example from a pool of ≥ 1,000) → ΔW_f.
2. RA: a separate LoRA fine-tune on ``D_r^few`` only → ΔW_a (same targets).
3. Sculpt ΔW_f against ΔW_a element-wise (``smfa.sculpt.sculpt_delta``) and merge ``W = W_o + ΔW'_f``
   module by module. Both adapters are kept in the run (``adapters/``) so k can be re-swept without
   retraining (``smfa sculpt RUN --k ...``).
``dual``: one MFA on the image view and one on the text-only view, each sculpted against the same RA with
its own k, averaged (the variant of the authors' code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smfa.bench.schema import IMAGE_MEMORY, TEXT_MEMORY
from smfa.errors import ConfigError
from smfa.sculpt.mask import MODES
from smfa.distributed import world_size
from smfa.methods.base import Method, MethodConfig, register_method
from smfa.methods.context import UnlearnContext
from smfa.training.runs import prepare_trainable, train_sft

FORGET_ADAPTER = "forget"  # adapters/forget: the MFA (image view in dual mode)
FORGET_TEXT_ADAPTER = "forget_text"  # adapters/forget_text: the text-view MFA (dual mode only)
ANCHOR_ADAPTER = "anchor"  # adapters/anchor: the RA


REFERENCE_LOSSES = ("ce", "kl")


def check_mfa_data_fields(cfg: MethodConfig) -> None:
    """The checks of the MFA's data fields (``anchor_repeat``, ``forget_repeat``, ``forget_augment``,
    ``forget_rephrase``, ``retain_augment``, ``retain_rephrase``, ``reference_loss``, ``decoy_refusal_floor``, ``look_decoys``), shared by SMFA/TIES and
    IDK, whose MFA is the same."""
    import math

    name = type(cfg).__name__
    for field_name in ("forget_augment", "forget_rephrase", "retain_augment", "retain_rephrase", "look_decoys"):
        copies = getattr(cfg, field_name)
        if not isinstance(copies, int) or copies < 0:
            raise ConfigError(f"{name}: {field_name} must be an integer >= 0, got {copies!r}")
    floor, look = cfg.decoy_refusal_floor, cfg.look_decoys
    if not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor >= 0):
        raise ConfigError(f"{name}: decoy_refusal_floor must be a finite number >= 0, got {floor!r}")
    if floor and not (cfg.decoys or look):
        raise ConfigError(f"{name}: decoy_refusal_floor {floor} needs decoys to hold (set decoys or look_decoys > 0)")
    if look and not floor:
        raise ConfigError(f"{name}: look_decoys {look} are trained through decoy_refusal_floor alone (they have no "
                          "answer); set decoy_refusal_floor > 0")
    if cfg.reference_loss not in REFERENCE_LOSSES:
        raise ConfigError(f"{name}: reference_loss must be one of {', '.join(REFERENCE_LOSSES)}, got {cfg.reference_loss!r}")
    for field_name in ("anchor_repeat", "forget_repeat"):
        value = getattr(cfg, field_name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: {field_name} must be an integer >= 1, got {value!r}")


@dataclass
class AdapterPairConfig(MethodConfig):
    """How the two adapters are trained: the MFA (the ``MethodConfig`` fields + ``anchor_repeat``) and the RA.
    SMFA and TIES train the same pair and differ only in how they merge it."""

    anchor_epochs: float = 20.0  # RA epochs over D_r^few (few examples: more passes than the MFA)
    anchor_repeat: int = 1  # D_r^few repeated this many times in the MFA's data (balances a large forget set)
    forget_repeat: int = 1  # refusal-labelled forget rows repeated (keeps their share when reference rows are added)
    forget_augment: int = 0  # extra refusal copies of each forget photo row, seen through a random view (data.augment_image)
    forget_rephrase: int = 0  # extra refusal copies of each forget memory row asked with other training templates
    retain_augment: int = 0  # extra copies of each retain photo row (anchor + reference) through a random view, same answer
    retain_rephrase: int = 0  # extra copies of each retain memory row asked with other training templates, same answer
    reference_loss: str = "ce"  # the MFA on self-labelled reference rows: ce (their greedy answers) | kl (KL to the vanilla)
    anchor_reference: bool = True  # the RA trains on the reference rows too (False: on D_r^few only, as without a budget)
    # > 0 (with decoys or look_decoys): a refusal to each decoy (smfa.decoys) pays relu(floor − NLL) in the MFA
    # (smfa.losses.floor_loss) — refusing is tied to the person, not to a word of their name or their looks; 0 = off.
    decoy_refusal_floor: float = 0.0
    # With decoy_refusal_floor: this many rendered look-alikes of each forgotten person (smfa.decoys.look_decoys,
    # 5 of 7 visible features; built-in benches), asked the person's photo questions, whose refusals pay the floor.
    look_decoys: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.anchor_epochs > 0:
            raise ConfigError(f"{type(self).__name__}: anchor_epochs must be > 0, got {self.anchor_epochs!r}")
        check_mfa_data_fields(self)


@dataclass
class SMFAConfig(AdapterPairConfig):
    k: float = 5.0  # sculpt strength: larger k ⇒ fewer entries masked ⇒ stronger forgetting; k = 0 masks every conflict
    mode: str = "both"  # none (= IDK tuning) | conflict | magnitude | both
    dual: bool = False  # two MFAs (image view, text view) sculpted with k and k_text, averaged
    k_text: float = 10.0  # k of the text-view MFA in dual mode (authors: image 5, text 10)
    # In the MFA (smfa.losses.floor_loss): > 0 — the forget rows' true answers also pay relu(floor − NLL), the
    # floor being the loss level of never-seen people (the vanilla's mia loss_nonmembers); 0 = off.
    calibrate_floor: float = 0.0
    # After the merge (smfa.methods.robust, UNDO, docs/undo.md): none | distill — a copy of the merged model shrunk
    # and perturbed, (1 − α)·θ + α·β·Xavier (α robust_noise, β robust_beta: the paper's default 0.1; norms and
    # biases only shrunk), then distilled from the merged model at robust_lr (retain rows: its distribution;
    # forget rows: hard refusals) until its score on a held-out robust_holdout share of the retain rows is within
    # robust_tolerance (5 %, the paper's) of the merged model's, checked every robust_check_every steps, at most
    # robust_max_steps steps; robust_stop: accuracy (the rows answered exactly, greedy) | nll (the paper's rule).
    robust: str = "none"
    robust_noise: float = 0.3
    robust_beta: float = 0.1
    robust_lr: float = 1e-3
    robust_max_steps: int = 2000
    robust_check_every: int = 50
    robust_tolerance: float = 0.05
    robust_stop: str = "accuracy"
    robust_holdout: float = 0.1

    def __post_init__(self) -> None:
        import math

        from smfa.methods.robust import check_robust_fields

        super().__post_init__()
        check_robust_fields(self)
        for name in ("k", "k_text"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"SMFA {name} must be a finite number >= 0, got {value!r} (k = 0 masks every conflicting entry)")
        if self.mode not in MODES:
            raise ConfigError(f"SMFA mode must be one of {', '.join(MODES)}, got {self.mode!r}")


# MethodConfig fields added after cache keys were in use, left out of the keys at the value that changes nothing.
KEY_NEUTRAL_AT = {"decoys": 0}


def common_hp(hp: MethodConfig) -> dict[str, Any]:
    """The hyper-parameters every method has (``MethodConfig``'s fields) as a cache key reads them: a field of
    :data:`KEY_NEUTRAL_AT` at its neutral value is left out, so keys made before it existed still match."""
    from dataclasses import asdict, fields

    values = asdict(hp)
    return {f.name: values[f.name] for f in fields(MethodConfig)
            if f.name not in KEY_NEUTRAL_AT or values[f.name] != KEY_NEUTRAL_AT[f.name]}


def mfa_key(ctx: UnlearnContext, hp: MethodConfig, forget_rows: list) -> str:
    """A digest of everything that decides the MFA's weights: the vanilla, the data, the seed and the
    hyper-parameters every method has (not SMFA's sculpting ones), so IDK and SMFA share one MFA."""
    import hashlib
    import json

    common = common_hp(hp)
    blob = {"vanilla": ctx.model_digest or str(ctx.vanilla.source), "forget": [r.id for r in forget_rows],
            "anchor": [r.id for r in ctx.data.anchor_rows], "seed": ctx.seed, "target": ctx.target,
            "anchor_repeat": int(getattr(hp, "anchor_repeat", 1)), "hp": common}
    if ctx.placement.dtype != torch.float32:  # an MFA trained in half precision is another MFA (fp32 keys unchanged)
        blob["dtype"] = ctx.placement.dtype_name
    if ctx.data.reference_rows:  # older keys unchanged when there are none
        blob["reference"] = [(r.id, r.answer) for r in ctx.data.reference_rows]
        blob["forget_repeat"] = int(getattr(hp, "forget_repeat", 1))
    for name in ("forget_augment", "forget_rephrase", "retain_augment", "retain_rephrase", "look_decoys"):  # older keys unchanged at 0
        if int(getattr(hp, name, 0)):
            blob[name] = int(getattr(hp, name))
    for name in ("calibrate_floor", "decoy_refusal_floor"):  # older keys unchanged at 0
        if float(getattr(hp, name, 0.0)):
            blob[name] = float(getattr(hp, name))
    if getattr(hp, "reference_loss", "ce") != "ce" and ctx.data.reference_rows:
        blob["reference_loss"] = hp.reference_loss
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def train_mfa(ctx: UnlearnContext, hp: MethodConfig, forget_rows: list, tag: str) -> torch.nn.Module:
    """The memory forgetting adapter: cross-entropy on refusal-labelled forget rows ∪ the retain anchor.

    With ``ctx.shared_dir`` (``smfa compare``), an MFA trained by an earlier run with the same key is
    loaded instead of retrained (IDK tuning is SMFA's MFA unsculpted), and a new one is stored there."""
    import json
    import time

    from smfa.data import augmented_items, refusal_items, reference_items
    from smfa.rundir import atomic_run_dir, write_json_atomic

    repeat = int(getattr(hp, "anchor_repeat", 1))
    if repeat < 1:
        raise ConfigError(f"anchor_repeat must be >= 1, got {repeat}")
    shared = Path(ctx.shared_dir) / f"mfa-{mfa_key(ctx, hp, forget_rows)}" if ctx.shared_dir and hp.lora else None
    if shared is not None and (shared / "train.json").is_file():
        from peft import PeftModel

        ctx.reused_train_s += float(json.loads((shared / "train.json").read_text())["train_s"])
        return PeftModel.from_pretrained(ctx.trainee(hp), shared, is_trainable=False)
    forget_repeat = int(getattr(hp, "forget_repeat", 1))
    refusals = refusal_items(forget_rows * forget_repeat, seed=ctx.seed)
    refusals += augmented_items(refusal_items(forget_rows, seed=ctx.seed + 1), int(getattr(hp, "forget_augment", 0)))
    refusals += refusal_items(rephrased(ctx, forget_rows, int(getattr(hp, "forget_rephrase", 0))), seed=ctx.seed + 3)
    distill = getattr(hp, "reference_loss", "ce") == "kl"
    anchor, reference = reference_items(ctx.data.anchor_rows), reference_items(ctx.data.reference_rows, distill)
    items = refusals + anchor * repeat + reference
    # The retain side seen through the same kind of views as the forget side: the MFA learns "refuse this
    # person's photos", not "refuse photos that look shifted" (augmented_items keeps each item's label and mode).
    items += augmented_items(anchor + reference, int(getattr(hp, "retain_augment", 0)))
    copies = int(getattr(hp, "retain_rephrase", 0))
    items += reference_items(rephrased(ctx, ctx.data.anchor_rows, copies))
    items += reference_items(rephrased(ctx, ctx.data.reference_rows, copies), distill)
    if float(getattr(hp, "calibrate_floor", 0.0)):
        from smfa.methods.robust import floor_items

        items += floor_items(forget_rows, hp.calibrate_floor)
    floor = float(getattr(hp, "decoy_refusal_floor", 0.0))
    items += decoy_refusal_items(ctx.data.reference_rows, floor, ctx.seed)
    if int(getattr(hp, "look_decoys", 0)):
        from smfa.decoys import look_decoys

        people = {r.person_id for r in forget_rows if r.person_id}
        looks = look_decoys(ctx.bench, people, hp.look_decoys, ctx.seed, Path(ctx.work_dir) / "look-decoys")
        items += decoy_refusal_items(looks, floor, ctx.seed + 1)
    t0 = time.perf_counter()
    model = prepare_trainable(ctx, hp, ctx.trainee(hp))
    model = train_sft(ctx, model, hp, ctx.encode(items, desc=f"encoding {tag}"), tag=tag,
                      reference=ctx.vanilla.model if distill and ctx.data.reference_rows else None)
    if shared is not None:  # the main process stores it, staged and renamed (never half-written); the others wait
        from smfa.distributed import adapter_state_dict, wait_for_main

        weights = adapter_state_dict(model)  # sharded: the adapter alone, gathered from every rank
        with wait_for_main() as main:
            if main:
                with atomic_run_dir(shared, overwrite=True) as stage:
                    model.save_pretrained(stage, state_dict=weights)
                    write_json_atomic(stage / "train.json", {"train_s": round(time.perf_counter() - t0, 2), "tag": tag})
    return model


def decoy_refusal_items(rows: list, floor: float, seed: int) -> list:
    """The decoys among ``rows`` (``meta[DECOY_OF]``: :mod:`smfa.decoys`), each with a refusal (drawn per row)
    whose mean NLL is lifted up to ``floor`` (:func:`smfa.losses.floor_loss`): the MFA is penalised for refusing
    a made-up person who only shares a word of a forgotten person's name or most of their looks. None at
    ``floor`` 0."""
    from dataclasses import replace

    from smfa.data import DECOY_OF, refusal_items

    if floor <= 0:
        return []
    decoys = [r for r in rows if r.meta.get(DECOY_OF)]
    return [replace(item, floor=floor) for item in refusal_items(decoys, seed=seed + 2)]


def rephrased(ctx: UnlearnContext, rows: list, copies: int) -> list:
    """Memory ``rows`` asked ``copies`` more ways with the bench's other training templates
    (``smfa.bench.questions.other_phrasings``), each keeping its row's answer (for reference rows: the
    vanilla's; forget rows are given refusals by the caller). Asking the kept people in more ways teaches the
    MFA to answer them however they are asked, not only in the reference rows' phrasings; asking the forgotten
    ones in more ways, to refuse them however they are asked."""
    from smfa.bench.questions import other_phrasings

    people = ctx.bench.people
    return [q for r in rows if copies > 0 and r.person_id in people for q in other_phrasings(r, people[r.person_id].name, copies)]


def train_anchor(ctx: UnlearnContext, hp: AdapterPairConfig) -> torch.nn.Module:
    from smfa.data import reference_items

    anchor_hp = ra_config(hp)
    model = prepare_trainable(ctx, anchor_hp, ctx.trainee(anchor_hp))
    return train_sft(ctx, model, anchor_hp, ctx.encode(reference_items(anchor_rows(ctx, hp)), desc="encoding anchor"), tag="anchor")


def ra_config(hp: AdapterPairConfig) -> AdapterPairConfig:
    """The RA's training settings: ``anchor_epochs`` passes and no step floor (the floor and a request's stronger
    attempts are the MFA's; the RA, which depends on neither, is reused across them)."""
    from dataclasses import replace

    return replace(hp, epochs=hp.anchor_epochs, min_steps=0)


def anchor_rows(ctx: UnlearnContext, hp: AdapterPairConfig) -> list:
    """What the RA trains on: the retain rows (D_r^few + any reference rows), or D_r^few alone."""
    return ctx.data.retain_rows if hp.anchor_reference else list(ctx.data.anchor_rows)


def anchor_key(ctx: UnlearnContext, hp: AdapterPairConfig) -> str | None:
    """A digest of everything that decides the RA's weights — the vanilla's weight files, the retain rows,
    the seed, the training hyper-parameters and the numeric libraries — or None when the weights are unknown."""
    import hashlib
    import json

    from smfa.rundir import package_versions

    if not ctx.model_digest:
        return None
    blob = {"model": ctx.model_digest, "retain": [(r.id, r.answer) for r in anchor_rows(ctx, hp)], "seed": ctx.seed,
            "hp": common_hp(ra_config(hp)), "anchor_epochs": hp.anchor_epochs,
            "versions": {k: v for k, v in package_versions().items() if k in ("torch", "transformers", "peft")},
            "loss": "answer-view",  # RAs trained when the LM head ran over every position differ in the last bits
            # where and how many steps: epochs are passes over the data whatever the accumulation and processes
            "placement": ctx.placement.describe(), "world_size": world_size(), "steps": "passes"}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def save_anchor(ctx: UnlearnContext, hp: AdapterPairConfig, dest: Path) -> None:
    """Train the RA and save it to ``dest``; with ``ctx.anchor_cache`` (``smfa forget``) an RA trained on the
    same weights and data is copied instead of retrained: it depends on the model, not on the request, so
    every request to one deployed model shares it (byte-identical adapter files, hence the same sculpt)."""
    import shutil

    from smfa.rundir import atomic_run_dir

    key = anchor_key(ctx, hp) if ctx.anchor_cache else None
    cached = Path(ctx.anchor_cache) / f"ra-{key}" if key else None
    if cached is not None and (cached / "adapter_config.json").is_file():
        shutil.copytree(cached, dest, dirs_exist_ok=True)
        ctx.anchor_cache_hit = True
        return
    from smfa.distributed import adapter_state_dict, wait_for_main

    model = train_anchor(ctx, hp)
    model.save_pretrained(dest, state_dict=adapter_state_dict(model))  # sharded: the adapter alone, gathered
    if cached is not None:  # the main process stores it, staged and renamed (never half-written); the others wait
        with wait_for_main() as main:
            if main:
                with atomic_run_dir(cached, overwrite=True) as stage:
                    shutil.copytree(dest, stage, dirs_exist_ok=True)


def adapters_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "adapters"


def merged_adapter_pair(ctx: UnlearnContext, hp: AdapterPairConfig, views: dict[str, list],
                        merge: Callable[[torch.nn.Module, Path], Any]) -> tuple[torch.nn.Module, Any]:
    """The sequence SMFA and TIES share: an MFA per forget view (``views``: adapter name → forget rows) and the
    RA, saved under ``adapters/``; then ``merge(model, adapters dir)`` into a copy of the vanilla. Returns the
    merged copy and what ``merge`` returned."""
    from smfa.distributed import adapter_state_dict

    out = adapters_dir(ctx.work_dir)
    for tag, rows in views.items():
        mfa = train_mfa(ctx, hp, rows, tag)
        mfa.save_pretrained(out / tag, state_dict=adapter_state_dict(mfa))  # sharded: the adapter alone, gathered
    save_anchor(ctx, hp, out / ANCHOR_ADAPTER)
    model = ctx.fresh_model()
    return model, merge(model, out)


@register_method
class SMFA(Method):
    name = "smfa"
    config_cls = SMFAConfig
    description = "refusal-tuned LoRA (MFA) sculpted against a retaining-anchor LoRA (RA), then merged"
    trains_refusals = True

    def escalations(self, hp: SMFAConfig) -> list[dict[str, Any]]:  # type: ignore[override]
        """A larger k first (a re-sculpt of the same adapters: no training), then twice the MFA's steps at that k
        (the RA is reused: it does not depend on the MFA's epochs)."""
        k = {"k": hp.k * 2, "k_text": hp.k_text * 2} if hp.dual else {"k": hp.k * 2}
        return [k, {**k, "epochs": hp.epochs * 2, "min_steps": hp.min_steps * 2}]

    def run(self, ctx: UnlearnContext, hp: SMFAConfig) -> torch.nn.Module:  # type: ignore[override]
        from smfa.sculpt import merge_sculpted_into, write_sculpt_report

        if not hp.lora:
            raise ConfigError("SMFA sculpts LoRA adapters: it needs lora: true")
        views = {FORGET_ADAPTER: ctx.data.forget_rows}
        if hp.dual:
            views = {
                FORGET_ADAPTER: [r for r in ctx.data.forget_rows if r.kind == IMAGE_MEMORY],
                FORGET_TEXT_ADAPTER: [r for r in ctx.data.forget_rows if r.kind == TEXT_MEMORY],
            }
            if not views[FORGET_TEXT_ADAPTER]:
                raise ConfigError("--dual needs text-memory forget rows; with --target visual use a single MFA")

        def sculpt(model: torch.nn.Module, out: Path):
            return merge_sculpted_into(
                model, out / FORGET_ADAPTER, out / ANCHOR_ADAPTER, hp.k, hp.mode,
                forget_adapter_dir2=out / FORGET_TEXT_ADAPTER if hp.dual else None,
                k2=hp.k_text if hp.dual else None, progress=ctx.progress,
            )

        model, report = merged_adapter_pair(ctx, hp, views, sculpt)
        # Record run-relative adapter paths (the staging directory is renamed when the run finishes).
        report.anchor_adapter = f"adapters/{ANCHOR_ADAPTER}"
        for view in report.views:
            view.forget_adapter = f"adapters/{Path(view.forget_adapter).name}"
        write_sculpt_report(report, ctx.work_dir / "sculpt")
        if hp.robust == "distill":
            from smfa.methods.robust import distill_into_noised

            model = distill_into_noised(ctx, model, hp)
        return model
