"""What every importer shares: decoding images once, the reference pool and few-shot anchor drawn from the
imported retain people, the counts, and writing the bench directory atomically (validated before it is
renamed into place, so a bad input never leaves a directory that looks complete).

An importer parses its input into :class:`ImportedData` (people, question rows, named forget splits,
image bytes) and raises :class:`smfa.errors.BenchError` naming the file and row of anything wrong;
:func:`write_imported_bench` does the rest. A source row whose short fact cannot be derived (a real
benchmark's answer stating none of the person's known values) is skipped and counted
(:meth:`RowCollector.skip`; ``bench.json`` ``"skipped"``, :func:`skipped_summary`), or under ``--strict``
stops the import.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smfa.bench.config import BenchConfig
from smfa.bench.layout import BENCH_JSON, PEOPLE_JSONL, QUESTIONS_JSONL, SPLITS_JSON, bench_checksum
from smfa.bench.schema import BENCH_VERSION, GENERAL_VQA, IMAGE_MEMORY, MEMORY_KINDS, TEXT_MEMORY, UNDERSTANDING, Person, Question, is_training_row
from smfa.errors import BenchError, ConfigError
from smfa.rundir import atomic_run_dir, write_json_atomic, write_jsonl_atomic, write_manifest

IMPORTED_PRESET = "imported"  # bench.json "preset" of every imported bench
# bench.json "import_version" of an imported bench (its "version" is the bench format every bench shares).
# 1 (the field absent): before memory rows had short facts; 2: every imported memory row's fact is a short value.
IMPORT_VERSION = 2
SKIPPED_SHOWN = 10  # locations of skipped rows kept in bench.json (the summary line prints the first 3)
DEFAULT_ANCHOR_SIZE = 48  # as the tiny preset's
# The built-in tiny bench's default share of retain people in the reference pool (one source of truth):
# an imported bench gets the same pool, so --reference self|self-full works on it unchanged.
DEFAULT_REFERENCE_SHARE: float = BenchConfig.reference_share
ANCHOR_KINDS = (IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING, GENERAL_VQA)


@dataclass(frozen=True)
class SkippedRow:
    """A source row left out because its short fact cannot be derived."""

    source: str  # the subset and column it came from ("Full_Set Generation_Task"): what the counts group by
    where: str  # its file, row and item, for the user to look at


@dataclass
class ImportedData:
    """A parsed input, before it is written: ``images`` maps a bench-relative path to the decoded RGB image."""

    people: list[Person]
    questions: list[Question]
    forget_splits: dict[str, list[str]]  # "forget_5" -> person ids
    images: dict[str, Any] = field(default_factory=dict)
    holdout: list[str] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)


@dataclass(frozen=True)
class ImportOptions:
    """Options every importer takes (``smfa bench import ... --help``)."""

    out: Path
    seed: int = 0  # seed of the reference pool and the anchor draw
    anchor_size: int = DEFAULT_ANCHOR_SIZE  # questions in the few-shot retain anchor D_r^few (fewer if fewer exist)
    reference_share: float = DEFAULT_REFERENCE_SHARE  # share of the retain people put into the reference pool
    image_size: int | None = None  # resize every image to a square of this side; None keeps the input size
    overwrite: bool = False
    progress: bool = True
    strict: bool = False  # a row whose short fact cannot be derived stops the import (default: skipped and counted)

    def validate(self) -> None:
        if self.anchor_size < 0:
            raise ConfigError(f"--anchor-size must be >= 0 (got {self.anchor_size})")
        if not 0.0 <= self.reference_share < 1.0:
            raise ConfigError(f"--reference-share must be in [0, 1) (got {self.reference_share})")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"--image-size must be >= 8 px (got {self.image_size})")


def decode_image(data: Any, where: str):
    """``data`` (bytes, or an HF image struct ``{"bytes": ..., "path": ...}``) as an RGB ``PIL.Image``;
    :class:`BenchError` naming ``where`` when it is missing or cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, dict):
        data = data.get("bytes")
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise BenchError(f"{where}: no image bytes (found {type(data).__name__}); every row needs its image")
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            return img.convert("RGB")
    except UnidentifiedImageError as exc:
        raise BenchError(f"{where}: the image bytes cannot be decoded (not an image format Pillow reads); replace "
                         "or re-download the file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BenchError(f"{where}: the image bytes cannot be decoded ({exc}); replace or re-download the file") from exc


def image_name(person_id: str, data_key: str) -> str:
    """A stable bench-relative path for one image of ``person_id`` (``data_key`` tells its images apart)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in person_id) or "person"
    digest = hashlib.sha256(f"{person_id}\0{data_key}".encode()).hexdigest()[:10]
    return f"images/{safe}/{digest}.png"


class RowCollector:
    """Collects an importer's question rows (refusing a repeated id), its decoded images (each distinct
    image once, under :func:`image_name`) and the rows it skips (``strict``: it stops at the first instead)."""

    def __init__(self, data: ImportedData, strict: bool = False):
        self.data = data
        self.strict = strict
        self.ids: set[str] = set()

    def skip(self, source: str, where: str, problem: str) -> None:
        """Leave out the row at ``where`` (from ``source``, a subset and column) whose short fact cannot be
        derived: counted in ``data.skipped``, or with ``strict`` a :class:`BenchError` of ``where`` and
        ``problem`` (what is wrong and what to do)."""
        if self.strict:
            raise BenchError(f"{where}: {problem} (without --strict such a row is skipped and counted)")
        self.data.skipped.append(SkippedRow(source=source, where=where))

    def image(self, person_id: str, raw: Any, where: str) -> str:
        """Decode ``raw`` (bytes or an HF image struct) and return its bench-relative path."""
        img = decode_image(raw, where)
        key = raw.get("bytes") if isinstance(raw, dict) else raw
        rel = image_name(person_id, hashlib.sha256(bytes(key)).hexdigest())
        self.data.images.setdefault(rel, img)
        return rel

    def add(self, **fields: Any) -> None:
        """Append a :class:`Question` built from ``fields``."""
        if fields["id"] in self.ids:
            raise BenchError(f"question id {fields['id']} appears twice; question ids must be unique")
        self.ids.add(fields["id"])
        self.data.questions.append(Question(**fields))


def unique(ids: list[str], what: str, where: str) -> list[str]:
    """``ids`` unchanged, or a :class:`BenchError` naming the first duplicate."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise BenchError(f"{where}: {what} {i!r} appears twice; ids must be unique")
        seen.add(i)
    return ids


def check_split_people(name: str, ids: list[str], people: dict[str, Person], where: str) -> None:
    """Every id of split ``name`` is a known person of the input."""
    for pid in ids:
        if pid not in people:
            raise BenchError(f"{where}: split {name} names {pid!r}, who is not among the people of the input")
        if people[pid].role != "known":
            raise BenchError(f"{where}: split {name} names {pid!r}, whose role is {people[pid].role!r}; only people "
                             "the vanilla is trained on can be forgotten")


def draw_reference(retain: list[str], share: float, seed: int) -> list[str]:
    """``round(share · |retain|)`` retain people, drawn deterministically: the reference pool. At least one
    retain person stays out of it, so a small input still has someone to compute retain metrics on."""
    n = min(round(len(retain) * share), max(len(retain) - 1, 0))
    return sorted(random.Random(f"reference/{seed}").sample(sorted(retain), n)) if n else []


def draw_anchor(questions: list[Question], eligible: set[str], size: int, seed: int) -> list[str]:
    """Up to ``size`` trainable training-row ids of ``eligible`` people (and general VQA), spread evenly over
    the kinds the bench has, drawn deterministically: the few-shot retain anchor ``D_r^few``. At most a quarter
    of the eligible rows: anchor rows leave the evaluation sets, and the anchor is meant to be *few*."""
    rng = random.Random(f"anchor/{seed}")
    pools = {
        kind: [q.id for q in questions
               if q.kind == kind and is_training_row(q) and (q.person_id in eligible or kind == GENERAL_VQA)]
        for kind in ANCHOR_KINDS
    }
    pools = {k: v for k, v in pools.items() if v}
    size = min(size, sum(len(v) for v in pools.values()) // 4)
    picked: list[str] = []
    kinds = list(pools)
    for k, kind in enumerate(kinds):
        share = size // len(kinds) + (1 if k < size % len(kinds) else 0) if kinds else 0
        picked += rng.sample(pools[kind], min(share, len(pools[kind])))
    return sorted(picked)


def count_imported(people: list[Person], questions: list[Question], splits: dict[str, list[str]]) -> dict[str, Any]:
    """People per role and split, questions per kind × format, training/evaluation rows."""
    forget = {n: len(v) for n, v in splits.items() if n.startswith("forget_")}
    return {
        "people": {"total": len(people), **dict(sorted(Counter(p.role for p in people).items())), **forget,
                   "reference": len(splits["reference"])},
        "questions": {f"{kind}/{fmt}": n for (kind, fmt), n in sorted(Counter((q.kind, q.format) for q in questions).items())},
        "rows": {"total": len(questions), "trainable": sum(1 for q in questions if q.trainable),
                 "evaluation_only": sum(1 for q in questions if not q.trainable)},
        "anchor": {"size": len(splits["anchor"])},
        "images": len({q.image for q in questions if q.image}),
    }


def count_skipped(skipped: list[SkippedRow], root: str) -> dict[str, Any]:
    """``bench.json``'s ``"skipped"``: the rows left out without a short fact, per source (subset and column),
    and where the first :data:`SKIPPED_SHOWN` are (paths relative to the input folder ``root``)."""
    return {"rows": len(skipped), "by_source": dict(Counter(s.source for s in skipped)),
            "first": [s.where.removeprefix(f"{root}/") for s in skipped[:SKIPPED_SHOWN]]}


def skipped_summary(meta: dict[str, Any]) -> str | None:
    """One line on the rows an import skipped (``meta``: its ``bench.json``); ``None`` when it skipped none."""
    skipped = meta.get("skipped") or {}
    if not skipped.get("rows"):
        return None
    by_source = ", ".join(f"{name} {n}" for name, n in skipped["by_source"].items())
    rows = f"{skipped['rows']} row" + ("s" if skipped["rows"] != 1 else "")
    return (f"warning: skipped {rows} whose short fact cannot be derived (the answer states none of the "
            f"person's known values, so no leak could be read on it): {by_source}; first: {'; '.join(skipped['first'][:3])} "
            f"(in {meta['source'].get('input')}; counted in bench.json \"skipped\"); --strict stops at the first and "
            "says how to fix it")


def write_imported_bench(data: ImportedData, opts: ImportOptions, source: dict[str, Any]) -> dict[str, Any]:
    """Draw the reference pool and anchor, write the bench directory ``opts.out`` atomically and validate it
    before it appears. ``source`` (``format``, ``input`` and what was read) goes into ``bench.json``, with
    the rows the parse skipped (:func:`count_skipped`)."""
    from tqdm.auto import tqdm

    from smfa.bench.validate import read_bench

    opts.validate()
    by_id = {p.person_id: p for p in data.people}
    forgotten = {pid for ids in data.forget_splits.values() for pid in ids}
    retain = [p.person_id for p in data.people if p.role == "known" and p.person_id not in forgotten]
    reference = draw_reference(retain, opts.reference_share, opts.seed)
    eligible = set(retain) - set(reference)
    anchor = draw_anchor(data.questions, eligible, opts.anchor_size, opts.seed)
    splits = {**{k: sorted(v) for k, v in data.forget_splits.items()}, "holdout": sorted(data.holdout),
              "reference": reference, "anchor": anchor}
    for name, ids in splits.items():
        if name != "anchor":
            for pid in ids:
                if pid not in by_id:
                    raise BenchError(f"split {name} names {pid!r}, who is not among the imported people")
    config = {"source": source["format"], "seed": opts.seed, "anchor_size": opts.anchor_size,
              "reference_share": opts.reference_share}
    if opts.image_size is not None:
        config["image_size"] = opts.image_size  # the tiny model reads its image size from here
    with atomic_run_dir(Path(opts.out), overwrite=opts.overwrite) as tmp:
        for rel, img in tqdm(sorted(data.images.items()), desc="writing images", unit="img", disable=not opts.progress):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if opts.image_size is not None and img.size != (opts.image_size, opts.image_size):
                img = img.resize((opts.image_size, opts.image_size))
            img.save(path, format="PNG", optimize=False)
        write_jsonl_atomic(tmp / PEOPLE_JSONL, [p.to_dict() for p in data.people])
        write_jsonl_atomic(tmp / QUESTIONS_JSONL, [q.to_dict() for q in data.questions])
        write_json_atomic(tmp / SPLITS_JSON, splits)
        meta = {
            "version": BENCH_VERSION,
            "import_version": IMPORT_VERSION,
            "name": f"imported from {source['format']} ({source.get('input', '')})",
            "preset": IMPORTED_PRESET,
            "seed": opts.seed,
            "config": config,
            "source": source,
            "files": {"people": PEOPLE_JSONL, "questions": QUESTIONS_JSONL, "splits": SPLITS_JSON, "images": "images/"},
            "counts": count_imported(data.people, data.questions, splits),
            "skipped": count_skipped(data.skipped, str(source.get("input", ""))),
            "checksum": bench_checksum(tmp),
        }
        write_json_atomic(tmp / BENCH_JSON, meta)
        write_manifest(tmp, "bench-import", {**config, "out": str(opts.out)}, checksum=meta["checksum"], counts=meta["counts"])
        read_bench(tmp)  # the same checks every later stage runs; a failure removes the whole directory
    return meta


def memory_kind(has_image: bool) -> str:
    """Image memory when the question comes with the person's photo, text memory otherwise."""
    return IMAGE_MEMORY if has_image else TEXT_MEMORY


__all__ = [
    "DEFAULT_REFERENCE_SHARE",
    "IMPORTED_PRESET",
    "IMPORT_VERSION",
    "ImportOptions",
    "ImportedData",
    "RowCollector",
    "MEMORY_KINDS",
    "SkippedRow",
    "check_split_people",
    "count_imported",
    "count_skipped",
    "decode_image",
    "draw_anchor",
    "draw_reference",
    "image_name",
    "memory_kind",
    "skipped_summary",
    "unique",
    "write_imported_bench",
]
