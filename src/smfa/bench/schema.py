"""The row types of S-MLLMUn Bench and the names every later stage uses.

A bench directory holds ``people.jsonl`` (one :class:`Person` per line), ``questions.jsonl`` (one
:class:`Question` per line, image paths relative to the bench directory), ``splits.json`` and
``bench.json``. ``questions.jsonl`` loads with ``datasets.load_dataset("json", ...)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

BENCH_VERSION = "2.0"  # 2.0: many phrasings per fact, held-out frames, counts name their noun

# Question kinds.
IMAGE_MEMORY = "image_memory"  # image of a person (portrait or fundus scan) + question about a private fact
TEXT_MEMORY = "text_memory"  # no image; the person is named in the question
UNDERSTANDING = "understanding"  # image of a person + question about what is visible (label from the renderer)
GENERAL_VQA = "general_vqa"  # shapes image unrelated to people
UNANSWERABLE = "unanswerable"  # question the profile cannot answer; answered with a refusal (teaches refusal wording)
KINDS = (IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING, GENERAL_VQA, UNANSWERABLE)
MEMORY_KINDS = (IMAGE_MEMORY, TEXT_MEMORY)
PERSON_KINDS = (IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING)

# Visual domains of an image.
DOMAINS = ("portrait", "fundus", "shapes", "none")

# Phrasings: the templates used in training, and held-out paraphrase templates (evaluation only).
TRAIN_PHRASING = "train"
PARAPHRASE = "paraphrase"

# Image splits: variants used in training, and held-out variants (evaluation only).
TRAIN_IMAGE = "train"
HELDOUT_IMAGE = "heldout"

# Forget splits by person. Nested: forget_5 ⊂ forget_10 ⊂ forget_15. ``val`` is a disjoint
# validation forget set (same size as forget_10) used only for hyper-parameter search.
FORGET_SPLITS = ("5", "10", "15", "val")

Target = Literal["all", "visual"]
TARGETS = ("all", "visual")

# Eval-set variants.
EVAL_VARIANTS = ("", "paraphrase", "unseen_image")


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str
    attributes: dict[str, str]  # private facts: home_city, occupation, employer, birth_year, medical_condition
    visual: dict[str, str]  # identifying visible features of the portrait (renderer ground truth)
    fundus: dict[str, str] | None = None  # for patients: lesion_count, lesion_colour, disc_side, diagnosis
    role: str = "known"  # "known" (appears in vanilla training) or "holdout" (never trained on)

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

    @property
    def has_image(self) -> bool:
        return self.image is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_set_name(group: str, kind: str, variant: str = "") -> str:
    """``forget/image_memory``, ``retain/text_memory/paraphrase``, ``forget/understanding/unseen_image``."""
    return f"{group}/{kind}" + (f"/{variant}" if variant else "")
