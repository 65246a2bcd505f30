"""The per-set and overall metrics of S-MLLMUn Bench.

:func:`rouge_l`, then :func:`compute_set_metrics` (one evaluation set → :class:`SetMetrics`) and
:func:`compute_overall` (all sets → the paper's aggregates, :class:`Overall`). What an answer says (fact
matching, refusals, yes/no answers) is decided in :mod:`smfa.eval.text`; field meanings are documented in
:mod:`smfa.eval.schema`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from smfa.bench.schema import GENERAL_VQA, IMAGE_MEMORY, MEMORY_KINDS, TARGETS, TEXT_MEMORY, UNDERSTANDING
from smfa.eval.judges.base import Judge, JudgeItem
from smfa.eval.schema import EvalError, Generation, Overall, SetMetrics
from smfa.eval.text import SPECIAL_TOKEN_PATTERN, answer_is_correct, contains_fact, is_refusal


# ---------------------------------------------------------------------------------------------------------
# ROUGE-L


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure of ``answer`` against ``reference`` (``rouge-score``, Porter stemming), in [0, 1].
    Special tokens are removed first; an empty answer scores 0."""
    answer = SPECIAL_TOKEN_PATTERN.sub(" ", answer)
    if not answer.strip() or not reference.strip():
        return 0.0
    return float(_rouge_scorer().score(reference, answer)["rougeL"].fmeasure)


# ---------------------------------------------------------------------------------------------------------
# Per-set metrics


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compute_set_metrics(generations: Sequence[Generation], judge: Judge) -> SetMetrics:
    """Metrics of one evaluation set. All ``generations`` must belong to the same set (``Generation.set``);
    ``judge`` scores Fact and Meaningful (:mod:`smfa.eval.judges`)."""
    if not generations:
        raise EvalError("compute_set_metrics got no generations: an evaluation set must have at least one question")
    names = sorted({g.set for g in generations})
    if len(names) > 1:
        raise EvalError(
            f"compute_set_metrics got generations from {len(names)} sets ({', '.join(names[:4])}); "
            "group them first, e.g. with compute_all_sets"
        )
    items = [JudgeItem(g.question, g.answer, g.reference, g.fact, g.kind) for g in generations]
    scores = judge.score_batch(items)
    if len(scores) != len(items):
        raise EvalError(f"judge {judge.describe()} returned {len(scores)} scores for {len(items)} answers")
    memory = [g for g in generations if g.kind in MEMORY_KINDS and g.fact.strip()]
    losses = [g.loss for g in generations if g.loss is not None]
    return SetMetrics(
        n=len(generations),
        rouge_l=_mean([rouge_l(g.answer, g.reference) for g in generations]),
        fact_score=_mean([s[0] for s in scores]),
        meaningful_score=_mean([s[1] for s in scores]),
        accuracy=_mean([float(answer_is_correct(g.answer, g.fact)) for g in generations]),
        refusal_rate=_mean([float(is_refusal(g.answer)) for g in generations]),
        leak_rate=_mean([float(contains_fact(g.answer, g.fact)) for g in memory]),
        mean_loss=_mean(losses),
    )


def compute_all_sets(generations: Sequence[Generation], judge: Judge) -> dict[str, SetMetrics]:
    """Group ``generations`` by set (first-seen order) and compute each set's metrics."""
    groups: dict[str, list[Generation]] = {}
    for g in generations:
        groups.setdefault(g.set, []).append(g)
    return {name: compute_set_metrics(rows, judge) for name, rows in groups.items()}


# ---------------------------------------------------------------------------------------------------------
# Aggregates


def parse_set_name(name: str) -> tuple[str, str, str]:
    """``"forget/image_memory/paraphrase"`` → ``("forget", "image_memory", "paraphrase")``;
    ``"general_vqa"`` → ``("", "general_vqa", "")``; ``"user"`` → ``("user", "", "")``."""
    parts = name.split("/")
    if name == GENERAL_VQA:
        return "", GENERAL_VQA, ""
    group = parts[0]
    kind = parts[1] if len(parts) > 1 else ""
    variant = "/".join(parts[2:])
    return group, kind, variant


def _field(sets: Mapping[str, SetMetrics], name: str, attr: str) -> float | None:
    metrics = sets.get(name)
    return None if metrics is None else getattr(metrics, attr)


def _first(sets: Mapping[str, SetMetrics], names: Sequence[str], attr: str) -> float | None:
    for name in names:
        if name in sets:
            return getattr(sets[name], attr)
    return None


def _mean_present(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _weighted(sets: Mapping[str, SetMetrics], names: Sequence[str], attr: str) -> float | None:
    pairs = [(sets[n].n, getattr(sets[n], attr)) for n in names if getattr(sets[n], attr) is not None]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None


def compute_overall(sets: Mapping[str, SetMetrics], target: str = "all") -> Overall:
    """The paper's aggregates (definitions in :class:`smfa.eval.schema.Overall`) from per-set metrics.

    ``target`` is the unlearning setting: ``all`` or ``visual`` (forget memory = image memory only; the
    forget people's name-only questions are reported as kept knowledge). A missing set gives ``None`` for
    the aggregates that need it; a mean of two sets uses the one present when the other is missing.
    """
    if target not in TARGETS:
        raise EvalError(f"unknown unlearning setting {target!r}; use one of {', '.join(TARGETS)}")
    acc = "accuracy"
    f_und = _field(sets, f"forget/{UNDERSTANDING}", acc)
    r_und = _field(sets, f"retain/{UNDERSTANDING}", acc)
    f_img = _field(sets, f"forget/{IMAGE_MEMORY}", acc)
    r_img = _field(sets, f"retain/{IMAGE_MEMORY}", acc)
    r_txt = _field(sets, f"retain/{TEXT_MEMORY}", acc)
    # The forget people's name-only questions: a forget set in "all", kept knowledge in "visual".
    text_names = (
        (f"forget/{TEXT_MEMORY}", f"forget_text/{TEXT_MEMORY}")
        if target == "all"
        else (f"forget_text/{TEXT_MEMORY}", f"forget/{TEXT_MEMORY}")
    )
    f_txt = _first(sets, text_names, acc)
    forget_memory = _mean_present(f_img, f_txt) if target == "all" else f_img
    retain_memory = _mean_present(r_img, r_txt)
    memory_kinds = (IMAGE_MEMORY, TEXT_MEMORY) if target == "all" else (IMAGE_MEMORY,)
    paraphrase = [f"forget/{k}/paraphrase" for k in memory_kinds if f"forget/{k}/paraphrase" in sets]
    retain = [n for n in sets if parse_set_name(n)[0] == "retain"]
    # Meaningful as documented: the training-phrasing sets and general VQA, not user probes or the variants.
    trained = [n for n in sets if n == GENERAL_VQA or (n.count("/") == 1 and parse_set_name(n)[0] != "user")]
    return Overall(
        forget_understanding=f_und,
        retain_understanding=r_und,
        image_understanding=_mean_present(f_und, r_und),
        forget_image_memory=f_img,
        forget_text_memory=f_txt,
        retain_image_memory=r_img,
        retain_text_memory=r_txt,
        forget_memory=forget_memory,
        retain_memory=retain_memory,
        memory=None if forget_memory is None or retain_memory is None else retain_memory - forget_memory,
        meaningful=_weighted(sets, trained, "meaningful_score"),
        general_vqa=_field(sets, GENERAL_VQA, acc),
        forget_leak_image=_field(sets, f"forget/{IMAGE_MEMORY}", "leak_rate"),
        forget_leak_text=_first(sets, text_names, "leak_rate"),
        forget_leak_paraphrase=_weighted(sets, paraphrase, "leak_rate"),
        forget_leak_unseen_image=_field(sets, f"forget/{IMAGE_MEMORY}/unseen_image", "leak_rate"),
        retain_refusal_rate=_weighted(sets, retain, "refusal_rate"),
        general_vqa_refusal_rate=_field(sets, GENERAL_VQA, "refusal_rate"),
    )
