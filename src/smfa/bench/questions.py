"""The question rows built from profiles and shape scenes (phrasings: :mod:`smfa.bench.phrasings`).

Every (kind, domain, attribute) has >= 12 training phrasings and a disjoint set of held-out phrasings.
Each row picks its phrasing by rotation over people, attributes and variants, so every phrasing is used
without the full cross product, and one person's fact is trained under several phrasings:

- training rows: ``image_phrasings`` phrasings on every training image variant; name-only (text memory)
  facts: ``text_phrasings`` phrasings;
- paraphrase rows: one per (person, attribute), held-out phrasing, on a training image;
- unseen-image rows: train phrasing on every held-out variant.

Held-out people get exactly the same rows as known people (they are the never-seen side of membership
inference); whether a row is trained on is decided by :class:`smfa.bench.load.Bench`, not here.
Answers are one short sentence; ``fact`` is the key value and occurs verbatim in ``answer`` (a count
names its noun: "two lesions", so that "No one ..." is not the count "one").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import combinations

from smfa.bench import vocab
from smfa.bench.config import BenchConfig
from smfa.bench.phrasings import Templates, build_templates
from smfa.bench.profiles import PRIVATE_ATTRIBUTES
from smfa.bench.schema import (
    FACT_SEPARATOR,
    GENERAL_VQA,
    HELDOUT_IMAGE,
    IMAGE_MEMORY,
    MULTI_FACT_JOIN,
    PARAPHRASE,
    TEXT_MEMORY,
    TRAIN_IMAGE,
    TRAIN_PHRASING,
    UNANSWERABLE,
    UNDERSTANDING,
    Person,
    Question,
)
from smfa.bench.shapes import ShapeScene

PORTRAIT_MEMORY = ("name",) + PRIVATE_ATTRIBUTES
FUNDUS_MEMORY = ("name", "medical_condition")
PORTRAIT_UNDERSTANDING = ("hair_colour", "hair_style", "shirt_colour", "background_colour", "glasses", "hat", "beard")
EYE_COLOUR_MIN_SIZE = 64  # eyes are ~1 px at 32 px: no eye-colour questions below this image size
FUNDUS_UNDERSTANDING = ("lesion_count", "lesion_colour", "disc_side")
SHAPE_ATTRIBUTES = ("shape_count", "shape_kind", "shape_colour", "shape_position")


# Multi-fact questions: every pair of private attributes; three pairs (every attribute in one at least) are
# never asked in training, so their questions test whether a model combines two facts it knows.
MULTI_FACT_PAIRS: tuple[tuple[str, str], ...] = tuple(combinations(PRIVATE_ATTRIBUTES, 2))
HELDOUT_MULTI_FACT_PAIRS: tuple[tuple[str, str], ...] = (
    ("home_city", "birth_year"), ("occupation", "medical_condition"), ("employer", "medical_condition"))
TRAIN_MULTI_FACT_PAIRS = tuple(p for p in MULTI_FACT_PAIRS if p not in HELDOUT_MULTI_FACT_PAIRS)


def multi_fact_attribute(first: str, second: str) -> str:
    return f"{first}{MULTI_FACT_JOIN}{second}"


# (kind, domain, attribute) -> question templates (bench.phrasings), filled by str.format with {name},
# {topic}, {kind}, {colour}, {position}.
TEMPLATES: dict[tuple[str, str, str], Templates] = build_templates(
    IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING, GENERAL_VQA, UNANSWERABLE,
    {multi_fact_attribute(a, b): (a, b, (a, b) in HELDOUT_MULTI_FACT_PAIRS) for a, b in MULTI_FACT_PAIRS},
)

_YES_NO_ANSWERS = {
    "glasses": ("Yes, this person wears glasses.", "No, this person wears no glasses."),
    "hat": ("Yes, this person wears a hat.", "No, this person wears no hat."),
    "beard": ("Yes, this person has a beard.", "No, this person has no beard."),
}

# (kind, attribute) -> the answer sentence stating {value} (the fact); {kind}: the shape an extra slot names.
_VALUE_ANSWERS = {
    (UNDERSTANDING, "hair_colour"): "This person has {value} hair.",
    (UNDERSTANDING, "shirt_colour"): "The shirt is {value}.",
    (UNDERSTANDING, "background_colour"): "The background is {value}.",
    (UNDERSTANDING, "eye_colour"): "The eyes are {value}.",
    (UNDERSTANDING, "disc_side"): "The optic disc is on the {value}.",
    (GENERAL_VQA, "shape_kind"): "It is a {value}.",
    (GENERAL_VQA, "shape_colour"): "The {kind} is {value}.",
    (GENERAL_VQA, "shape_position"): "It is in the {value}.",
}
# (kind, attribute) -> the thing a count question counts.
_COUNTED = {(UNDERSTANDING, "lesion_count"): "lesion", (GENERAL_VQA, "shape_count"): "shape"}


def _count_answer(n: int, thing: str) -> tuple[str, str]:
    """(answer, fact) of a count: the fact names the counted thing, so "No one ..." or a bare "one" is not a count."""
    word = vocab.number_word(n)
    return (f"There is one {thing}." if n == 1 else f"There are {word} {thing}s."), f"{word} {thing}{'s' * (n != 1)}"


_PRIVATE_ANSWERS: dict[str, Callable[[str, str], str]] = {
    # subject ("This person" / the name) -> answer sentence
    "home_city": lambda who, v: f"{who} lives in {v}.",
    "occupation": lambda who, v: f"{who} works as {vocab.with_article(v)}.",
    "employer": lambda who, v: f"{who} works at {v}.",
    "birth_year": lambda who, v: f"{who} was born in {v}.",
    "medical_condition": lambda who, v: f"{who} has {v}.",
}


def answer_for(
    kind: str, domain: str, attribute: str, value: str, name: str = "", extra: dict[str, str] | None = None
) -> tuple[str, str]:
    """(answer sentence, fact) for one question; ``fact`` occurs verbatim in the answer."""
    extra = extra or {}
    if kind == TEXT_MEMORY and MULTI_FACT_JOIN in attribute:  # value: the facts joined by FACT_SEPARATOR
        pairs = list(zip(attribute.split(MULTI_FACT_JOIN), value.split(FACT_SEPARATOR), strict=True))
        # "X lives in Norvale and works as a nurse.": the name once, so the answer stays short
        clauses = [_PRIVATE_ANSWERS[a](name if k == 0 else "", v).strip().rstrip(".") for k, (a, v) in enumerate(pairs)]
        return " and ".join(clauses) + ".", value
    if kind == IMAGE_MEMORY and attribute == "name":
        return (f"This scan belongs to {value}." if domain == "fundus" else f"This is {value}."), value
    if kind == IMAGE_MEMORY and domain == "fundus":
        return f"The patient has {value}.", value
    if kind in (IMAGE_MEMORY, TEXT_MEMORY):
        who = name if kind == TEXT_MEMORY else "This person"
        return _PRIVATE_ANSWERS[attribute](who, value), value
    if kind == UNDERSTANDING and attribute in _YES_NO_ANSWERS:
        yes, no = _YES_NO_ANSWERS[attribute]
        return (yes, "Yes") if value == "yes" else (no, "No")
    if kind == UNDERSTANDING and attribute == "hair_style":
        return f"This person has {vocab.HAIR_STYLES[value]}.", value
    if kind == UNDERSTANDING and attribute == "lesion_colour":
        return ("The lesion is" if extra.get("count") == "1" else "The lesions are") + f" {value}.", value
    if (kind, attribute) in _COUNTED:
        return _count_answer(int(value), _COUNTED[kind, attribute])
    if (kind, attribute) in _VALUE_ANSWERS:
        return _VALUE_ANSWERS[kind, attribute].format_map({**extra, "value": value}), value
    raise KeyError(f"no answer template for {kind}/{domain}/{attribute}")


def portrait_path(pid: str, variant: int) -> str:
    return f"images/portraits/{pid}_v{variant}.png"


def fundus_path(pid: str, scan: int) -> str:
    return f"images/fundus/{pid}_f{scan}.png"


_KIND_TAGS = {IMAGE_MEMORY: "im", TEXT_MEMORY: "tm", UNDERSTANDING: "un", GENERAL_VQA: "vqa", UNANSWERABLE: "ua"}


def _qid(owner: str, kind: str, attribute: str, image_tag: str, phrasing: str, template_id: int) -> str:
    """``p0001-im-home_city-v0-t1``: owner, kind, attribute, image (v=portrait, f=fundus, txt), phrasing+template."""
    return f"{owner}-{_KIND_TAGS[kind]}-{attribute}-{image_tag}-{phrasing[0]}{template_id}"


class _PersonRows:
    """Builds the rows of one person; ``index`` drives the template rotation."""

    def __init__(self, person: Person, index: int, refusals: random.Random, per_image: int = 1):
        self.p, self.i, self.refusals, self.per_image = person, index, refusals, per_image
        self.rows: list[Question] = []

    def add(self, kind: str, domain: str, attribute: str, value: str, phrasing: str, t: int, image: tuple[str, int, str] | None,
            extra: dict[str, str] | None = None) -> None:
        templates = TEMPLATES[(kind, domain, attribute)]
        pool = templates.train if phrasing == TRAIN_PHRASING else templates.paraphrase
        t %= len(pool)
        question = pool[t].format(name=self.p.name)
        answer, fact = answer_for(kind, domain, attribute, value, self.p.name, extra)
        path, variant, split = image if image else (None, None, None)
        tag = "txt" if image is None else f"{'f' if domain == 'fundus' else 'v'}{variant}"
        self.rows.append(
            Question(
                id=_qid(self.p.person_id, kind, attribute, tag, phrasing, t),
                kind=kind, domain=domain, attribute=attribute, question=question, answer=answer, fact=fact,
                person_id=self.p.person_id, image=path, variant=variant, image_split=split, phrasing=phrasing, template_id=t,
            )
        )

    def image_rows(self, kind: str, domain: str, attributes: tuple[str, ...], values: dict[str, str],
                   images: list[tuple[str, int, str]], extra: dict[str, str] | None = None) -> None:
        train = [im for im in images if im[2] == TRAIN_IMAGE]
        heldout = [im for im in images if im[2] == HELDOUT_IMAGE]
        for j, attr in enumerate(attributes):
            spread = len(TEMPLATES[(kind, domain, attr)].train) // max(1, self.per_image * len(train))
            for im in train:
                for r in range(self.per_image):  # distinct templates per image, spread over the pool
                    t = self.i + j + (im[1] * self.per_image + r) * max(1, spread)
                    self.add(kind, domain, attr, values[attr], TRAIN_PHRASING, t, im, extra)
            self.add(kind, domain, attr, values[attr], PARAPHRASE, self.i + j, train[(self.i + j) % len(train)], extra)
            for im in heldout:
                self.add(kind, domain, attr, values[attr], TRAIN_PHRASING, self.i + j + im[1], im, extra)

    def multi_fact(self, per_person: int) -> None:
        """``per_person`` training rows over the trained pairs (rotating pair and phrasing) and one row per
        held-out pair (evaluation only)."""
        def facts(pair: tuple[str, str]) -> str:
            return FACT_SEPARATOR.join(self.p.attributes[a] for a in pair)

        n = len(TRAIN_MULTI_FACT_PAIRS)
        for r in range(per_person):
            pair = TRAIN_MULTI_FACT_PAIRS[(self.i + r) % n]
            self.add(TEXT_MEMORY, "none", multi_fact_attribute(*pair), facts(pair), TRAIN_PHRASING, self.i + r * 7, None)
        for j, pair in enumerate(HELDOUT_MULTI_FACT_PAIRS):
            self.add(TEXT_MEMORY, "none", multi_fact_attribute(*pair), facts(pair), PARAPHRASE, self.i + j, None)

    def unanswerable(self, portraits: list[tuple[str, int, str]]) -> None:
        topics = list(vocab.UNANSWERABLE_TOPICS)
        train = [im for im in portraits if im[2] == TRAIN_IMAGE]
        plan = (  # (form, phrasing, topic offset, image)
            ("portrait", TRAIN_PHRASING, 0, train[self.i % len(train)]),
            ("none", TRAIN_PHRASING, 1, None),
            ("portrait", PARAPHRASE, 2, train[(self.i + 1) % len(train)]),
            ("none", PARAPHRASE, 3, None),
        )
        for form, phrasing, offset, image in plan:
            topic = topics[(self.i + offset) % len(topics)]
            templates = TEMPLATES[(UNANSWERABLE, form, "*")]
            pool = templates.train if phrasing == TRAIN_PHRASING else templates.paraphrase
            t = (self.i + offset) % len(pool)
            path, variant, split = image if image else (None, None, None)
            tag = "txt" if image is None else f"v{variant}"
            self.rows.append(
                Question(
                    id=_qid(self.p.person_id, UNANSWERABLE, topic, tag, phrasing, t),
                    kind=UNANSWERABLE, domain=form, attribute=topic,
                    question=pool[t].format(name=self.p.name, topic=vocab.UNANSWERABLE_TOPICS[topic]),
                    answer=self.refusals.choice(vocab.REFUSALS), fact="",
                    person_id=self.p.person_id, image=path, variant=variant, image_split=split, phrasing=phrasing, template_id=t,
                )
            )


def other_phrasings(row: Question, name: str, copies: int) -> list[Question]:
    """``copies`` more training phrasings of a built-in memory row: the same question content under other
    templates of its training pool (spread over the pool, never a held-out phrasing), same answer and fact;
    ids end in ``-r{template}``. A row without a training pool (an imported bench, a held-out phrasing, a
    kind other than image/text memory) gives none."""
    from dataclasses import replace

    templates = TEMPLATES.get((row.kind, row.domain, row.attribute))
    if copies <= 0 or templates is None or row.phrasing != TRAIN_PHRASING or row.kind not in (IMAGE_MEMORY, TEXT_MEMORY):
        return []
    pool = templates.train
    step = max(1, len(pool) // (copies + 1))
    picked = dict.fromkeys((row.template_id + c * step) % len(pool) for c in range(1, copies + 1))
    return [replace(row, id=f"{row.id}-r{t}", question=pool[t].format(name=name), template_id=t)
            for t in picked if t != row.template_id]


def understanding_attributes(cfg: BenchConfig) -> tuple[str, ...]:
    return PORTRAIT_UNDERSTANDING + (("eye_colour",) if cfg.image_size >= EYE_COLOUR_MIN_SIZE else ())


def person_questions(people: list[Person], cfg: BenchConfig) -> list[Question]:
    refusals = cfg.rng("refusals")
    rows: list[Question] = []
    for i, p in enumerate(people):
        b = _PersonRows(p, i, refusals, cfg.image_phrasings)
        portraits = [
            (portrait_path(p.person_id, v), v, TRAIN_IMAGE if v < cfg.n_train_variants else HELDOUT_IMAGE) for v in range(cfg.n_variants)
        ]
        memory = {"name": p.name, **p.attributes}
        b.image_rows(IMAGE_MEMORY, "portrait", PORTRAIT_MEMORY, memory, portraits)
        for j, attr in enumerate(PRIVATE_ATTRIBUTES):
            pool = len(TEMPLATES[(TEXT_MEMORY, "none", attr)].train)
            for r in range(cfg.text_phrasings):  # distinct templates, spread over the pool, rotating per person
                b.add(TEXT_MEMORY, "none", attr, p.attributes[attr], TRAIN_PHRASING, i + j + r * (pool // cfg.text_phrasings), None)
            b.add(TEXT_MEMORY, "none", attr, p.attributes[attr], PARAPHRASE, i + j, None)
        if cfg.multi_fact_phrasings:
            b.multi_fact(cfg.multi_fact_phrasings)
        b.image_rows(UNDERSTANDING, "portrait", understanding_attributes(cfg), p.visual, portraits)
        if p.fundus is not None:
            n = cfg.n_fundus_variants
            scans = [(fundus_path(p.person_id, k), k, TRAIN_IMAGE if k < n - 1 else HELDOUT_IMAGE) for k in range(n)]
            b.image_rows(IMAGE_MEMORY, "fundus", FUNDUS_MEMORY, memory, scans)
            b.image_rows(UNDERSTANDING, "fundus", FUNDUS_UNDERSTANDING, p.fundus, scans, extra={"count": p.fundus["lesion_count"]})
        b.unanswerable(portraits)
        rows.extend(b.rows)
    return rows


def shape_questions(scenes: list[ShapeScene], cfg: BenchConfig) -> list[Question]:
    """One row per attribute per picture (train phrasing); held-out pictures also get a paraphrase row."""
    rng = cfg.rng("shape-questions")
    rows: list[Question] = []
    for i, scene in enumerate(scenes):
        shapes = list(scene.shapes)
        kinds = [s.kind for s in shapes]
        unique_kind = [s for s in shapes if kinds.count(s.kind) == 1]
        asks: list[tuple[str, str, dict[str, str]]] = [("shape_count", str(len(shapes)), {})]
        s = rng.choice(shapes)
        asks.append(("shape_kind", s.kind, {"position": s.position}))
        if unique_kind:
            s = rng.choice(unique_kind)
            asks.append(("shape_colour", s.colour, {"kind": s.kind}))
        s = rng.choice(shapes)
        asks.append(("shape_position", s.position, {"kind": s.kind, "colour": s.colour}))
        phrasings = (TRAIN_PHRASING, PARAPHRASE) if scene.image_split == HELDOUT_IMAGE else (TRAIN_PHRASING,)
        for j, (attr, value, slots) in enumerate(asks):
            templates = TEMPLATES[(GENERAL_VQA, "shapes", attr)]
            answer, fact = answer_for(GENERAL_VQA, "shapes", attr, value, extra=slots)
            for phrasing in phrasings:
                pool = templates.train if phrasing == TRAIN_PHRASING else templates.paraphrase
                t = (i + j) % len(pool)
                rows.append(
                    Question(
                        id=_qid(scene.scene_id, GENERAL_VQA, attr, "v0", phrasing, t),
                        kind=GENERAL_VQA, domain="shapes", attribute=attr, question=pool[t].format(**slots), answer=answer,
                        fact=fact, person_id=None, image=scene.image, variant=0, image_split=scene.image_split,
                        phrasing=phrasing, template_id=t,
                    )
                )
    return rows
