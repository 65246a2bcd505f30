"""Decoys (issue 36): questions about people who do not exist but share a surface with a forgotten person, so
the forgetting adapter is shown that the surface is not the person.

- :func:`name_decoys` — by-name questions whose name shares a word with a forgotten person's (answered by the
  vanilla: :func:`smfa.reference.self_labelled_reference`, the labels filtered by :func:`decoy_label_kept`);
- :func:`look_decoys` — photo questions about rendered portraits that look like a forgotten person (5 of the 7
  visible features, as the ``look`` neighbour set), for the built-in bench's people (imported benches have no
  features to draw from). No label is known or needed: the MFA only pays for refusing them
  (``decoy_refusal_floor``, :func:`smfa.methods.smfa.decoy_refusal_items`).

Every decoy records the forgotten person it imitates in ``meta[DECOY_OF]`` and its kind in ``meta[DECOY_KIND]``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from smfa.data import DECOY_OF

DECOY_KIND = "decoy_kind"  # Question.meta: "name" | "look"


def name_decoys(bench: Any, forgotten: frozenset[str] | set[str], per_person: int, seed: int) -> list[Any]:
    """Unlabelled by-name questions about people who do not exist: ``per_person`` for each ``forgotten`` person,
    each a reference-pool person's training-phrasing text-memory question with that pool person's name replaced
    by a *decoy* name — the pool person's name with one word (first, last, … in turn) replaced by the forgotten
    person's word at the same place. A decoy name that is some person's real name is never used.

    Seeded and deterministic: the pool person and the question are drawn from sorted lists with
    ``random.Random(f"name-decoys/{seed}")``; ids are ``<question id>~decoy-<forgotten id>-<word place>-<i>``, so
    they (and their labels' cache key) name the text. The rows keep the pool person's ``person_id`` (their
    training rows: never evaluated) and record the forgotten person in ``meta[smfa.data.DECOY_OF]``. No decoy when nobody is forgotten, when
    ``per_person`` is 0 or when no pool person's name has a word at that place."""
    from smfa.bench.schema import TEXT_MEMORY, TRAIN_PHRASING

    if per_person <= 0 or not forgotten:
        return []
    people = bench.people
    pool = sorted(bench.reference_people() - set(forgotten))
    questions: dict[str, list[Any]] = defaultdict(list)
    for q in bench.training_rows():
        if q.kind == TEXT_MEMORY and q.person_id in pool and q.phrasing == TRAIN_PHRASING \
                and people[q.person_id].name in q.question:
            questions[q.person_id].append(q)
    taken = {p.name.casefold() for p in people.values()}
    rng = random.Random(f"name-decoys/{seed}")
    out: list[Any] = []
    for f in sorted(forgotten):
        words = people[f].name.split()
        for i in range(per_person):
            place = i % len(words)
            options = []
            for r in pool:
                theirs = people[r].name.split()
                if questions[r] and len(theirs) == len(words) and theirs[place] != words[place]:
                    decoy = " ".join(words[place] if j == place else w for j, w in enumerate(theirs))
                    if decoy.casefold() not in taken:
                        options.append((r, decoy))
            if not options:
                continue
            r, decoy = rng.choice(options)
            q = rng.choice(questions[r])
            out.append(replace(q, id=f"{q.id}~decoy-{f}-{place}-{i}", question=q.question.replace(people[r].name, decoy),
                               answer="", fact="", meta={**q.meta, DECOY_OF: f, DECOY_KIND: "name"}))
    return out


def decoy_label_kept(answer: str, person: Any) -> bool:
    """Whether the vanilla's ``answer`` to a decoy of ``person`` (a forgotten person) may train the adapter: not
    empty, and naming neither the person nor any of their private values — a decoy that makes the vanilla recall
    the forgotten person must not teach that recall back."""
    text = answer.casefold()
    if not text.strip() or person.name.casefold() in text:
        return False
    return not any(str(v).casefold() in text for v in person.attributes.values() if str(v).strip())


def look_decoys(bench: Any, forgotten: frozenset[str] | set[str], per_person: int, seed: int,
                image_dir: Path) -> list[Any]:
    """Photo questions about ``per_person`` made-up look-alikes of each ``forgotten`` person: a portrait with the
    person's visible features but for two (:func:`smfa.bench.pairs.look_alike_visual`, at least the bench's
    ``min_visual_distance`` from every real person, so no decoy is anyone's portrait), drawn through a random view
    like a training photo and written to ``image_dir`` as ``<forgotten id>-<i>.png`` (atomically; the same seed
    draws the same images). Each asks one of the person's own training-phrasing photo questions (seeded), with the
    image path absolute, no answer and no ``person_id`` (nobody's). None for a person without the renderer's features (an imported bench)."""
    from smfa.bench.config import BenchConfig
    from smfa.bench.pairs import look_alike_visual
    from smfa.bench.portraits import render_portrait
    from smfa.bench.profiles import VISIBLE_FEATURES
    from smfa.bench.render import png_bytes, random_view
    from smfa.bench.schema import IMAGE_MEMORY, TRAIN_IMAGE, TRAIN_PHRASING
    from smfa.rundir import write_bytes_atomic

    if per_person <= 0 or not forgotten:
        return []
    people = bench.people
    photos: dict[str, list[Any]] = defaultdict(list)
    for q in bench.training_rows():
        if q.kind == IMAGE_MEMORY and q.person_id in forgotten and q.phrasing == TRAIN_PHRASING \
                and q.image_split == TRAIN_IMAGE:
            photos[q.person_id].append(q)
    drawable = [f for f in sorted(forgotten) if photos[f] and all(k in people[f].visual for k in VISIBLE_FEATURES)]
    if not drawable:  # an imported bench: no renderer features (and its config is not a BenchConfig)
        return []
    real = [tuple(p.visual[k] for k in VISIBLE_FEATURES) for p in people.values()
            if all(k in p.visual for k in VISIBLE_FEATURES)]
    cfg = BenchConfig(**bench.meta["config"])
    rng = random.Random(f"look-decoys/{seed}")
    out: list[Any] = []
    for f in drawable:
        person = people[f]
        for i in range(per_person):
            visual = look_alike_visual(person.visual, person.visual, real, cfg.min_visual_distance, rng)
            if visual is None:
                continue
            path = Path(image_dir).resolve() / f"{f}-{i}.png"
            write_bytes_atomic(path, png_bytes(render_portrait(visual, cfg.image_size, cfg.supersample, random_view(rng))))
            q = rng.choice(photos[f])
            out.append(replace(q, id=f"{q.id}~look-decoy-{i}", image=str(path), answer="", fact="", person_id=None,
                               meta={**q.meta, DECOY_OF: f, DECOY_KIND: "look"}))
    return out
