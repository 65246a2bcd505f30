"""``BenchConfig``: every knob of the generator, with the two presets ``tiny`` and ``full``.

The same config and seed always produce byte-identical files (see :func:`smfa.bench.build.build_bench`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from smfa.errors import ConfigError


@dataclass(frozen=True)
class BenchConfig:
    """What to generate. Defaults are the ``tiny`` preset; ``full`` overrides the sizes."""

    preset: str = "tiny"  # the preset the values started from (recorded in bench.json)
    seed: int = 0  # decides every sampled value; same seed + config => byte-identical bench
    n_people: int = 200  # profiles in total, known + holdout
    holdout_share: float = 0.10  # share of people never trained on (membership-inference negatives)
    image_size: int = 32  # square side of every image in px; 32 for the tiny model, >= 224 for real MLLMs
    n_variants: int = 3  # portrait variants per person (shift, scale, lighting, small rotation/pose)
    n_heldout_variants: int = 1  # the last variants are held out (the "unseen_image" evaluation sets)
    patient_share: float = 0.22  # share of people (known and holdout alike) with fundus scans
    n_fundus_variants: int = 2  # fundus scans per patient; the last one is held out
    n_shape_images: int = 500  # general-VQA shape images
    shape_heldout_share: float = 0.20  # share of shape images held out for the general_vqa evaluation set
    image_phrasings: int = 2  # training rows per (person, fact, training image), each a different phrasing
    text_phrasings: int = 4  # training rows per (person, name-only fact), each a different phrasing
    multi_fact_phrasings: int = 0  # training rows per person asking two private facts at once (0: no multi-fact questions)
    anchor_size: int = 48  # |D_r^few|: the few-shot retain anchor (question ids in splits.json)
    anchor_vqa_share: float = 0.15  # share of general-VQA items in the anchor (keeps refusal off shapes)
    min_visual_distance: int = 2  # any two people differ in at least this many features visible at 32 px
    reference_share: float = 0.6  # share of the retain people in the reference pool (tiny: 81 of 135; docs/archive/selectivity.md); splits only
    # Share of forget_10's and forget_val's people given a planted name twin, and the same share a look twin, in
    # their retain evaluation pool (smfa.bench.pairs; bench version 3.0). 0: none (bench v2); the tiny preset plants.
    neighbour_pairs: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields, without ``neighbour_pairs`` when it is 0 (bench.json of a v2 bench as before the field)."""
        out = asdict(self)
        if not self.neighbour_pairs:
            del out["neighbour_pairs"]
        return out

    @property
    def n_holdout(self) -> int:
        return max(1, round(self.n_people * self.holdout_share))

    @property
    def n_known(self) -> int:
        return self.n_people - self.n_holdout

    @property
    def n_train_variants(self) -> int:
        return self.n_variants - self.n_heldout_variants

    @property
    def supersample(self) -> int:
        """Drawing scale: small images are drawn at >= 128 px and downsampled, so edges are anti-aliased."""
        ss = max(2, -(-128 // self.image_size))
        return ss + ss % 2  # even, so small images can be transformed at 2x (see render.Canvas.finish)

    def rng(self, stream: str) -> random.Random:
        """An independent, reproducible random stream (string seeds hash the same in every process)."""
        return random.Random(f"smfa-bench/{self.seed}/{stream}")

    def validate(self) -> BenchConfig:
        """Raise :class:`ConfigError` naming the bad field and a valid range."""

        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"bench config: {field}={getattr(self, field)!r} {why}")

        if self.preset not in PRESETS:
            raise bad("preset", f"is unknown; choose one of {', '.join(PRESETS)}")
        if not 40 <= self.n_people <= 5000:
            raise bad("n_people", "must be between 40 and 5000 (every forget split needs at least one person)")
        if not 0.02 <= self.holdout_share <= 0.5:
            raise bad("holdout_share", "must be between 0.02 and 0.5")
        if not 16 <= self.image_size <= 1024:
            raise bad("image_size", "must be between 16 and 1024 px (features are not recognisable below 16 px)")
        if self.n_heldout_variants < 1 or self.n_train_variants < 1:
            raise bad("n_variants", f"must leave at least one training and one held-out variant (n_heldout_variants={self.n_heldout_variants})")
        if self.n_variants > 12:
            raise bad("n_variants", "must be at most 12")
        if not 0.0 < self.patient_share <= 1.0:
            raise bad("patient_share", "must be in (0, 1]")
        if not 2 <= self.n_fundus_variants <= 6:
            raise bad("n_fundus_variants", "must be between 2 and 6 (one training scan and one held out at least)")
        if not 20 <= self.n_shape_images <= 100_000:
            raise bad("n_shape_images", "must be between 20 and 100000")
        if not 0.05 <= self.shape_heldout_share <= 0.5:
            raise bad("shape_heldout_share", "must be between 0.05 and 0.5")
        if not 1 <= self.image_phrasings <= 8:
            raise bad("image_phrasings", "must be between 1 and 8")
        if not 1 <= self.text_phrasings <= 8:
            raise bad("text_phrasings", "must be between 1 and 8")
        if not 0 <= self.multi_fact_phrasings <= 8:
            raise bad("multi_fact_phrasings", "must be between 0 and 8 (0: no multi-fact questions)")
        if not 0.0 <= self.anchor_vqa_share < 1.0:
            raise bad("anchor_vqa_share", "must be in [0, 1)")
        if not 0.0 <= self.reference_share <= 0.8:
            raise bad("reference_share", "must be between 0 and 0.8 (the rest of the retain people are the evaluation pool)")
        if self.min_visual_distance not in (1, 2, 3):
            raise bad("min_visual_distance", "must be 1, 2 or 3")
        if not 0.0 <= self.neighbour_pairs <= 1.0:
            raise bad("neighbour_pairs", "must be between 0 and 1 (the share of forget people given a name twin and a look twin)")
        if self.neighbour_pairs and self.min_visual_distance > 2:
            raise bad("min_visual_distance", "must be at most 2 with neighbour_pairs (a look twin differs in 2 of 7 visible features)")
        # The anchor is drawn from training rows of people in no forget/val/holdout split (~70% of known
        # people, 30+ rows each) and of training shape pictures (3-4 rows each): stay well inside both.
        max_anchor = min(4 * self.n_known, 2 * self.n_shape_images)
        if not 4 <= self.anchor_size <= max_anchor:
            raise bad("anchor_size", f"must be between 4 and {max_anchor} for {self.n_people} people (--anchor-size)")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    # CPU demo and tests: the tiny model (32 px CLIP, patch 8) learns to recognise these 200 people. Planted
    # neighbour pairs (bench v3): 10 name twins and 10 look twins for forget 10 and for val, so every neighbour
    # set holds >= 10 people (docs/neighbours.md); chance alone gives 2-13.
    "tiny": {"neighbour_pairs": 0.55},
    # Real MLLMs: 1,000 people at 336 px (LLaVA-1.5's input size); 3 training + 1 held-out variant.
    "full": {
        "n_people": 1000,
        "image_size": 336,
        "n_variants": 4,
        "n_shape_images": 2000,
        "anchor_size": 100,
    },
}


def preset_config(preset: str, **overrides: Any) -> BenchConfig:
    """The config of ``preset`` with ``overrides`` (``None`` values are ignored), validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown bench preset {preset!r}; choose one of {', '.join(PRESETS)}")
    names = {f.name for f in fields(BenchConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown bench config field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}")
    cfg = replace(BenchConfig(preset=preset), **PRESETS[preset])
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    return cfg.validate()
