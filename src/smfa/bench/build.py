"""``build_bench``: generate an S-MLLMUn Bench directory from a :class:`BenchConfig`.

Layout of the directory (written atomically: a killed build leaves no directory that looks complete)::

    bench.json        version, seed, preset, config, counts, chance levels, checksum
    people.jsonl      one Person per line
    questions.jsonl   one Question per line (image paths relative to the directory)
    splits.json       forget_5 / forget_10 / forget_15 / forget_val / holdout (person ids), anchor (question ids)
    images/portraits/p0001_v0.png, images/fundus/p0001_f0.png, images/shapes/s0001.png
    manifest.json     how and when it was built (package versions, command line)

The same config and seed give byte-identical files, whatever the number of rendering processes;
``manifest.json`` (build time, command line) is the one exception and is left out of the checksum.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from smfa.bench import profiles
from smfa.bench.config import BenchConfig
from smfa.bench.layout import BENCH_JSON, PEOPLE_JSONL, QUESTIONS_JSONL, SPLITS_JSON, bench_checksum
from smfa.bench.fundus import fundus_layout, fundus_views, render_fundus
from smfa.bench.pairs import plant_neighbour_pairs
from smfa.bench.portraits import portrait_views, render_portrait
from smfa.bench.questions import (
    FUNDUS_MEMORY,
    FUNDUS_UNDERSTANDING,
    PORTRAIT_MEMORY,
    SHAPE_ATTRIBUTES,
    fundus_path,
    person_questions,
    portrait_path,
    shape_questions,
    understanding_attributes,
)
from smfa.bench.render import write_png
from smfa.bench.schema import BENCH_VERSION, KINDS, PAIRS_BENCH_VERSION, PARAPHRASE, TRAIN_PHRASING, Person, Question, is_training_row
from smfa.bench.shapes import ShapeScene, make_shape_scenes, render_shapes
from smfa.bench.splits import SPLIT_NAMES, make_anchor, make_person_splits
from smfa.rundir import atomic_run_dir, write_json_atomic, write_jsonl_atomic, write_manifest

# --- rendering jobs: plain, picklable tuples so a process pool gives identical bytes ----------------


def _render_jobs(people: list[Person], scenes: list[ShapeScene], cfg: BenchConfig) -> list[tuple[str, str, Any]]:
    jobs: list[tuple[str, str, Any]] = []
    for p in people:
        for v, view in enumerate(portrait_views(cfg.n_variants, cfg.rng(f"portrait-views/{p.person_id}"))):
            jobs.append((portrait_path(p.person_id, v), "portrait", (p.visual, view)))
        if p.fundus is not None:
            layout = fundus_layout(p.fundus, cfg.rng(f"fundus-layout/{p.person_id}"))
            for k, view in enumerate(fundus_views(cfg.n_fundus_variants, cfg.rng(f"fundus-views/{p.person_id}"))):
                jobs.append((fundus_path(p.person_id, k), "fundus", (p.fundus, layout, view)))
    for scene in scenes:
        jobs.append((scene.image, "shapes", scene))
    return jobs


def _render_one(job: tuple[str, int, int, tuple[str, str, Any]]) -> str:
    root, size, supersample, (rel, domain, payload) = job
    if domain == "portrait":
        visual, view = payload
        img = render_portrait(visual, size, supersample, view)
    elif domain == "fundus":
        record, layout, view = payload
        img = render_fundus(record, layout, size, supersample, view)
    else:
        img = render_shapes(payload, size, supersample)
    write_png(img, Path(root) / rel)
    return rel


def _render_all(jobs: list[tuple[str, str, Any]], root: Path, cfg: BenchConfig, workers: int, progress: bool) -> None:
    for sub in ("portraits", "fundus", "shapes"):
        (root / "images" / sub).mkdir(parents=True, exist_ok=True)
    tasks = [(str(root), cfg.image_size, cfg.supersample, job) for job in jobs]
    bar = tqdm(total=len(tasks), desc=f"rendering {cfg.image_size}px images", unit="img", disable=not progress)
    with bar:
        if workers <= 1:
            for task in tasks:
                _render_one(task)
                bar.update()
        else:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(workers) as pool:
                for _ in pool.imap_unordered(_render_one, tasks, chunksize=8):
                    bar.update()


def default_workers(cfg: BenchConfig) -> int:
    """One process for small builds (a pool costs more than it saves), up to 4 for large images."""
    work = cfg.n_people * cfg.n_variants * cfg.image_size**2
    return 1 if work < 5_000_000 else max(1, min(4, os.cpu_count() or 1))


# --- bench.json -------------------------------------------------------------------------------


def count_rows(people: list[Person], questions: list[Question], splits: dict[str, list[str]]) -> dict[str, Any]:
    """People per role/split, images per domain, questions per kind x group, anchor make-up."""
    known = {p.person_id for p in people if p.role == "known"}
    groups = {name: set(splits[name]) for name in ("forget_5", "forget_10", "forget_15", "forget_val", "holdout", "reference")}
    groups["retain"] = known - groups["forget_15"] - groups["forget_val"] - groups["reference"]
    per_kind: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        rows = [q for q in questions if q.kind == kind]
        per_kind[kind] = {g: sum(1 for q in rows if q.person_id in ids) for g, ids in groups.items()}
        per_kind[kind]["general"] = sum(1 for q in rows if q.person_id is None)
        per_kind[kind]["total"] = len(rows)
    images = Counter(q.image for q in questions if q.image)
    by_id = {q.id: q for q in questions}
    training = [
        q for q in questions
        if is_training_row(q) and (q.person_id is None or q.person_id in known)
    ]
    return {
        "people": {
            "total": len(people),
            "known": len(known),
            "holdout": len(groups["holdout"]),
            "patients_known": sum(1 for p in people if p.fundus and p.role == "known"),
            "patients_holdout": sum(1 for p in people if p.fundus and p.role == "holdout"),
            **{g: len(groups[g]) for g in ("forget_5", "forget_10", "forget_15", "forget_val", "reference", "retain")},
        },
        "images": {d: sum(1 for path in images if path.startswith(f"images/{d}/")) for d in ("portraits", "fundus", "shapes")},
        "questions": per_kind,
        "rows": {
            "total": len(questions),
            "training": len(training),
            "paraphrase": sum(1 for q in questions if q.phrasing == PARAPHRASE),
            "unseen_image": sum(1 for q in questions if q.phrasing == TRAIN_PHRASING and q.image_split == "heldout"),
        },
        "anchor": {"size": len(splits["anchor"]), **dict(sorted(Counter(by_id[i].kind for i in splits["anchor"]).items()))},
    }


def bench_features(cfg: BenchConfig) -> dict[str, list[str]]:
    return {
        "private": list(profiles.PRIVATE_ATTRIBUTES),
        "visible_identity": list(profiles.VISIBLE_FEATURES),
        "visual": list(profiles.VISUAL_FEATURES),
        "image_memory": list(PORTRAIT_MEMORY),
        "fundus_memory": list(FUNDUS_MEMORY),
        "understanding": list(understanding_attributes(cfg)),
        "fundus_understanding": list(FUNDUS_UNDERSTANDING),
        "fundus": list(profiles.FUNDUS_FEATURES),
        "general_vqa": list(SHAPE_ATTRIBUTES),
    }


def build_bench(
    cfg: BenchConfig, out: str | Path, overwrite: bool = False, workers: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Generate the bench for ``cfg`` into ``out`` (refused if it exists, unless ``overwrite``).

    Returns the contents of ``bench.json``. ``workers`` rendering processes (default: see
    :func:`default_workers`) never change the output.
    """
    cfg.validate()
    people = profiles.make_people(cfg)
    scenes = make_shape_scenes(cfg)
    questions = person_questions(people, cfg) + shape_questions(scenes, cfg)
    splits = make_person_splits(people, cfg)
    splits["anchor"] = make_anchor(questions, splits, cfg)
    short: dict[str, dict[str, int]] = {}
    if cfg.neighbour_pairs:  # names and looks only: the splits, question ids and anchor stay as drawn
        by_id = {q.id: q for q in questions}
        people, short = plant_neighbour_pairs(people, splits, {by_id[i].person_id for i in splits["anchor"]} - {None}, cfg)
        planted = person_questions(people, cfg) + [q for q in questions if q.person_id is None]  # + the shape rows
        if [q.id for q in planted] != [q.id for q in questions]:
            raise RuntimeError("planting neighbour pairs changed the question ids; the anchor no longer applies")
        questions = planted
    jobs = _render_jobs(people, scenes, cfg)
    with atomic_run_dir(Path(out), overwrite=overwrite) as tmp:
        _render_all(jobs, tmp, cfg, workers if workers is not None else default_workers(cfg), progress)
        write_jsonl_atomic(tmp / PEOPLE_JSONL, [p.to_dict() for p in people])
        write_jsonl_atomic(tmp / QUESTIONS_JSONL, [q.to_dict() for q in questions])
        write_json_atomic(tmp / SPLITS_JSON, {name: splits[name] for name in SPLIT_NAMES})
        meta = {
            "version": PAIRS_BENCH_VERSION if cfg.neighbour_pairs else BENCH_VERSION,
            "name": "S-MLLMUn Bench (procedural reproduction, smfa)",
            "preset": cfg.preset,
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "files": {"people": PEOPLE_JSONL, "questions": QUESTIONS_JSONL, "splits": SPLITS_JSON, "images": "images/"},
            "features": bench_features(cfg),
            "counts": count_rows(people, questions, splits),
            "chance": profiles.chance_levels(),
            **({"neighbour_pairs_short": short} if short else {}),  # a pool too small for the share (a custom size)
            "checksum": bench_checksum(tmp),
        }
        write_json_atomic(tmp / BENCH_JSON, meta)
        write_manifest(tmp, "bench", cfg.to_dict(), checksum=meta["checksum"], counts=meta["counts"])
    return meta
