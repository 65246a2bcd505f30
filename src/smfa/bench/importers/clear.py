"""``smfa bench import clear DIR``: CLEAR (arXiv 2410.18057; hub dataset ``therem/CLEAR``) as a bench directory.

CLEAR pairs TOFU's fictitious authors with generated face images. Its card's parquet subsets, as read here:

| subset | columns read | becomes |
|---|---|---|
| ``full`` | ``image``, ``caption``, ``name`` | the people (one per distinct ``name``, role ``known``) and their training rows |
| ``forget01``, ``forget05``, ``forget10`` | ``name`` | splits ``forget_1``, ``forget_5``, ``forget_10`` (``--forget 1`` or ``--forget forget01``) |
| ``retain99``, ``retain95``, ``retain90`` | ``name`` | checked: each must hold exactly the people outside its forget split |
| ``forget01_perturbed`` …, ``retain_perturbed`` | ``image``, ``caption``, ``name``, ``perturbed_captions``, ``perturbed_names`` | multiple-choice probes (evaluation only) |

Per image of ``full`` two image-memory rows are trained on and evaluated: "Who is the person in this image?"
→ "This is NAME." (fact: the name) and "Describe this image." → the caption (fact: the person's name as the
caption writes it, :func:`caption_fact`; a caption naming no part of the person is never scored on the whole
caption: its row is skipped and counted, or with ``--strict`` the import stops there). From a ``*_perturbed``
row two choice questions are built, the correct name or caption among its perturbed ones, in an order drawn
from the seed.

Not imported, and why: ``*+tofu`` subsets add TOFU's text QA, whose rows carry no ``name`` column to tie a
question to a person; ``real_faces`` / ``real_world`` are real-world utility sets whose schema the card does
not describe.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from smfa.bench.importers.common import ImportedData, ImportOptions, RowCollector
from smfa.bench.importers.facts import derive_fact
from smfa.bench.importers.parquet import has_subset, import_parquet_folder, read_subset
from smfa.bench.schema import CHOICE, IMAGE_MEMORY, TRAIN_IMAGE, Person
from smfa.errors import BenchError

RATIOS = ((1, "forget01", "retain99"), (5, "forget05", "retain95"), (10, "forget10", "retain90"))
PERTURBED = ("forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed")
NAME_QUESTION = "Who is the person in this image?"
CAPTION_QUESTION = "Describe this image."
LETTERS = "ABCDEFGHIJ"


def _person_id(name: str) -> str:
    return "_".join(name.split())


def _names(root: Path, subset: str, people: dict[str, Person]) -> list[str]:
    ids: list[str] = []
    for where, row in read_subset(root, subset, ("name",)):
        pid = _person_id(str(row["name"] or ""))
        if pid not in people:
            raise BenchError(f"{where}: name {row['name']!r} is not in the full subset")
        if pid not in ids:
            ids.append(pid)
    return ids


def caption_fact(caption: str, name: str) -> str | None:
    """The fact of a caption row: the person's name as the caption writes it — the whole name, else its
    longest runs of consecutive name words (a single word of at least 3 letters), matched in the name's letter
    case ("Rose" the name, not "a rose"), joined by `` | ``. ``None`` for a caption naming no part of the
    person: its only private value would be the whole caption."""
    words = name.split()
    runs = [" ".join(words[a:b]) for a in range(len(words)) for b in range(a + 1, len(words) + 1)]
    return derive_fact(caption, CAPTION_QUESTION, [r for r in runs if " " in r or len(r) >= 3], ignore_case=False)


def _choice(rng: random.Random, correct: str, wrong: list[str]) -> tuple[dict[str, str], str]:
    texts = [correct] + [w for w in dict.fromkeys(wrong) if w and w != correct][: len(LETTERS) - 1]
    rng.shuffle(texts)
    options = {LETTERS[i]: t for i, t in enumerate(texts)}
    return options, next(k for k, v in options.items() if v == correct)


def parse_clear(root: Path, seed: int = 0, strict: bool = False) -> ImportedData:
    """Read CLEAR's parquet subsets under ``root`` into :class:`ImportedData` (see the module docstring);
    ``strict``: a caption naming no part of its person stops the import instead of being skipped."""
    data = ImportedData(people=[], questions=[], forget_splits={})
    rows = RowCollector(data, strict=strict)
    people: dict[str, Person] = {}
    full = read_subset(root, "full", ("image", "caption", "name"))
    for i, (where, row) in enumerate(full):
        name, caption = str(row["name"] or "").strip(), str(row["caption"] or "").strip()
        if not name or not caption:
            raise BenchError(f"{where}: empty name or caption")
        pid = _person_id(name)
        people.setdefault(pid, Person(person_id=pid, name=name, attributes={}, visual={}))
        image = rows.image(pid, row["image"], f"{where} ({name})")
        common = {"kind": IMAGE_MEMORY, "domain": "portrait", "person_id": pid, "image": image, "image_split": TRAIN_IMAGE}
        rows.add(id=f"full/{i}/name", attribute="name", question=NAME_QUESTION, answer=f"This is {name}.", fact=name, **common)
        fact = caption_fact(caption, name)
        if fact is None:
            rows.skip("full caption", where, f"the caption {caption!r} does not name {name!r}; a caption row's fact is "
                      "the person's name as the caption writes it: name the person in the caption or remove the row")
        else:
            rows.add(id=f"full/{i}/caption", attribute="caption", question=CAPTION_QUESTION, answer=caption, fact=fact,
                     **common)
    for ratio, forget, retain in RATIOS:
        if not has_subset(root, forget):
            continue
        ids = _names(root, forget, people)
        data.forget_splits[f"forget_{ratio}"] = ids
        if has_subset(root, retain):
            kept = set(_names(root, retain, people))
            expected = set(people) - set(ids)
            if kept != expected:
                raise BenchError(f"{root}/{retain} does not hold exactly the people outside {forget} "
                                 f"(e.g. {sorted(kept ^ expected)[0]!r})")
    if not data.forget_splits:
        raise BenchError(f"{root}: no forget01, forget05 or forget10 subset: nothing says whom to forget")
    for subset in PERTURBED:
        if not has_subset(root, subset):
            continue
        for i, (where, row) in enumerate(read_subset(root, subset, ("image", "caption", "name", "perturbed_captions", "perturbed_names"))):
            name = str(row["name"] or "").strip()
            pid = _person_id(name)
            if pid not in people:
                raise BenchError(f"{where}: name {name!r} is not in the full subset")
            image = rows.image(pid, row["image"], f"{where} ({name})")
            rng = random.Random(f"clear-choice/{seed}/{subset}/{i}")
            common = {"kind": IMAGE_MEMORY, "domain": "portrait", "person_id": pid, "image": image,
                      "image_split": TRAIN_IMAGE, "format": CHOICE, "trainable": False}
            for attribute, question, correct, wrong in (
                ("name", NAME_QUESTION, name, [str(x) for x in row["perturbed_names"] or []]),
                ("caption", CAPTION_QUESTION, str(row["caption"] or "").strip(), [str(x) for x in row["perturbed_captions"] or []]),
            ):
                options, letter = _choice(rng, correct, wrong)
                if len(options) < 2:
                    continue  # no perturbed alternative: not a choice
                text = question + "".join(f"\n{k}: {v}" for k, v in options.items())
                rows.add(id=f"{subset}/{i}/{attribute}", attribute=attribute, question=text, answer=letter, fact=letter,
                         options=options, **common)
    data.people = list(people.values())
    return data


def import_clear(root: str | Path, opts: ImportOptions) -> dict[str, Any]:
    """Import CLEAR from ``root`` into ``opts.out``; returns ``bench.json``'s content."""
    subsets = ("full", *(f for _, f, _ in RATIOS), *(r for _, _, r in RATIOS), *PERTURBED)
    return import_parquet_folder(root, opts, "clear", "CLEAR's subsets (full/, forget01/, ...)", subsets,
                                 lambda folder: parse_clear(folder, seed=opts.seed, strict=opts.strict))
