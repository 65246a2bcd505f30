"""The unlearn stage: vanilla run + method → unlearned model (+ its evaluation) in a new run directory.

Data every method sees (same access for all, as SPEC.md's table says unless a method states otherwise):
- ``forget_rows`` = D_f: the forget people's training-phrasing memory rows — image and text memory in the
  ``all`` setting, image memory only in the ``visual`` setting;
- ``anchor_rows`` = D_r^few: the bench's few-shot retain anchor (subsampled to ``anchor_size``); in the
  ``visual`` setting the forget people's text-memory rows are added, because there they are knowledge to keep;
- ``preserve_rows`` (MMUnlearner only): text-memory rows of all known people + the anchor;
- ``reference_rows`` (``--reference self``, every method with a retain term): the training-phrasing memory
  questions of the bench's reference pool (retain people on whom no retain metric is computed), labelled by
  the vanilla's own greedy answers — data a deployer has without labels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smfa.bench.schema import TEXT_MEMORY, forgotten_kinds
from smfa.errors import ConfigError
from smfa.rundir import atomic_run_dir, write_manifest


@dataclass
class UnlearnConfig:
    """One unlearning run. Method hyper-parameters come from the method's shipped YAML ← ``method_config`` ← ``params``."""

    bench: str = ""  # bench directory
    model: str = ""  # vanilla run directory (smfa finetune) or a model directory
    out: str = ""  # run directory to write
    method: str = "smfa"  # registered method name (smfa unlearn --help lists them)
    forget: str = "10"  # forget split: 5 | 10 | 15 | val (tuning only), an imported split's name, or a file of person ids
    target: str = "all"  # all (forget photo and name knowledge) | visual (forget the photo link only)
    anchor_size: int | None = None  # size of D_r^few (default: the bench's anchor set)
    reference: str = "none"  # none | self: add the reference pool's questions answered by the vanilla (unlabelled data)
    seed: int = 0
    method_config: str | None = None  # YAML with the method's hyper-parameters
    params: dict[str, Any] = field(default_factory=dict)  # hyper-parameter overrides (k, lr, epochs, ...)
    evaluate: bool = True  # evaluate the unlearned model into RUN/eval
    eval_limit: int | None = 200  # at most N questions per evaluation set (None: all)
    judge: str = "offline"
    oracle: str | None = None  # oracle run for the forget-quality KS test
    trust_remote_code: bool = False
    overwrite: bool = False
    progress: bool = True
    shared_dir: str | None = None  # reuse/store adapters shared across runs (smfa compare: SMFA's MFA = IDK)


def select_data(bench: Any, forget: str, target: str, anchor_size: int | None, seed: int, with_preserve: bool = False):
    from smfa.methods.base import UnlearnData

    kinds = forgotten_kinds(target)
    forget_rows = bench.forget_rows(forget, kinds=kinds)
    if not forget_rows:
        raise ConfigError(f"the forget set for --forget {forget} --target {target} is empty: nothing to unlearn")
    forgotten = bench.forget_people(forget)
    # A forget set given as a file of ids may name anchor people; their rows are forget data, never anchor.
    anchor = [r for r in bench.anchor_rows(anchor_size, seed=seed) if r.person_id not in forgotten]
    if TEXT_MEMORY not in kinds:  # kept knowledge: the forget people's name-only questions anchor retention
        anchor += bench.forget_rows(forget, kinds=(TEXT_MEMORY,))
    preserve: list[Any] = []
    if with_preserve:
        known = bench.forget_people(forget) | bench.retain_people(forget)
        preserve = bench.select(people=known, kinds=(TEXT_MEMORY,), phrasing="train") + list(bench.anchor_rows(anchor_size, seed=seed))
        if TEXT_MEMORY in kinds:
            forgotten = bench.forget_people(forget)
            preserve = [r for r in preserve if r.person_id not in forgotten]
    return UnlearnData(forget_rows=forget_rows, anchor_rows=anchor, preserve_rows=preserve)


REFERENCE_BUDGETS = ("none", "self")


def self_labelled_reference(bench: Any, vanilla: Any, progress: bool = True) -> list[Any]:
    """The reference pool's training-phrasing memory questions, each answer replaced by the vanilla's own
    greedy answer (its fact: the answer itself, since no label is known)."""
    from dataclasses import replace

    from smfa.bench.schema import MEMORY_KINDS
    from smfa.eval.generate import generate_answers

    people = bench.reference_people()
    rows = [q for q in bench.training_rows() if q.person_id in people and q.kind in MEMORY_KINDS]
    if not rows:
        raise ConfigError(f"--reference self: the bench {bench.root} has no reference-pool rows (a built tiny bench has "
                          "40 reference people; an imported bench has them when imported with --reference-share)")
    answers = generate_answers(vanilla, rows, bench, progress=progress, desc="labelling the reference pool")
    return [replace(q, answer=a, fact=a) for q, a in zip(rows, answers) if a.strip()]


def unlearn(cfg: UnlearnConfig) -> Path:
    """Run ``cfg.method`` and write RUN/{model/, manifest.json, eval/, adapters/ (SMFA), sculpt/ (SMFA)}."""
    from smfa.bench import Bench
    from smfa.methods import get_method
    from smfa.methods.base import UnlearnContext
    from smfa.models.loading import load_model

    method = get_method(cfg.method)
    hp = method.config(cfg.method_config, cfg.params, target=cfg.target)
    bench = Bench.load(cfg.bench)
    data = select_data(bench, str(cfg.forget), cfg.target, cfg.anchor_size, cfg.seed,
                       with_preserve=getattr(method, "needs_preserve", False))
    if cfg.oracle and cfg.evaluate:
        from smfa.eval.pipeline import check_oracle

        check_oracle(cfg.oracle, bench, str(cfg.forget))  # before any training
    if cfg.reference not in REFERENCE_BUDGETS:
        raise ConfigError(f"--reference must be one of {', '.join(REFERENCE_BUDGETS)}, got {cfg.reference!r}")
    vanilla = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    if cfg.reference == "self":
        data.reference_rows = self_labelled_reference(bench, vanilla, progress=cfg.progress)
    with atomic_run_dir(Path(cfg.out), overwrite=cfg.overwrite) as stage:
        ctx = UnlearnContext(bench=bench, vanilla=vanilla, data=data, target=cfg.target, seed=cfg.seed,
                             work_dir=stage, progress=cfg.progress,
                             shared_dir=Path(cfg.shared_dir) if cfg.shared_dir else None)
        t0 = time.perf_counter()
        model = method.run(ctx, hp)
        # A reused adapter's training time counts, so wall times compare what each method costs alone.
        wall = time.perf_counter() - t0 + ctx.reused_train_s
        model.save_pretrained(stage / "model", safe_serialization=True)
        vanilla.processor.save_pretrained(stage / "model")
        write_manifest(
            stage, "unlearn", asdict(cfg),
            method=cfg.method, hyperparameters=asdict(hp), seed=cfg.seed, wall_time_s=round(wall, 2),
            reused_adapter_train_s=round(ctx.reused_train_s, 2),
            bench={"path": str(bench.root), "checksum": bench.checksum},
            data={"forget_rows": len(data.forget_rows), "anchor_rows": len(data.anchor_rows),
                  "reference_rows": len(data.reference_rows), "budget": "anchor + reference pool (self-labelled)"
                  if data.reference_rows else "anchor only",
                  "preserve_rows": len(data.preserve_rows), "target": cfg.target, "forget": str(cfg.forget)},
            family=vanilla.family.name,
        )
        if cfg.evaluate:
            from smfa.eval.pipeline import EvalConfig, evaluate_loaded
            from smfa.models.loading import LoadedModel

            loaded = LoadedModel(model=model, processor=vanilla.processor, family=vanilla.family, source=str(cfg.out))
            evaluate_loaded(loaded, bench, EvalConfig(bench=cfg.bench, model=str(cfg.out), forget=str(cfg.forget),
                                                      target=cfg.target, limit=cfg.eval_limit, judge=cfg.judge,
                                                      oracle=cfg.oracle, vanilla=cfg.model, progress=cfg.progress),
                            stage / "eval", extra={"method": cfg.method, "unlearn_wall_time_s": round(wall, 2)})
    return Path(cfg.out)
