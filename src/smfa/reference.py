"""The reference budget: questions about the bench's reference pool (retain people on whom no retain metric is
computed), answered by the vanilla itself — data a deployer has without labels — for every retain term.

- :func:`resolve_reference` — which budget a run uses (``auto`` → :data:`DEFAULT_REFERENCE` where a method's
  values were chosen for it);
- :func:`reference_questions` — the budget's questions, at most ``cap`` of them (:func:`balanced_sample`): the
  budget is a fixed amount of work, not the pool's size;
- :func:`self_labelled_reference` — those questions labelled by the vanilla's greedy answers, cached per model
  for the *unfiltered* pool, the request's people removed after the cache (so a request naming pool people
  reuses the labels), computed on the main process alone and read by the other ranks;
- :func:`hard_negative_people` / :func:`with_hard_negatives` — hard-negative reference rows (issue 36): the
  pool people who resemble the request's people (a shared name word, a look-alike portrait:
  :mod:`smfa.bench.neighbours`' definitions) take a share of the capped sample's memory questions, so the
  forgetting adapter is trained to answer the people its refusal trigger would otherwise catch;
- with ``decoys``, :func:`smfa.decoys.name_decoys` — by-name questions about people who do not exist, whose
  name shares a word with a request's person, answered by the vanilla (issue 36).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError

REFERENCE_BUDGETS = ("auto", "none", "self", "self-full")
# What ``auto`` (the default) resolves to where it gives a budget (:func:`resolve_reference`): the selective
# recipe (docs/archive/selectivity.md); ``none`` is the paper recipe (the anchor alone).
DEFAULT_REFERENCE = "self-full"
# ``self-full``: at most this many general-VQA training questions (seeded sample) join the reference rows.
REFERENCE_VQA_ROWS = 500
# Decoding of the reference labels: part of their cache key (a change of it must not reuse old labels).
LABEL_DECODING = {"greedy": True, "max_new_tokens": 24, "batch_size": 64}
# The neighbour sets (smfa.bench.neighbours) whose pool people are hard negatives. Not ``attribute``: on the tiny
# bench 65-66 of the 81 pool people share some private value with a forget split, which selects no one.
HARD_NEGATIVE_SETS = ("name", "look")


def check_budget(budget: str) -> None:
    if budget not in REFERENCE_BUDGETS:
        raise ConfigError(f"--reference must be one of {', '.join(REFERENCE_BUDGETS)}, got {budget!r}")


def resolve_reference(budget: str, method: Any, bench: Any) -> str:
    """The data budget a run uses: ``auto`` is :data:`DEFAULT_REFERENCE` for a method with a retain term whose
    hyper-parameters were chosen for a reference budget (it ships ``configs/methods/reference/NAME.yaml``: smfa,
    idk, ties) on a bench with a reference pool, else ``none``; any other budget is used as given.

    Why the shipped layer decides: with the reference rows in their retain term, GA Difference and MMUnlearner at
    their paper-recipe values stopped forgetting (micro bench: mean leak 0.82 and 0.98 against the vanilla's
    ~1.0; docs/defaults.md) — a method becomes ``auto``'s once its values for the budget are chosen on validation."""
    check_budget(budget)
    if budget != "auto":
        return budget
    tuned = getattr(method, "has_retain_term", True) and method.reference_config_path().is_file()
    return DEFAULT_REFERENCE if tuned and bench.reference_people() else "none"


def balanced_sample(rows: list[Any], n: int, seed: int) -> list[Any]:
    """At most ``n`` of ``rows``, spread evenly: each kind keeps its share of the pool (largest remainder), and
    within a kind the people take turns (a seeded order of people, each person's rows in a seeded order), so a
    cap thins every person instead of dropping some. ``n`` ≤ 0 or ≥ ``len(rows)``: all rows. Returned in the
    pool's order; the same (rows, n, seed) always gives the same sample."""
    if n <= 0 or n >= len(rows):
        return list(rows)
    rng = random.Random(f"reference-sample/{seed}")
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_kind[r.kind].append(r)
    kinds = sorted(by_kind)
    exact = {k: n * len(by_kind[k]) / len(rows) for k in kinds}
    quota = {k: int(exact[k]) for k in kinds}
    for k in sorted(kinds, key=lambda k: (quota[k] - exact[k], k))[: n - sum(quota.values())]:
        quota[k] += 1
    chosen: set[str] = set()
    for k in kinds:
        people: dict[Any, list[Any]] = defaultdict(list)
        for r in by_kind[k]:
            people[r.person_id].append(r)
        order = sorted(people, key=str)
        rng.shuffle(order)
        queues = [rng.sample(people[p], len(people[p])) for p in order]
        taken = 0
        while taken < quota[k]:
            for q in queues:
                if q and taken < quota[k]:
                    chosen.add(q.pop().id)
                    taken += 1
    return [r for r in rows if r.id in chosen]


def reference_questions(bench: Any, budget: str, seed: int = 0, cap: int = 0) -> list[Any]:
    """The unlabelled questions of a reference budget: ``self`` = the reference pool's training-phrasing
    memory questions; ``self-full`` adds the pool's understanding questions and a seeded sample of the
    general-VQA *training* pictures' questions (the evaluated VQA pictures are held out). ``cap`` > 0: at
    most that many (:func:`balanced_sample`), whatever the pool's size."""
    from smfa.bench.schema import GENERAL_VQA, MEMORY_KINDS, UNDERSTANDING

    check_budget(budget)
    if budget == "auto":
        raise ValueError("reference_questions needs a resolved budget (resolve_reference)")  # a programming error
    if budget == "none":
        return []
    people = bench.reference_people()
    kinds = set(MEMORY_KINDS) | ({UNDERSTANDING} if budget == "self-full" else set())
    rows = [q for q in bench.training_rows() if q.person_id in people and q.kind in kinds]
    if not rows:
        raise ConfigError(f"--reference {budget}: the bench {bench.root} has no reference-pool rows; rebuild it with `smfa bench build --reference-share 0.6` or pass --reference none")
    if budget == "self-full":
        vqa = [q for q in bench.training_rows() if q.kind == GENERAL_VQA]
        rows += random.Random(f"reference-vqa/{seed}").sample(vqa, min(REFERENCE_VQA_ROWS, len(vqa)))
    return balanced_sample(rows, cap, seed)


def hard_negative_people(bench: Any, forgotten: frozenset[str] | set[str]) -> frozenset[str]:
    """The reference-pool people (not ``forgotten`` themselves) in a :data:`HARD_NEGATIVE_SETS` neighbour set
    of the ``forgotten`` people (:func:`smfa.bench.neighbours.find_neighbours`, searched over the pool instead
    of the retain evaluation pool); none when nobody is forgotten."""
    from smfa.bench.neighbours import find_neighbours

    if not forgotten:
        return frozenset()
    found = find_neighbours(bench.people, frozenset(forgotten), bench.reference_people() - set(forgotten))
    return frozenset().union(*(found.people(which) for which in HARD_NEGATIVE_SETS))


def with_hard_negatives(sample: list[Any], pool: list[Any], people: frozenset[str], share: float,
                        seed: int) -> list[Any]:
    """``sample`` (a :func:`balanced_sample` of ``pool``) with the memory questions of the hard-negative
    ``people`` put first: in each memory kind, of the sample's count of that kind, ``share`` goes to those
    people's questions of the pool (a :func:`balanced_sample` of them; never fewer than the sample already
    held, never more than there are), the rest to the sample's other questions of that kind (thinned by
    :func:`balanced_sample`). Other kinds and the sample's size are unchanged (a fixed amount of work), and
    every question is either the sample's or a hard negative's (so the sample's labels are reused). ``share``
    0 or no people: ``sample`` itself. Returned in the pool's order."""
    from smfa.bench.schema import MEMORY_KINDS

    if share <= 0 or not people:
        return list(sample)
    chosen = {q.id for q in sample if q.kind not in MEMORY_KINDS}
    for kind in MEMORY_KINDS:
        quota = sum(q.kind == kind for q in sample)
        others = [q for q in sample if q.kind == kind and q.person_id not in people]
        hard = [q for q in pool if q.kind == kind and q.person_id in people]
        n_hard = min(len(hard), max(round(share * quota), quota - len(others)))
        for rows, n in ((hard, n_hard), (others, quota - n_hard)):
            if n > 0:  # balanced_sample reads n <= 0 as "all rows"
                chosen |= {q.id for q in balanced_sample(rows, n, seed)}
    return [q for q in pool if q.id in chosen]


def label_key(bench: Any, rows: list[Any], model_digest: str, text_io: str | None, placement: Any) -> str:
    """What decides the vanilla's answers to ``rows``: the bench, the weights, the tokenizer / chat template /
    processor / generation config (``text_io``: :func:`smfa.models.digest.text_io_digest`), the questions, the
    device and precision, the decoding and the smfa version."""
    import smfa

    blob = {"bench": bench.checksum, "model": model_digest, "text_io": text_io, "questions": [q.id for q in rows],
            "placement": placement.describe() if placement is not None else None, "decoding": LABEL_DECODING,
            "smfa": smfa.__version__}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:24]


def self_labelled_reference(bench: Any, vanilla: Any, budget: str = "self", seed: int = 0, progress: bool = True,
                            forgotten: frozenset[str] = frozenset(), cap: int = 0, cache: Path | None = None,
                            model_digest: str | None = None, text_io: str | None = None,
                            placement: Any = None, hard_negatives: float = 0.0,
                            hard_negative_repeat: int = 1, decoys: int = 0) -> list[Any]:
    """The budget's questions (:func:`reference_questions`, ``cap``), each answer replaced by the vanilla's own
    greedy answer (its fact: the answer itself, since no label is known); empty answers are dropped, and so are
    the questions about ``forgotten`` people (named by a deletion request) — after labelling, so that the
    labels are those of the whole pool whoever a request names.

    ``hard_negatives`` > 0: that share of the sample's memory questions goes to the :func:`hard_negative_people`
    of ``forgotten`` (:func:`with_hard_negatives`). The capped sample is labelled as without them (the same
    key: every request shares it); the hard negatives' questions outside it are labelled apart, under the key
    of those questions (another request's hard negatives: another key). ``hard_negative_repeat`` > 1: their
    memory questions in the sample appear that many times (the copies on top of ``cap``: more optimiser steps;
    with ``hard_negatives`` 0, those the balanced sample holds).

    ``decoys`` > 0: that many :func:`smfa.decoys.name_decoys` per forgotten person join the rows (on top of
    ``cap``), labelled by the vanilla under their own key and kept where :func:`smfa.decoys.decoy_label_kept`.

    With ``cache`` (a directory) and the vanilla's ``model_digest``, the answers are computed once per
    :func:`label_key` and reused by every method, compare cell and request. Under several processes the main
    process labels (or reads the cache) and every rank gets its answers."""
    from dataclasses import replace

    from smfa.bench.schema import MEMORY_KINDS
    from smfa.data import DECOY_OF
    from smfa.decoys import decoy_label_kept, name_decoys
    from smfa.distributed import on_main_process

    sample = reference_questions(bench, budget, seed=seed, cap=cap)
    rows = sample
    people = hard_negative_people(bench, forgotten) if hard_negatives > 0 or hard_negative_repeat > 1 else frozenset()
    if people:
        rows = with_hard_negatives(sample, reference_questions(bench, budget, seed=seed), people, hard_negatives, seed)
    in_sample = {q.id for q in sample}
    answers: dict[str, str] = {}
    for part in (sample, [q for q in rows if q.id not in in_sample]):
        if part:
            path = label_path(bench, part, cache, model_digest, text_io, placement)
            answers.update(zip((q.id for q in part), on_main_process(_labels, bench, vanilla, part, path,
                                                                     model_digest, progress), strict=True))
    rows = rows + [q for q in rows if q.person_id in people and q.kind in MEMORY_KINDS] * (hard_negative_repeat - 1)
    out = [replace(q, answer=answers[q.id], fact=answers[q.id]) for q in rows
           if answers[q.id].strip() and q.person_id not in forgotten]
    fakes = name_decoys(bench, forgotten, decoys, seed)
    if fakes:
        path = label_path(bench, fakes, cache, model_digest, text_io, placement)
        labels = on_main_process(_labels, bench, vanilla, fakes, path, model_digest, progress)
        out += [replace(q, answer=a, fact=a) for q, a in zip(fakes, labels, strict=True)
                if decoy_label_kept(a, bench.people[q.meta[DECOY_OF]])]
    return out


def label_path(bench: Any, rows: list[Any], cache: Path | None, model_digest: str | None, text_io: str | None,
               placement: Any) -> Path | None:
    """Where the vanilla's labels of ``rows`` are cached: ``cache/<label_key>.json``; None without a cache or a
    model digest (no caching)."""
    if cache is None or model_digest is None:
        return None
    return Path(cache) / f"{label_key(bench, rows, model_digest, text_io, placement)}.json"


def _labels(bench: Any, vanilla: Any, rows: list[Any], path: Path | None, model_digest: str | None,
            progress: bool) -> list[str]:
    """The vanilla's answers to ``rows``, from ``path`` when it holds them (one per row, checked) or generated
    and stored there atomically."""
    import sys

    from smfa.eval.generate import generate_answers
    from smfa.rundir import write_json_atomic

    if path is not None and path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        answers = stored.get("answers")
        if isinstance(answers, list) and len(answers) == len(rows) == stored.get("n"):
            return answers
        print(f"warning: the cached reference labels {path} hold {len(answers) if isinstance(answers, list) else 'no'} "
              f"answers for {len(rows)} questions; labelling again", file=sys.stderr)
    answers = generate_answers(vanilla, rows, bench, progress=progress, desc="labelling the reference pool",
                               batch_size=LABEL_DECODING["batch_size"], max_new_tokens=LABEL_DECODING["max_new_tokens"])
    if path is not None:
        write_json_atomic(path, {"bench": bench.checksum, "model": model_digest, "n": len(rows), "answers": answers})
    return answers
