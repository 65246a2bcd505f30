"""The eval stage: generate answers for every evaluation set of the bench (plus the user's probe questions),
score them, aggregate, compare with the oracle, and write ``metrics.json``, ``generations.jsonl``,
``report.md`` and ``manifest.json``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from smfa.bench.forget_set import REQUEST_LABEL, ForgetSet, resolve_forget
from smfa.bench.schema import (
    CHOICE,
    FORGET_GROUP,
    KINDS,
    MEMORY_KINDS,
    UNANSWERABLE,
    UNDERSTANDING,
    Question,
    default_fact,
    fact_missing_from,
    forgotten_kinds,
    name_memory_set,
    requires_fact,
)
from smfa.errors import ConfigError
from smfa.rundir import atomic_run_dir, iter_jsonl, write_jsonl_atomic, write_manifest


@dataclass
class EvalConfig:
    """What to evaluate and how."""

    bench: str = ""  # bench directory
    model: str = ""  # run directory, model directory or hub id
    out: str = ""  # evaluation directory to write
    forget: str = "10"  # forget split whose people are the "forget" group
    forget_people: str | None = None  # a deletion request's person ids (comma list or file): the forget group instead
    earlier: list[list[str]] = field(default_factory=list)  # people of a chain's earlier requests: never retain, leak reported
    target: str = "all"  # all | visual (the forget people's text memory counts as retain)
    limit: int | None = None  # at most N questions per set (deterministic subsample); None = all
    judge: str = "offline"  # offline | openai
    judge_base_url: str | None = None  # openai judge endpoint (else $SMFA_JUDGE_BASE_URL)
    judge_model: str | None = None  # openai judge model (else $SMFA_JUDGE_MODEL)
    questions: str | None = None  # extra probe questions (JSONL, bench row format; image optional) → set "user"
    oracle: str | None = None  # oracle run: forget quality = KS p-value of forget losses vs the oracle's
    vanilla: str | None = None  # vanilla run: its forget quality as the reference point
    attacks: str | None = None  # "all" or a comma list (smfa.eval.attacks)
    # The relearn attacks' runs (smfa.eval.attack_pieces.RelearnSweep); None = the default (relearn_defaults): relearn
    # one run of 20 steps of 16 rows (tiny: full fine-tuning at 3e-4; real families: LoRA r 16 at 1e-4, checkpointing),
    # relearn_sweep lr 1e-4, 3e-4, 1e-3 x steps 20, 100, 500, each also after 20 repair steps; share 0.5.
    relearn_steps: tuple[int, ...] | None = None  # the sweep's step counts (one value: one)
    relearn_lr: tuple[float, ...] | None = None  # the sweep's learning rates (one value: one)
    relearn_share: float | None = None  # fraction of each forget person's facts trained on (T); the rest (V) is asked
    relearn_batch_size: int | None = None
    relearn_params: str | None = None  # lora | full (full: a second model copy + optimizer state)
    relearn_repair_steps: int | None = None  # repair-then-attack: steps on retain rows before each cell; 0 = none
    core_sets: bool = False  # only the train-phrasing sets, the name-memory set and general VQA (a k trade-off
    # curve's points; the name-memory set is smfa.bench.schema.name_memory_set: held-out phrasings in visual)
    request_sets: bool = False  # what a deletion request's audit needs: every forget memory set + train-phrasing sets
    batch_size: int = 64
    max_new_tokens: int = 24
    device: str = "auto"  # auto | cpu | cuda | cuda:N: where the model (and the oracle/vanilla) generate
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32 (auto: bf16 on a GPU, fp32 on the CPU; smfa.models.placement)
    trust_remote_code: bool = False
    overwrite: bool = False
    progress: bool = True


def load_user_questions(path: str | Path, bench: Any) -> list[Question]:
    """Probe questions in the bench's row format: ``id``, ``question``, ``answer`` and ``fact`` required,
    ``kind`` (default image_memory with an image, else text_memory) and ``image`` (relative to the bench, or
    absolute) optional.

    ``fact`` is the key value inside the answer that accuracy and leak matching look for ("Norvale" in
    "This person lives in Norvale."); every part of it must occur in the answer. A memory probe must give it:
    the whole answer sentence as the fact would make "Norvale." count as neither correct nor a leak. Other
    probes may leave it out: an ``unanswerable`` probe's fact is ``""`` (its correct answer is a refusal), an
    understanding or general-VQA probe's its whole answer (the rule of :func:`smfa.bench.schema.requires_fact`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--questions file {path} does not exist")
    rows: list[Question] = []
    for n, raw in iter_jsonl(path, ConfigError):
        missing = [k for k in ("id", "question", "answer") if not isinstance(raw.get(k), str)]
        if missing:
            raise ConfigError(f"{path}, line {n}: missing or non-string field(s) {', '.join(missing)}")
        kind = raw.get("kind", "image_memory" if raw.get("image") else "text_memory")
        if kind not in KINDS:
            raise ConfigError(f"{path}, line {n}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        fact = raw.get("fact")
        if fact is None and not requires_fact(kind):
            fact = default_fact(kind, raw["answer"])
        if not isinstance(fact, str) or (kind != UNANSWERABLE and not fact.strip()):
            raise ConfigError(f"{path}, line {n}: probe {raw['id']} needs a non-empty string 'fact', the key value "
                              "inside its answer that leak matching looks for (e.g. \"Norvale\" in \"This person "
                              "lives in Norvale.\")")
        unstated = fact_missing_from(fact, raw["answer"])
        if unstated is not None:
            raise ConfigError(f"{path}, line {n}: probe {raw['id']}: fact {unstated!r} does not occur in the answer "
                              f"{raw['answer']!r}")
        image = raw.get("image")
        if image is not None and not (Path(image).is_file() or (bench.root / image).is_file()):
            raise ConfigError(f"{path}, line {n}: image {image} not found (absolute, or relative to the bench)")
        rows.append(Question(
            id=raw["id"], kind=kind, domain=raw.get("domain", "portrait" if image else "none"),
            attribute=raw.get("attribute", "user"), question=raw["question"], answer=raw["answer"],
            fact=fact, person_id=raw.get("person_id"), image=image,
            image_split="heldout" if image else None, phrasing="paraphrase",
        ))
    if not rows:
        raise ConfigError(f"--questions file {path} has no questions")
    return rows


def make_judge(cfg: EvalConfig, bench: Any):
    from smfa.eval.judges import get_judge

    if cfg.judge == "offline":
        return get_judge("offline", vocabulary=bench.vocabulary())
    opts = {k: v for k, v in (("base_url", cfg.judge_base_url), ("model", cfg.judge_model)) if v}
    return get_judge(cfg.judge, **opts)


def generate_sets(loaded: Any, bench: Any, sets: dict[str, list[Question]], forget_people: set[str], *,
                  cfg: EvalConfig, questions: dict[str, list[str]] | None = None, loss_sets: tuple[str, ...] = (),
                  images: Any = None):
    """Answers (and, for ``loss_sets``, reference losses) for every set, generated in one batched pass."""
    from smfa.data import ImageCache
    from smfa.eval.generate import answer_losses, choose_options, generate_answers
    from smfa.eval.schema import Generation

    images = images or ImageCache(bench)
    flat: list[tuple[str, Question, str]] = []
    for name, rows in sets.items():
        texts = (questions or {}).get(name) or [r.question for r in rows]
        flat.extend((name, r, t) for r, t in zip(rows, texts))
    # Multiple-choice rows are answered by scoring their options (generate.pick_option), the rest by generation.
    picked = [i for i, (_, r, _) in enumerate(flat) if r.format == CHOICE]
    free = [i for i in range(len(flat)) if flat[i][1].format != CHOICE]
    answers = [""] * len(flat)
    generated = generate_answers(loaded, [flat[i][1] for i in free], bench, questions=[flat[i][2] for i in free],
                                 batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, images=images,
                                 progress=cfg.progress, desc="evaluating") if free else []
    letters = choose_options(loaded, [flat[i][1] for i in picked], bench, batch_size=cfg.batch_size, images=images,
                             progress=cfg.progress) if picked else []
    for i, a in zip(free + picked, generated + letters):
        answers[i] = a
    loss_idx = [i for i, (name, _, _) in enumerate(flat) if name in loss_sets]
    losses = answer_losses(loaded, [flat[i][1] for i in loss_idx], bench, batch_size=cfg.batch_size,
                           images=images, progress=cfg.progress) if loss_idx else []
    loss_of = dict(zip(loss_idx, losses))
    return [
        Generation(set=name, question_id=r.id, kind=r.kind, attribute=r.attribute, question=text, answer=answers[i],
                   reference=r.answer, fact=r.fact, person_id=r.person_id,
                   is_forget_person=r.person_id in forget_people, loss=loss_of.get(i), format=r.format)
        for i, (name, r, text) in enumerate(flat)
    ]


def neighbour_generations(loaded: Any, bench: Any, forget: ForgetSet, gens: list[Any], cfg: EvalConfig,
                          images: Any = None) -> list[Any]:
    """Answers for the neighbour sets of ``forget`` (:func:`smfa.bench.neighbours.neighbour_sets`, at most
    ``cfg.limit`` rows each), one :class:`smfa.eval.schema.Generation` per row under the neighbour set's name.
    A question already answered in a ``retain/...`` set of ``gens`` keeps that answer; only the others are
    generated, in a pass of their own (the other sets' answers do not change)."""
    from smfa.bench.neighbours import neighbour_sets

    sets = {name: rows for name, rows in neighbour_sets(bench, forget, cfg.limit).items() if rows}
    known = {g.question_id: g for g in gens if g.set.startswith("retain/")}
    missing = {name: [q for q in rows if q.id not in known] for name, rows in sets.items()}
    missing = {name: rows for name, rows in missing.items() if rows}
    if missing:
        made = generate_sets(loaded, bench, missing, set(forget.forgotten), cfg=cfg, images=images)
        known.update({g.question_id: g for g in made})
    return [replace(known[q.id], set=name) for name, rows in sets.items() for q in rows]


def _forget_memory_sets(sets: dict[str, list[Question]], target: str) -> tuple[str, ...]:
    return tuple(f"forget/{k}" for k in forgotten_kinds(target) if f"forget/{k}" in sets)


def oracle_left_out(oracle: str | Path, bench: Any) -> set[str]:
    """The known people an oracle run never saw, read from its ``manifest.json`` (``smfa finetune --people
    retain --forget F`` records F); an oracle without that record, or trained on another bench, is refused."""
    from smfa.rundir import read_manifest

    path = Path(oracle)
    hint = f"train one with: smfa finetune --bench {bench.root} --people retain --forget F --out ORACLE"
    if not (path / "manifest.json").is_file():
        raise ConfigError(f"oracle {path} has no manifest.json saying which people it left out; {hint}")
    manifest = read_manifest(path)
    data = manifest.get("data") or {}
    if manifest.get("stage") != "finetune" or data.get("people") != "retain" or not data.get("forget_left_out"):
        raise ConfigError(f"oracle {path} is not a retain-only finetune run (its manifest records no left-out "
                          f"forget split); {hint}")
    checksum = (manifest.get("bench") or {}).get("checksum")
    if checksum != bench.checksum:
        raise ConfigError(f"oracle {path} was trained on another bench (checksum {str(checksum)[:12]}, this bench "
                          f"{bench.checksum[:12]}); {hint}")
    return bench.forget_people(str(data["forget_left_out"]))


def check_oracle(oracle: str | Path, bench: Any, forget: str | ForgetSet) -> None:
    """Refuse an oracle that saw any evaluated forget person or left out an evaluated retain person: it is
    the "never saw them" floor only for the forget split it left out."""
    left_out = oracle_left_out(oracle, bench)
    group = bench.forget_set(forget)
    seen = group.people - left_out
    missing = left_out & bench.retain_people(group)
    if seen or missing:
        what = (f"saw {len(seen)} of the {len(group.people)} forget-{group.label} people" if seen
                else f"never saw {len(missing)} retain people of forget {group.label}")
        raise ConfigError(f"oracle {oracle} {what} (it left out {len(left_out)} people); use an oracle trained "
                          f"with --people retain --forget {group.label}")


def reference_losses(source: str, bench: Any, rows: list[Question], cfg: EvalConfig, loaded: Any = None) -> list[float]:
    """The answer losses of ``source`` (the oracle or the vanilla) on ``rows``; ``loaded``: that model, already
    in memory (the unlearn stage's vanilla), so it is not loaded a second time."""
    from smfa.eval.generate import answer_losses, load_reference

    other = loaded or load_reference(source, cfg)
    return answer_losses(other, rows, bench, batch_size=cfg.batch_size, progress=cfg.progress)


def evaluation_sets(bench: Any, cfg: EvalConfig, forget: ForgetSet) -> dict[str, list[Question]]:
    """The question sets ``cfg`` evaluates (bench sets, earlier requests' sets, user probes)."""
    sets = bench.eval_sets(forget, target=cfg.target, limit=cfg.limit)
    if cfg.core_sets:  # drop the paraphrase / unseen-image variants but the name-memory set (in visual a variant)
        kept = name_memory_set(cfg.target)
        sets = {name: rows for name, rows in sets.items() if name.count("/") <= 1 or name == kept}
    if cfg.request_sets:
        sets = {name: rows for name, rows in sets.items() if is_request_set(name, cfg.target)}
    sets.update(earlier_sets(bench, forget, cfg.target, cfg.limit))
    if cfg.questions:
        sets["user"] = load_user_questions(cfg.questions, bench)
    return sets


def gold_reference_losses(bench: Any, cfg: EvalConfig, vanilla: Any = None) -> dict[str, list[float]]:
    """The oracle's (and, with ``cfg.vanilla``, the vanilla's) answer losses on the forget-memory rows the
    gold standard compares, by source. ``smfa unlearn`` computes them before training, while the vanilla
    (``vanilla``, reused) is the only other model in memory: at 7B the oracle never sits beside both the
    vanilla and the unlearned model."""
    forget = eval_group(bench, cfg)
    sets = evaluation_sets(bench, cfg, forget)
    rows = [r for name in _forget_memory_sets(sets, cfg.target) for r in sets[name]]
    out = {str(cfg.oracle): reference_losses(str(cfg.oracle), bench, rows, cfg)}
    if cfg.vanilla:
        out[str(cfg.vanilla)] = reference_losses(str(cfg.vanilla), bench, rows, cfg, loaded=vanilla)
    return out


def eval_group(bench: Any, cfg: EvalConfig) -> ForgetSet:
    """The forget group of an evaluation (:func:`smfa.bench.forget_set.resolve_forget`)."""
    return resolve_forget(bench, str(cfg.forget), cfg.forget_people, tuple(frozenset(p) for p in cfg.earlier))


def is_request_set(name: str, target: str) -> bool:
    """The sets a deletion request's evaluation asks in setting ``target``: every forget memory set (training
    phrasing, paraphrase, unseen photo), forget understanding, the training-phrasing retain sets and general VQA,
    and the forget people's name memory (in ``visual`` kept, read on held-out phrasings:
    :func:`smfa.bench.schema.name_memory_set`)."""
    return (name.count("/") <= 1 or (name.startswith(f"{FORGET_GROUP}/") and UNDERSTANDING not in name)
            or name == name_memory_set(target))


def earlier_sets(bench: Any, group: ForgetSet, target: str, limit: int | None) -> dict[str, list[Question]]:
    """The forget memory sets of each earlier request's people, named ``earlier<N>/<kind>[/<variant>]``."""
    out: dict[str, list[Question]] = {}
    kinds = forgotten_kinds(target)
    for n, people in enumerate(group.earlier, start=1):
        sets = bench.eval_sets(ForgetSet(label=f"earlier{n}", people=people), target=target, limit=limit)
        for name, rows in sets.items():
            if name.startswith(f"{FORGET_GROUP}/") and name.split("/")[1] in kinds:
                out[f"earlier{n}/" + name.split("/", 1)[1]] = rows
    return out


def request_leaks(set_metrics: dict[str, Any], group: ForgetSet, target: str) -> list[Any]:
    """One :class:`smfa.eval.schema.RequestLeak` per request of the chain (earlier ones, then this one): the
    ``forget_leak_*`` aggregates computed on that request's sets alone."""
    from smfa.eval.metrics import compute_overall
    from smfa.eval.schema import RequestLeak

    prefixes = [f"earlier{n}" for n in range(1, len(group.earlier) + 1)] + [FORGET_GROUP]
    sizes = [len(p) for p in group.earlier] + [len(group.people)]
    rows = []
    for n, (prefix, size) in enumerate(zip(prefixes, sizes), start=1):
        view = {FORGET_GROUP + name[len(prefix):]: m for name, m in set_metrics.items() if name.startswith(prefix + "/")}
        o = compute_overall(view, target)
        rows.append(RequestLeak(
            request=n, people=size, current=prefix == FORGET_GROUP, leak_image=o.forget_leak_image,
            leak_text=o.forget_leak_text, leak_paraphrase=o.forget_leak_paraphrase,
            leak_unseen_image=o.forget_leak_unseen_image,
            n=sum(m.n for name, m in view.items() if name.split("/")[1] in MEMORY_KINDS)))
    return rows


def evaluate_loaded(loaded: Any, bench: Any, cfg: EvalConfig, out_dir: Path, extra: dict[str, Any] | None = None,
                    images: Any = None, gold_losses: dict[str, list[float]] | None = None, oracle_mia: Any = None):
    """Evaluate an in-memory model and write the evaluation files into ``out_dir`` (created). ``images``: a
    shared :class:`smfa.data.ImageCache` when the same questions are evaluated again (k sweeps);
    ``gold_losses``: :func:`gold_reference_losses` computed earlier (else the oracle is loaded here); ``oracle_mia``:
    :func:`smfa.eval.attacks.oracle_mia_losses` likewise, for the ``mia`` attack."""
    from smfa.bench.neighbours import neighbour_people
    from smfa.data import ImageCache
    from smfa.eval.gold import gold_standard
    from smfa.eval.metrics import compute_all_sets, compute_overall
    from smfa.eval.schema import Metrics, save_metrics
    from smfa.models.placement import placement_of
    from smfa.report import write_eval_report

    t0 = time.perf_counter()
    forget = eval_group(bench, cfg)
    sets = evaluation_sets(bench, cfg, forget)
    forget_people = set(forget.forgotten)
    loss_sets = _forget_memory_sets(sets, cfg.target)
    images = images or ImageCache(bench)
    gens = generate_sets(loaded, bench, sets, forget_people, cfg=cfg, loss_sets=loss_sets, images=images)
    neighbours = not (cfg.core_sets or cfg.request_sets)  # a k-sweep point or a request's audit skips them
    if neighbours:
        gens += neighbour_generations(loaded, bench, forget, gens, cfg, images=images)
    judge = make_judge(cfg, bench)
    set_metrics = compute_all_sets(gens, judge)
    overall = compute_overall(set_metrics, cfg.target)
    gold = None
    if cfg.oracle:
        check_oracle(cfg.oracle, bench, forget)
        loss_rows = [r for name in loss_sets for r in sets[name]]
        mine = [g.loss for g in gens if g.set in loss_sets]
        known = gold_losses or {}
        oracle = known.get(str(cfg.oracle)) or reference_losses(cfg.oracle, bench, loss_rows, cfg)
        vanilla = (known.get(str(cfg.vanilla)) or reference_losses(cfg.vanilla, bench, loss_rows, cfg)) if cfg.vanilla else None
        gold = gold_standard(mine, oracle, vanilla, oracle=str(cfg.oracle), sets=list(loss_sets))
    attacks = None
    if cfg.attacks:
        from smfa.eval.attacks import run_attacks

        attacks = run_attacks(loaded, bench, cfg, forget, oracle_mia=oracle_mia)
    requests = request_leaks(set_metrics, forget, cfg.target) if forget.label == REQUEST_LABEL or forget.earlier else None
    metrics = Metrics(target=cfg.target, model=str(cfg.model), forget=forget.label, judge=judge.describe(),
                      sets=set_metrics, overall=overall, gold=gold, attacks=attacks, requests=requests,
                      neighbour_people=neighbour_people(bench, forget) if neighbours else None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out_dir / "generations.jsonl", [g.to_dict() for g in gens])
    save_metrics(metrics, out_dir)
    write_eval_report(metrics, out_dir)
    write_manifest(out_dir, "eval", asdict(replace(cfg)), bench={"path": str(bench.root), "checksum": bench.checksum},
                   n_questions=len(gens), wall_time_s=round(time.perf_counter() - t0, 2),
                   placement=placement_of(loaded.model), **(extra or {}))
    return metrics


def evaluate(cfg: EvalConfig) -> Path:
    """``smfa eval``: load the model and bench, evaluate, write ``cfg.out`` atomically. Under a distributed
    launch the main process alone does it; the other ranks wait until ``cfg.out`` is written."""
    from smfa.distributed import on_main_process

    return on_main_process(_evaluate, cfg)


def _evaluate(cfg: EvalConfig) -> Path:
    from smfa.bench import Bench
    from smfa.models.loading import load_model
    from smfa.models.placement import resolve_placement

    placement = resolve_placement(cfg.device, cfg.dtype)
    bench = Bench.load(cfg.bench)
    forget = eval_group(bench, cfg)  # fail early on a bad split or id, oracle or attack name, before loading a model
    if cfg.oracle:
        check_oracle(cfg.oracle, bench, forget)
    if cfg.attacks:
        from smfa.eval.attacks import parse_attacks
        from smfa.eval.relearn import check_relearn_options

        parse_attacks(cfg.attacks)
        check_relearn_options(cfg)
    loaded = load_model(cfg.model, placement=placement, trust_remote_code=cfg.trust_remote_code)
    with atomic_run_dir(Path(cfg.out), overwrite=cfg.overwrite) as stage:
        evaluate_loaded(loaded, bench, cfg, stage)
    return Path(cfg.out)
