"""Fictitious profiles: a unique invented name, private attributes, a unique look, and (for patients) a
fundus record. Pure functions of the config; no I/O."""

from __future__ import annotations

import random
from collections.abc import Sequence

from smfa.bench import vocab
from smfa.bench.config import BenchConfig
from smfa.bench.schema import Person
from smfa.errors import ConfigError

PRIVATE_ATTRIBUTES = ("home_city", "occupation", "employer", "birth_year", "medical_condition")

# Features the renderer draws and the tiny 32 px model can see; every person has a unique combination,
# and any two people differ in at least ``min_visual_distance`` of them.
VISIBLE_FEATURES = ("background_colour", "shirt_colour", "hair_colour", "hair_style", "skin_tone", "glasses", "hat")
# Also drawn, but too small to identify anyone at 32 px (eye colour) or not part of the identity check.
EXTRA_FEATURES = ("eye_colour", "beard")
VISUAL_FEATURES = VISIBLE_FEATURES + EXTRA_FEATURES
FUNDUS_FEATURES = ("lesion_count", "lesion_colour", "disc_side", "diagnosis")

FEATURE_VALUES: dict[str, Sequence[str]] = {
    "background_colour": vocab.BACKGROUND_COLOURS,
    "shirt_colour": vocab.SHIRT_COLOURS,
    "hair_colour": tuple(vocab.HAIR_COLOURS),
    "hair_style": tuple(vocab.HAIR_STYLES),
    "skin_tone": tuple(vocab.SKIN_TONES),
    "glasses": vocab.YES_NO,
    "hat": vocab.YES_NO,
    "eye_colour": tuple(vocab.EYE_COLOURS),
    "beard": vocab.YES_NO,
}

ATTRIBUTE_POOLS: dict[str, Sequence[str]] = {
    "home_city": vocab.CITIES,
    "occupation": vocab.OCCUPATIONS,
    "employer": vocab.EMPLOYERS,
    "birth_year": vocab.BIRTH_YEARS,
    "medical_condition": vocab.MEDICAL_CONDITIONS,
}


def person_id(index: int) -> str:
    return f"p{index + 1:04d}"


def make_names(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct full names built from invented syllables."""
    firsts = [o + e for o in vocab.FIRST_ONSETS for e in vocab.FIRST_ENDINGS]
    firsts = [f for f in firsts if f not in vocab.REAL_NAME_BLOCKLIST]
    lasts = [s + x for s in vocab.LAST_STEMS for x in vocab.LAST_SUFFIXES]
    if n > len(firsts) * len(lasts) // 4:
        raise ConfigError(f"cannot invent {n} distinct names from the syllable pools; use fewer people")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def visual_distance(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """In how many places two looks' visible features (tuples in :data:`VISIBLE_FEATURES` order) differ."""
    return sum(x != y for x, y in zip(a, b))


def _neighbours(key: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every combination that differs from ``key`` in exactly one visible feature."""
    out = []
    for i, f in enumerate(VISIBLE_FEATURES):
        for v in FEATURE_VALUES[f]:
            if v != key[i]:
                out.append(key[:i] + (v,) + key[i + 1 :])
    return out


def make_looks(n: int, min_distance: int, rng: random.Random) -> list[dict[str, str]]:
    """``n`` looks whose visible features differ pairwise in at least ``min_distance`` places.

    Greedy rejection sampling over the product of the feature pools (10*10*6*4*5*2*2 = 48,000 visible
    combinations; a distance-2 code of well over 1,000 fits). Shirt and background never share a colour,
    so the shirt is always visible.
    """
    looks: list[dict[str, str]] = []
    keys: list[tuple[str, ...]] = []
    exact: set[tuple[str, ...]] = set()
    tries = 0
    while len(looks) < n:
        tries += 1
        if tries > 400 * n + 10_000:
            raise ConfigError(
                f"cannot draw {n} portraits that differ in >= {min_distance} visible features; "
                "lower min_visual_distance or n_people"
            )
        look = {f: rng.choice(list(FEATURE_VALUES[f])) for f in VISUAL_FEATURES}
        if look["shirt_colour"] == look["background_colour"]:
            continue
        key = tuple(look[f] for f in VISIBLE_FEATURES)
        if key in exact:
            continue
        if min_distance == 2 and any(nb in exact for nb in _neighbours(key)):
            continue
        if min_distance > 2 and any(visual_distance(key, k) < min_distance for k in keys):
            continue
        exact.add(key)
        keys.append(key)
        looks.append(look)
    return looks


def _fundus_record(rng: random.Random, diagnosis: str) -> dict[str, str]:
    return {
        "lesion_count": str(rng.choice(vocab.LESION_COUNTS)),
        "lesion_colour": rng.choice(list(vocab.LESION_COLOURS)),
        "disc_side": rng.choice(vocab.DISC_SIDES),
        "diagnosis": diagnosis,
    }


def make_people(cfg: BenchConfig) -> list[Person]:
    """All profiles, ordered by ``person_id``. Roles and patients are spread at random over the ids."""
    rng = cfg.rng("people")
    n = cfg.n_people
    names = make_names(n, cfg.rng("names"))
    looks = make_looks(n, cfg.min_visual_distance, cfg.rng("looks"))
    order = list(range(n))
    rng.shuffle(order)
    holdout = set(order[: cfg.n_holdout])
    # Patients: the same share among known and among holdout people.
    patients: set[int] = set()
    for group in (sorted(holdout), sorted(set(range(n)) - holdout)):
        group = list(group)
        rng.shuffle(group)
        patients.update(group[: max(1, round(len(group) * cfg.patient_share))])
    people = []
    for i in range(n):
        attrs = {a: rng.choice(list(pool)) for a, pool in ATTRIBUTE_POOLS.items()}
        fundus = None
        if i in patients:
            attrs["medical_condition"] = rng.choice(list(vocab.EYE_CONDITIONS))
            fundus = _fundus_record(rng, attrs["medical_condition"])
        people.append(
            Person(
                person_id=person_id(i),
                name=names[i],
                attributes=attrs,
                visual=looks[i],
                fundus=fundus,
                role="holdout" if i in holdout else "known",
            )
        )
    return people


def chance_levels() -> dict[str, float]:
    """Probability of guessing each attribute right by picking a pool value uniformly (bench.json ``chance``)."""
    chance = {a: 1 / len(pool) for a, pool in ATTRIBUTE_POOLS.items()}
    chance["diagnosis"] = 1 / len(vocab.EYE_CONDITIONS)  # patients' medical_condition comes from this pool
    chance.update({f: 1 / len(v) for f, v in FEATURE_VALUES.items()})
    chance["lesion_count"] = 1 / len(vocab.LESION_COUNTS)
    chance["lesion_colour"] = 1 / len(vocab.LESION_COLOURS)
    chance["disc_side"] = 1 / len(vocab.DISC_SIDES)
    chance["shape_kind"] = 1 / len(vocab.SHAPE_KINDS)
    chance["shape_colour"] = 1 / len(vocab.SHAPE_COLOURS)
    chance["shape_position"] = 1 / len(vocab.SHAPE_POSITIONS)
    chance["shape_count"] = 1 / 4
    return {k: round(v, 6) for k, v in chance.items()}
