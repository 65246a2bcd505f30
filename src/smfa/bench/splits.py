"""Forget splits by person, the validation forget set, the holdout people and the few-shot retain anchor.

Why the forget splits are nested (forget_5 ⊂ forget_10 ⊂ forget_15): a larger forget ratio then only
*adds* people, so a curve over 5/10/15 % measures the effect of forgetting more, not of forgetting other
people (whose faces or facts may happen to be easier). It is also how the paper's ratios behave.

``forget_val`` is disjoint from ``forget_15`` and as large as ``forget_10``: hyper-parameters (k, lr,
steps) are tuned on it, so tuning never looks at a test forget person. ``holdout`` people are never
trained on (membership-inference negatives). ``reference`` is a pool of retain people
(``BenchConfig.reference_share`` of them, 30 % by default) whose *questions* — never their labels — a method may use, answered by the vanilla itself, the
way a deployer can probe a model without ground truth; retain metrics are computed on the other retain
people only (the evaluation pool). The anchor ``D_r^few`` is a list of question ids drawn from training
rows of people in none of those sets (the evaluation pool) — image memory, text memory, understanding and ~15 %
general VQA (without shape items, refusal learnt from the anchor spreads silently to shape questions).
"""

from __future__ import annotations

import random

from smfa.bench.config import BenchConfig
from smfa.bench.schema import GENERAL_VQA, IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING, Person, Question, is_training_row

FORGET_RATIOS = (5, 10, 15)
SPLIT_NAMES = ("forget_5", "forget_10", "forget_15", "forget_val", "holdout", "reference", "anchor")
ANCHOR_PERSON_KINDS = (IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING)


def _stratified_order(people: list[Person], rng: random.Random) -> list[str]:
    """Known people in random order, with patients spread evenly, so every prefix (forget set) holds
    its share of patients and the fundus evaluation sets of even forget_5 are not empty."""
    patients = [p.person_id for p in people if p.fundus is not None]
    others = [p.person_id for p in people if p.fundus is None]
    rng.shuffle(patients)
    rng.shuffle(others)
    order: list[str] = []
    taken = 0
    for k in range(len(people)):
        if taken < round((k + 1) * len(patients) / len(people)):
            order.append(patients[taken])
            taken += 1
        else:
            order.append(others[k - taken])
    return order


def make_person_splits(people: list[Person], cfg: BenchConfig) -> dict[str, list[str]]:
    """``forget_5/10/15`` (nested), ``forget_val``, ``holdout`` and ``reference``; person ids, sorted."""
    known = [p for p in people if p.role == "known"]
    order = _stratified_order(known, cfg.rng("splits"))
    n = len(known)
    sizes = {r: max(1, round(n * r / 100)) for r in FORGET_RATIOS}
    splits = {f"forget_{r}": sorted(order[: sizes[r]]) for r in FORGET_RATIOS}
    splits["forget_val"] = sorted(order[sizes[15] : sizes[15] + sizes[10]])
    retain = order[sizes[15] + sizes[10]:]
    splits["reference"] = sorted(retain[: round(len(retain) * cfg.reference_share)])
    splits["holdout"] = sorted(p.person_id for p in people if p.role == "holdout")
    return splits


def make_anchor(questions: list[Question], splits: dict[str, list[str]], cfg: BenchConfig) -> list[str]:
    """The few-shot retain anchor: ``cfg.anchor_size`` training-row ids, ~``anchor_vqa_share`` general VQA."""
    rng = cfg.rng("anchor")
    excluded = set(splits["forget_15"]) | set(splits["forget_val"]) | set(splits["holdout"]) | set(splits["reference"])
    trainable = [q for q in questions if is_training_row(q)]
    n_vqa = round(cfg.anchor_size * cfg.anchor_vqa_share)
    picked = rng.sample([q.id for q in trainable if q.kind == GENERAL_VQA], n_vqa)
    rest = cfg.anchor_size - n_vqa
    for k, kind in enumerate(ANCHOR_PERSON_KINDS):
        share = rest // len(ANCHOR_PERSON_KINDS) + (1 if k < rest % len(ANCHOR_PERSON_KINDS) else 0)
        pool = [q.id for q in trainable if q.kind == kind and q.person_id is not None and q.person_id not in excluded]
        picked += rng.sample(pool, share)
    return sorted(picked)
