"""The unlearn stage: vanilla run + method → unlearned model (+ its evaluation) in a new run directory.

The forget group is a bench split (``forget``) or a deletion request naming people (``forget_people``), and
``model`` may be an earlier unlearning run: the requests then form a chain (:mod:`smfa.stages.forget`), recorded in
the manifest, and every run writes its audit record (:mod:`smfa.stages.audit`).

Data every method sees (same access for all, as SPEC.md's table says unless a method states otherwise):
- ``forget_rows`` = D_f: the forget people's training-phrasing memory rows — image and text memory in the
  ``all`` setting, image memory only in the ``visual`` setting;
- ``anchor_rows`` = D_r^few: the bench's few-shot retain anchor (subsampled to ``anchor_size``), without any
  person forgotten now or by an earlier request (a request may name anchor people); in the ``visual`` setting
  the forget people's text-memory rows are added, because there they are knowledge to keep;
- ``preserve_rows`` (MMUnlearner's Fisher preserve set): what a retain term trains on, the anchor plus the
  reference rows below — never a row of a person on whom a retain metric is computed;
- ``reference_rows`` (``--reference self|self-full``, every method with a retain term): the training-phrasing
  memory questions of the bench's reference pool (retain people on whom no retain metric is computed) —
  ``self-full`` adds their understanding questions and general-VQA training pictures' questions —, labelled
  by the vanilla's own greedy answers: data a deployer has without labels.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smfa.bench.forget_set import REQUEST_LABEL, ForgetSet, resolve_forget
from smfa.bench.schema import TEXT_MEMORY, forgotten_kinds
from smfa.errors import ConfigError, SmfaError
from smfa.reference import check_budget, reference_questions, resolve_reference, self_labelled_reference
from smfa.rundir import atomic_run_dir, write_manifest


@dataclass
class UnlearnConfig:
    """One unlearning run. Method hyper-parameters come from the method's shipped YAML ← ``method_config`` ← ``params``."""

    bench: str = ""  # bench directory
    model: str = ""  # vanilla run directory (smfa finetune) or a model directory
    out: str = ""  # run directory to write
    method: str = "smfa"  # registered method name (smfa unlearn --help lists them)
    forget: str = "10"  # forget split: 5 | 10 | 15 | val (tuning only), an imported split's name, or a file of person ids
    forget_people: str | None = None  # a deletion request: person ids (comma list or a file, one per line) instead of forget
    target: str = "all"  # all (forget photo and name knowledge) | visual (forget the photo link only)
    anchor_size: int | None = None  # size of D_r^few (default: the bench's anchor set)
    reference: str = "auto"  # auto (resolve_reference: self-full for smfa/idk/ties on a bench with a reference pool, else none) | none (the paper recipe) | self | self-full
    seed: int = 0
    method_config: str | None = None  # YAML with the method's hyper-parameters
    params: dict[str, Any] = field(default_factory=dict)  # hyper-parameter overrides (k, lr, epochs, ...)
    evaluate: bool = True  # evaluate the unlearned model into RUN/eval
    eval_limit: int | None = 200  # at most N questions per evaluation set (None: all)
    judge: str = "offline"
    oracle: str | None = None  # oracle run for the forget-quality KS test
    device: str = "auto"  # auto | cpu | cuda | cuda:N: vanilla, trainee, reference models and evaluation
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32 (auto: bf16 on a GPU, fp32 on the CPU; smfa.models.placement)
    trust_remote_code: bool = False
    overwrite: bool = False
    progress: bool = True
    shared_dir: str | None = None  # reuse/store adapters shared across runs (smfa compare: SMFA's MFA = IDK)
    attacks: str | None = None  # attack suite on the unlearned model ("all" or a comma list); in the audit record
    # The relearn attack's protocol (EvalConfig's fields of the same names); None: the model's default.
    relearn_steps: tuple[int, ...] | None = None
    relearn_lr: tuple[float, ...] | None = None
    relearn_share: float | None = None
    relearn_batch_size: int | None = None
    relearn_params: str | None = None  # lora | full
    relearn_repair_steps: int | None = None
    request_eval: bool = False  # evaluate only what a request's audit needs (EvalConfig.request_sets; smfa forget)
    anchor_cache: bool = False  # reuse a retaining anchor trained on the same parent weights and data (smfa forget)
    keep_earlier: bool = True  # a chain's MFA also refuses every earlier request's people (a suppression list: their questions, refusal labels; methods that train refusals)
    new_chain: bool = False  # start a new chain from ``model`` even when it continues one (smfa.stages.forget.read_chain)
    # On a chain: one run from the chain's root over every person forgotten so far (their own forget rows, no
    # suppression list), recorded as the chain's next request (parent ``model``); docs/defaults.md compares the two.
    from_root: bool = False
    # After training, the request's people must leak at most this much (photo, name, held-out phrasing; held-out
    # photos are reported; smfa.eval.verify): above it the method's stronger settings are tried (Method.escalations, at most
    # ``verify_attempts``), and a run still above it is written, recorded as such, and ends in RequestNotForgotten
    # (exit 3) — never a silent success. None: no check (smfa compare measures recipes as configured).
    leak_target: float | None = 0.05
    verify_attempts: int = 2
    audit_key_file: str | None = None  # sign the audit record with HMAC-SHA256 under the key in this file (audit.sig; docs/audit.md); the key is never copied into the run


def select_data(bench: Any, forget: str | ForgetSet, target: str, anchor_size: int | None, seed: int,
                keep_earlier: bool = False, from_root: bool = False):
    """The rows a method sees (module docstring); ``forget``: a split name or a resolved :class:`ForgetSet`.
    ``keep_earlier``: a chain's earlier requests' people join this request's forget rows as a *suppression list*
    — their questions (wording, photo, person id) with the answer and fact removed, to be refusal-labelled by
    the method — so that a later request does not train their refusal away, and no private answer is kept.
    ``from_root``: the forget rows (and, in the ``visual`` setting, the kept name knowledge) are those of everyone
    forgotten so far, earlier requests' people with their own rows (a run from the chain's root)."""
    from smfa.methods.context import UnlearnData

    kinds = forgotten_kinds(target)
    group = bench.forget_set(forget)
    now = ForgetSet(label=group.label, people=group.forgotten) if from_root else group
    forget_rows = bench.forget_rows(now, kinds=kinds)
    if keep_earlier and group.earlier:
        earlier = bench.forget_rows(ForgetSet(label=group.label, people=group.forgotten - group.people), kinds=kinds)
        forget_rows += suppression_list(earlier)
    if not forget_rows:
        raise ConfigError(f"the forget set for --forget {group.label} --target {target} is empty: nothing to unlearn")
    few = [r for r in bench.anchor_rows(anchor_size, seed=seed) if r.person_id not in group.forgotten]
    anchor = list(few)
    if TEXT_MEMORY not in kinds:  # kept knowledge: the forget people's name-only questions anchor retention
        anchor += bench.forget_rows(now, kinds=(TEXT_MEMORY,))
    return UnlearnData(forget_rows=forget_rows, anchor_rows=anchor)


def suppression_list(rows: list[Any]) -> list[Any]:
    """Rows to refuse again: each question as asked (wording, photo, person), never its private answer."""
    from dataclasses import replace

    return [replace(q, answer="", fact="") for q in rows]


def unlearn(cfg: UnlearnConfig) -> Path:
    """Run ``cfg.method`` and write RUN/{model/, manifest.json, audit.json, audit.md, eval/, adapters/ (SMFA),
    sculpt/ (SMFA)}."""
    from smfa.models.digest import text_io_digest, weight_hashes
    from smfa.stages.audit import read_key
    from smfa.bench import Bench
    from smfa.distributed import full_state_dict, wait_for_main
    from smfa.stages.forget import chain_record, mark_chain, read_chain
    from smfa.methods import get_method
    from smfa.distributed import world_size
    from smfa.methods.context import UnlearnContext
    from smfa.models.loading import load_model, model_dir_of
    from smfa.models.scale import is_real_scale
    from smfa.models.placement import autocast_flags, check_trainable, resolve_placement

    t_start = time.perf_counter()
    check_verification(cfg)
    method = get_method(cfg.method)
    check_budget(cfg.reference)  # bad values fail before loading anything
    hp = method.config(cfg.method_config, cfg.params, target=cfg.target, reference=cfg.reference)  # bad values fail first
    bench = Bench.load(cfg.bench)
    budget = resolve_reference(cfg.reference, method, bench)
    if budget != cfg.reference:  # auto resolved: the shipped layer of the budget it resolved to
        hp = method.config(cfg.method_config, cfg.params, target=cfg.target, reference=budget)
    placement = resolve_placement(cfg.device, cfg.dtype)
    check_trainable(placement, not hp.lora, f"--method {cfg.method} (lora: false)")
    autocast_flags(hp.autocast, placement)  # an impossible autocast fails before loading
    from smfa.models.memory_plan import check_fits, unlearn_inputs

    check_fits(unlearn_inputs(cfg, method, budget, placement), placement.device)  # a planned peak over the GPU's memory: refused now
    audit_key = read_key(cfg.audit_key_file)  # a missing or weak key fails before any work
    chain = read_chain(cfg.model, bench, cfg.new_chain)  # earlier requests when --model is an unlearning run
    group = resolve_forget(bench, str(cfg.forget), cfg.forget_people, chain.earlier_people)
    # Earlier people are kept refused by methods that train refusals; the others have no refusal label to give.
    # --from-root on a chain: start from its root and forget everyone forgotten so far in one run (no suppression list).
    from_root = bool(cfg.from_root and chain.requests)
    start = chain.root if from_root else cfg.model
    keep_earlier = bool(cfg.keep_earlier and group.earlier and method.trains_refusals and not from_root)
    data = select_data(bench, group, cfg.target, cfg.anchor_size, cfg.seed, keep_earlier=keep_earlier,
                       from_root=from_root)
    if cfg.oracle and cfg.evaluate:
        from smfa.eval.pipeline import check_oracle

        check_oracle(cfg.oracle, bench, group)  # before any training
    reference_questions(bench, budget)  # an empty pool fails before loading
    if cfg.attacks and cfg.evaluate:
        from smfa.eval.attacks import parse_attacks
        from smfa.eval.relearn import check_relearn_options

        parse_attacks(cfg.attacks)
        check_relearn_options(cfg)  # before any training
    vanilla = load_model(start, placement=placement, trust_remote_code=cfg.trust_remote_code)
    if is_real_scale(vanilla.model):  # a real checkpoint: the one-GPU memory plan under the user's values
        hp = method.config(cfg.method_config, cfg.params, target=cfg.target, reference=budget, real=True)
    input_dir = model_dir_of(start)
    input_hashes = weight_hashes(input_dir) if input_dir is not None else {}
    # Methods that compare with the original model (NPO's reference, KL's target) use the chain's root, not
    # the parent: the parent has already forgotten earlier requests' people.
    uses_root = bool(chain.requests and not from_root and getattr(method, "uses_reference_model", False))
    if budget != "none":
        from smfa.cache import cache_dir

        data.reference_rows = self_labelled_reference(
            bench, vanilla, budget, seed=cfg.seed, progress=cfg.progress, forgotten=group.forgotten,
            cap=hp.reference_cap, cache=cache_dir() / "reference-labels", model_digest=_digest(input_hashes),
            text_io=text_io_digest(input_dir) if input_dir is not None else None, placement=placement,
            hard_negatives=hp.hard_negatives, hard_negative_repeat=hp.hard_negative_repeat, decoys=hp.decoys)
    from smfa.eval.pipeline import EvalConfig

    eval_cfg = EvalConfig(bench=cfg.bench, model=str(cfg.out), forget=str(cfg.forget),
                          forget_people=",".join(sorted(group.people)) if group.label == REQUEST_LABEL else None,
                          earlier=[sorted(p) for p in group.earlier], target=cfg.target, limit=cfg.eval_limit,
                          judge=cfg.judge, oracle=cfg.oracle, vanilla=cfg.model, attacks=cfg.attacks,
                          relearn_steps=cfg.relearn_steps, relearn_lr=cfg.relearn_lr, relearn_share=cfg.relearn_share,
                          relearn_batch_size=cfg.relearn_batch_size, relearn_params=cfg.relearn_params,
                          relearn_repair_steps=cfg.relearn_repair_steps,
                          request_sets=cfg.request_eval, progress=cfg.progress, device=cfg.device, dtype=cfg.dtype)
    gold_losses = oracle_mia = None
    if cfg.evaluate:
        from smfa.distributed import is_main_process
        from smfa.eval.attacks import oracle_mia_losses, parse_attacks
        from smfa.eval.pipeline import eval_group, gold_reference_losses

        if cfg.oracle and is_main_process():  # now, beside the vanilla only: never a third model in memory
            gold_losses = gold_reference_losses(bench, eval_cfg, vanilla=None if from_root else vanilla)
            if cfg.attacks and "mia" in parse_attacks(cfg.attacks):  # the oracle's MIA AUCs (PrivLeak)
                oracle_mia = oracle_mia_losses(bench, eval_cfg, eval_group(bench, eval_cfg))
    anchor_cache = None
    if cfg.anchor_cache:
        from smfa.cache import cache_dir

        anchor_cache = cache_dir() / "anchors"
    # Every rank trains; the main process alone saves, evaluates and writes the run, and the others wait until
    # it is in place (``smfa compare`` reads it next).
    with wait_for_main() as main, atomic_run_dir(Path(cfg.out), overwrite=cfg.overwrite, discard=not main) as stage:
        ctx = UnlearnContext(bench=bench, vanilla=vanilla, data=data, target=cfg.target, seed=cfg.seed,
                             work_dir=stage, progress=cfg.progress, placement=placement,
                             shared_dir=Path(cfg.shared_dir) if cfg.shared_dir else None,
                             anchor_cache=anchor_cache, model_digest=_digest(input_hashes))
        if uses_root:  # held by the context alone: the method releases it once trained, before its merge
            ctx.reference = load_model(chain.root, placement=placement, trust_remote_code=cfg.trust_remote_code)
        if cfg.leak_target is not None and cfg.verify_attempts:  # a stronger attempt reuses what it can
            ctx.shared_dir = ctx.shared_dir or stage / ATTEMPTS_DIR
            ctx.anchor_cache = ctx.anchor_cache or stage / ATTEMPTS_DIR
        t0 = time.perf_counter()
        model = method.run(ctx, hp)
        # A reused adapter's training time counts, so wall times compare what each method costs alone.
        reused_s = ctx.reused_train_s
        checks: list[tuple[dict[str, Any], Any]] = []
        if cfg.leak_target is not None:
            model, hp, checks = forget_until_target(ctx, method, hp, model, eval_cfg, cfg)
        shutil.rmtree(stage / ATTEMPTS_DIR, ignore_errors=True)
        wall = time.perf_counter() - t0 + reused_s
        weights = full_state_dict(model)  # FSDP / ZeRO-3: gathered from every rank (None: the module's own)
        if not main:
            return Path(cfg.out)
        model.save_pretrained(stage / "model", state_dict=weights, safe_serialization=True)
        vanilla.processor.save_pretrained(stage / "model")
        mark_chain(stage / "model", cfg.out, chain, group, bench)  # the model/ directory alone continues the chain
        if weights is not None:  # a sharded model generates only with every rank: evaluate the saved weights
            del model, weights
            model = load_model(stage / "model", placement=placement).model
        requests = {**chain_record(chain, group, cfg.model, len(data.forget_rows)),
                    "answered": "from_root" if from_root else "from_parent"}
        write_manifest(
            stage, "unlearn", asdict(cfg),
            method=cfg.method, hyperparameters=asdict(hp), seed=cfg.seed, wall_time_s=round(wall, 2),
            reused_adapter_train_s=round(reused_s, 2),
            verification=verification_record(cfg, checks),
            bench={"path": str(bench.root), "checksum": bench.checksum},
            data={"forget_rows": len(data.forget_rows), "anchor_rows": len(data.anchor_rows),
                  "earlier_requests_refused": keep_earlier,
                  "reference_rows": len(data.reference_rows), "budget": budget if data.reference_rows else "none",
                  "preserve_rows": len(data.preserve_rows), "target": cfg.target, "forget": group.label},
            family=vanilla.family.name, placement=placement.describe(), **requests,
            effective_batch_size=hp.batch_size * hp.grad_accum * world_size(), world_size=world_size(),
            reference_model=chain.root if uses_root else None,
            anchor_cache_hit=ctx.anchor_cache_hit,
        )
        metrics = parent_retain = None
        t_eval = time.perf_counter()
        if cfg.evaluate:
            from smfa.stages.audit import parent_retain_metrics
            from smfa.eval.pipeline import evaluate_loaded
            from smfa.models.loading import LoadedModel

            loaded = LoadedModel(model=model, processor=vanilla.processor, family=vanilla.family, source=str(cfg.out))
            metrics = evaluate_loaded(loaded, bench, eval_cfg, stage / "eval", gold_losses=gold_losses,
                                      oracle_mia=oracle_mia,
                                      extra={"method": cfg.method, "unlearn_wall_time_s": round(wall, 2)})
            # The retain change is against the parent (--model), also when the run started from the chain's root.
            parent, parent_dir = ((load_model(cfg.model, placement=placement, trust_remote_code=cfg.trust_remote_code),
                                   model_dir_of(cfg.model)) if from_root else (vanilla, input_dir))
            parent_retain = parent_retain_metrics(parent, bench, eval_cfg,
                                                  _digest(weight_hashes(parent_dir) if parent_dir else {}))
            del parent
        from smfa.stages.audit import write_audit

        write_audit(stage, run=Path(cfg.out), cfg=cfg, hp=hp, group=group, data=data, bench=bench,
                    requests=requests, input_dir=input_dir, input_hashes=input_hashes,
                    output_hashes=weight_hashes(stage / "model"), metrics=metrics, parent_retain=parent_retain,
                    reference_model=chain.root if uses_root else None,
                    anchor_cache_hit=ctx.anchor_cache_hit, verification=verification_record(cfg, checks),
                    wall={"unlearn": wall, "evaluation": time.perf_counter() - t_eval if cfg.evaluate else None,
                          "total": time.perf_counter() - t_start}, key=audit_key)
    if checks and checks[-1][1].passed and checks[-1][1].above:
        print(f"warning: the request's people still leak above the target where the check does not require it: "
              f"{checks[-1][1].summary()}", file=sys.stderr)
    if checks and not checks[-1][1].passed:
        raise RequestNotForgotten(
            f"the request's people still leak after {len(checks)} attempt(s): {checks[-1][1].summary()}; the run is "
            f"written to {cfg.out} and its manifest and audit record say so. Ways out: stronger settings (--k, --epochs, "
            f"--param min_steps=N), more attempts (--verify-attempts N), or a looser --leak-target")
    return Path(cfg.out)


ATTEMPTS_DIR = ".attempts"  # adapters shared by a run's attempts (removed before the run is complete)


class RequestNotForgotten(SmfaError):
    """The unlearned model still leaks the request's people above ``leak_target`` after every attempt."""

    exit_status = 3


def check_verification(cfg: UnlearnConfig) -> None:
    if cfg.leak_target is not None and not (isinstance(cfg.leak_target, (int, float)) and 0 <= cfg.leak_target < 1):
        raise ConfigError(f"--leak-target must be a rate in [0, 1) (e.g. 0.05 for 5 %), got {cfg.leak_target!r}")
    if not isinstance(cfg.verify_attempts, int) or cfg.verify_attempts < 0:
        raise ConfigError(f"--verify-attempts must be an integer >= 0, got {cfg.verify_attempts!r}")


def forget_until_target(ctx: Any, method: Any, hp: Any, model: Any, eval_cfg: Any,
                        cfg: UnlearnConfig) -> tuple[Any, Any, list[tuple[dict[str, Any], Any]]]:
    """Check the request's leak (:func:`smfa.eval.verify.check_request`, on the main process) and, while it is above
    ``cfg.leak_target``, run the method again with its next stronger setting (``method.escalations``), at most
    ``cfg.verify_attempts`` times. Returns the last model, its hyper-parameters and every (overrides, check)."""
    from dataclasses import replace

    from smfa.distributed import on_main_process
    from smfa.eval.verify import check_request
    from smfa.models.loading import LoadedModel

    def check(m: Any) -> Any:
        loaded = LoadedModel(model=m, processor=ctx.vanilla.processor, family=ctx.vanilla.family, source=str(cfg.out))
        return on_main_process(check_request, loaded, ctx.bench, eval_cfg, cfg.leak_target)

    checks = [({}, check(model))]
    for overrides in method.escalations(hp)[: cfg.verify_attempts]:
        if checks[-1][1].passed:
            break
        print(f"the request's people still leak: {checks[-1][1].summary()}; trying {overrides}", file=sys.stderr)
        stronger = replace(hp, **overrides)
        del model
        model = method.run(ctx, stronger)
        hp = stronger
        checks.append((overrides, check(model)))
    return model, hp, checks


def verification_record(cfg: UnlearnConfig, checks: list[tuple[dict[str, Any], Any]]) -> dict[str, Any] | None:
    """What the manifest and the audit record say of the check: the target, each attempt's overrides and leak,
    and whether the last one passed (None: not checked)."""
    if not checks:
        return None
    return {"leak_target": cfg.leak_target, "passed": checks[-1][1].passed,
            "attempts": [{"overrides": o, **c.to_dict()} for o, c in checks]}


def _digest(hashes: dict[str, str]) -> str | None:
    from smfa.models.digest import model_digest

    return model_digest(hashes) if hashes else None
