"""The row types of S-MLLMUn Bench and the names every later stage uses.

A bench directory holds ``people.jsonl`` (one :class:`Person` per line), ``questions.jsonl`` (one
:class:`Question` per line, image paths relative to the bench directory), ``splits.json`` and
``bench.json``. ``questions.jsonl`` loads with ``datasets.load_dataset("json", ...)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from smfa.errors import ConfigError

BENCH_VERSION = "2.0"  # 2.0: many phrasings per fact, held-out frames, counts name their noun
PAIRS_BENCH_VERSION = "3.0"  # 3.0: a 2.0 bench with planted neighbour pairs (BenchConfig.neighbour_pairs > 0)
BENCH_VERSIONS = (BENCH_VERSION, PAIRS_BENCH_VERSION)  # the versions this smfa reads

# Question kinds.
IMAGE_MEMORY = "image_memory"  # image of a person (portrait or fundus scan) + question about a private fact
TEXT_MEMORY = "text_memory"  # no image; the person is named in the question
UNDERSTANDING = "understanding"  # image of a person + question about what is visible (label from the renderer)
GENERAL_VQA = "general_vqa"  # shapes image unrelated to people
UNANSWERABLE = "unanswerable"  # question the profile cannot answer; answered with a refusal (teaches refusal wording)
KINDS = (IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING, GENERAL_VQA, UNANSWERABLE)
MEMORY_KINDS = (IMAGE_MEMORY, TEXT_MEMORY)
PERSON_KINDS = (IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING)

# Answer formats (how a question is asked and scored). Imported benchmarks bring the last two.
GENERATION = "generation"  # free answer, scored by fact matching, ROUGE-L and the judge
CHOICE = "choice"  # multiple choice: ``options`` letter -> text, ``answer``/``fact`` = the correct letter; evaluation only
CLOZE = "cloze"  # fill in the blank: ``fact`` = the missing words; evaluation only
FORMATS = (GENERATION, CHOICE, CLOZE)

# Roles of a person. "known": in vanilla training; "holdout": never trained on (membership-inference
# negatives); "external": never fine-tuned on but possibly known from pre-training (MLLMU-Bench's real
# celebrities), evaluated as their own group ``external``.
ROLES = ("known", "holdout", "external")
EXTERNAL_GROUP = "external"

# Visual domains of an image.
DOMAINS = ("portrait", "fundus", "shapes", "none")

# Phrasings: the templates used in training, and held-out paraphrase templates (evaluation only).
TRAIN_PHRASING = "train"
PARAPHRASE = "paraphrase"

# Multi-fact questions ask two private facts at once ("Where does X live and what does X do for a living?").
# Their attribute joins the asked attributes ("home_city+occupation") and their fact joins the facts
# ("Norvale | nurse"): an answer states it when it states every part and leaks it when it states any.
MULTI_FACT_JOIN = "+"
FACT_SEPARATOR = " | "
MULTI_FACT = "multi_fact"  # eval-set variant: pairs of facts never asked together in training

# Image splits: variants used in training, and held-out variants (evaluation only).
TRAIN_IMAGE = "train"
HELDOUT_IMAGE = "heldout"

# Forget splits by person. Nested: forget_5 ⊂ forget_10 ⊂ forget_15. ``val`` is a disjoint
# validation forget set (same size as forget_10) used only for hyper-parameter search.
FORGET_SPLITS = ("5", "10", "15", "val")

# Whose rows a fine-tune trains on: everyone known (the vanilla) or the retain people only (the oracle).
TRAINING_PEOPLE = ("all", "retain")

# Unlearning settings (``--target``): what is forgotten about the forget people.
TARGETS = ("all", "visual")
FORGET_GROUP = "forget"  # eval-set group of the forget people
KEPT_TEXT_GROUP = "forget_text"  # visual setting: the forget people's name-only questions, kept


def forgotten_kinds(target: str) -> tuple[str, ...]:
    """The setting rule: the memory kinds forgotten in setting ``target``. ``all``: image and text memory
    (everything about the forget people); ``visual`` (MMUnlearner's setting): image memory only, so the
    forget people's name-only (text memory) questions are knowledge to keep (see :func:`text_memory_group`)."""
    if target not in TARGETS:
        raise ConfigError(f"unknown unlearning setting {target!r}; use one of {', '.join(TARGETS)}")
    return MEMORY_KINDS if target == "all" else (IMAGE_MEMORY,)


def text_memory_group(target: str) -> str:
    """Where the forget people's name-only questions go: eval-set group ``forget`` when the setting forgets
    text memory, else ``forget_text`` (kept knowledge, scored like retain; in training, anchor rows)."""
    return FORGET_GROUP if TEXT_MEMORY in forgotten_kinds(target) else KEPT_TEXT_GROUP


def name_memory_set(target: str) -> str:
    """The evaluation set that reports the forget people's name-only knowledge in setting ``target``:
    ``forget/text_memory`` where it is forgotten (``all``); in ``visual``, where it is kept and its
    training-phrasing rows are the methods' anchor, their held-out phrasings
    ``forget_text/text_memory/paraphrase`` — kept knowledge is read on rows no method trained on."""
    group = text_memory_group(target)
    return f"{group}/{TEXT_MEMORY}" if group == FORGET_GROUP else f"{group}/{TEXT_MEMORY}/{PARAPHRASE}"


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str
    attributes: dict[str, str]  # private facts: home_city, occupation, employer, birth_year, medical_condition
    visual: dict[str, str]  # identifying visible features of the portrait (renderer ground truth)
    fundus: dict[str, str] | None = None  # for patients: lesion_count, lesion_colour, disc_side, diagnosis
    role: str = "known"  # one of ROLES: "known" (in vanilla training), "holdout" (never trained on), "external"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Question:
    id: str
    kind: str  # one of KINDS
    domain: str  # one of DOMAINS
    attribute: str  # "name", "home_city", "hair_colour", "shape_count", "refusal", ...
    question: str
    answer: str  # the full reference answer (a short sentence)
    fact: str  # the key fact inside the answer (what leak/fact matching looks for); "" for refusals
    person_id: str | None = None
    image: str | None = None  # path relative to the bench directory
    variant: int | None = None  # image variant index
    image_split: str | None = None  # TRAIN_IMAGE | HELDOUT_IMAGE | None (no image)
    phrasing: str = TRAIN_PHRASING  # TRAIN_PHRASING | PARAPHRASE
    template_id: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    format: str = GENERATION  # one of FORMATS; choice and cloze rows are never trained on
    options: dict[str, str] | None = None  # choice rows: option letter -> option text ("A" -> "Norvale")
    trainable: bool = True  # False: an evaluation-only row (imported benchmark questions), never in training data

    @property
    def has_image(self) -> bool:
        return self.image is not None

    def to_dict(self) -> dict[str, Any]:
        """The row as written to ``questions.jsonl``. The imported-benchmark fields (``format``, ``options``,
        ``trainable``) are left out at their defaults, so a built-in bench's files (and checksums) are unchanged."""
        out = asdict(self)
        for name, default in _OPTIONAL_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        return out


_OPTIONAL_DEFAULTS: dict[str, Any] = {"format": GENERATION, "options": None, "trainable": True}


def eval_set_name(group: str, kind: str, variant: str = "", fmt: str = GENERATION) -> str:
    """``forget/image_memory``, ``retain/text_memory/paraphrase``, ``forget/understanding/unseen_image``; a
    choice or cloze set ends with its format: ``forget/image_memory/choice``, ``retain/text_memory/paraphrase/cloze``."""
    return f"{group}/{kind}" + (f"/{variant}" if variant else "") + (f"/{fmt}" if fmt != GENERATION else "")


def is_training_row(q: Question) -> bool:
    """Whether ``q`` is a training row (what a vanilla trains on, and ``D_f`` / ``D_r^few`` are drawn from): a
    trainable generation row in a training phrasing, on a training image or none."""
    return q.trainable and q.format == GENERATION and q.phrasing == TRAIN_PHRASING and q.image_split != HELDOUT_IMAGE


def is_multi_fact(q: Question) -> bool:
    """Whether ``q`` asks several facts at once (its attribute joins them with :data:`MULTI_FACT_JOIN`)."""
    return MULTI_FACT_JOIN in q.attribute


def fact_parts(fact: str) -> list[str]:
    """The parts of ``fact``: ``"Norvale | nurse"`` → ``["Norvale", "nurse"]``; a plain fact is one part;
    empty parts are dropped."""
    return [part.strip() for part in fact.split(FACT_SEPARATOR) if part.strip()]


# The fact of a row: what accuracy and leak matching look for. A free-answer memory question must state its
# fact (the short private value, never the whole answer sentence: with the sentence as the fact, a terse
# "Norvale." would count as neither correct nor a leak); another row defaults to its whole (short) answer,
# an unanswerable one to "" (its correct answer is a refusal). Every part of a fact occurs in the answer.
# The rule of bench validation, the importers and the user's probes (smfa eval --questions).
def requires_fact(kind: str, fmt: str = GENERATION) -> bool:
    """Whether a row of ``kind`` and format ``fmt`` must state its fact (see above)."""
    return fmt == GENERATION and kind in MEMORY_KINDS


def default_fact(kind: str, answer: str) -> str:
    """The fact of a row that states none (one that :func:`requires_fact` lets go without)."""
    return "" if kind == UNANSWERABLE else answer


def fact_missing_from(fact: str, answer: str) -> str | None:
    """The first part of ``fact`` (:func:`fact_parts`) that ``answer`` does not contain; None when all occur."""
    return next((part for part in fact_parts(fact) if part not in answer), None)


def eval_variant(q: Question) -> str | None:
    """Which eval-set variant a row belongs to: "" (train phrasing, training image or text),
    "paraphrase" (paraphrase, training image or text), "unseen_image" (train phrasing, held-out image),
    "multi_fact" (a held-out pair of facts asked in one question); ``None`` for a paraphrase on a held-out
    image and for the trained multi-fact pairs (in no set: training rows)."""
    if is_multi_fact(q):
        return MULTI_FACT if q.phrasing == PARAPHRASE else None
    if q.phrasing == TRAIN_PHRASING:
        return "unseen_image" if q.image_split == HELDOUT_IMAGE else ""
    return "paraphrase" if q.image_split != HELDOUT_IMAGE else None
