"""Validation of a bench directory's files: every check a later stage relies on, each failing with a
:class:`BenchError` that names the file and line/row, what is wrong and what to do. :func:`read_bench`
returns the validated rows; :class:`smfa.bench.load.Bench` serves them."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

from smfa.bench.layout import BENCH_JSON, PEOPLE_JSONL, QUESTIONS_JSONL, SPLITS_JSON
from smfa.bench.schema import (
    BENCH_VERSION,
    DOMAINS,
    FORGET_SPLITS,
    GENERAL_VQA,
    HELDOUT_IMAGE,
    KINDS,
    PARAPHRASE,
    PERSON_KINDS,
    TRAIN_IMAGE,
    TRAIN_PHRASING,
    Person,
    Question,
    eval_set_name,
    eval_variant,
)
from smfa.bench.splits import SPLIT_NAMES
from smfa.errors import BenchError
from smfa.rundir import iter_jsonl, read_json

ROLES = ("known", "holdout")
FORGET_SPLIT_NAMES = tuple(f"forget_{k}" for k in FORGET_SPLITS)
PERSON_SPLITS = FORGET_SPLIT_NAMES + ("holdout", "reference")  # the anchor lists question ids, the others person ids
EXCLUSIVE_SPLITS = ("forget_15", "forget_val", "holdout", "reference")  # no person may be in two of these


def read_bench(root: Path, verify_images: bool = True) -> tuple[dict, dict[str, Person], list[Question], dict[str, list[str]]]:
    """``(meta, people, questions, splits)`` of the bench directory ``root``, every file validated."""
    meta = _read_meta(root)
    hint = rebuild_hint(root, meta)
    people = _read_people(root / PEOPLE_JSONL, hint)
    questions = _read_questions(root / QUESTIONS_JSONL, people, hint)
    splits = _read_splits(root / SPLITS_JSON, hint)
    _check_splits(root / SPLITS_JSON, splits, people, questions, hint)
    if verify_images:
        _check_images_exist(root, questions, hint)
    return meta, people, questions, splits


# --- row type checking, derived from the dataclasses so it never drifts from schema.py -------------


def _checker(hint: Any):
    """A fast ``value -> bool`` type check for a dataclass field annotation (str, int, dict[str, str], X | None)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if all(isinstance(a, type) and typing.get_origin(a) is None for a in args):
        plain = tuple(args)
        if int in plain:  # bool is an int subclass; a JSON true is not a valid index
            return lambda v: isinstance(v, plain) and type(v) is not bool
        return lambda v: isinstance(v, plain)
    parts = []
    for a in args:
        if typing.get_origin(a) is dict:
            key_t, val_t = typing.get_args(a)
            parts.append(lambda v, k=key_t, t=val_t: isinstance(v, dict) and all(isinstance(x, k) and isinstance(y, t) for x, y in v.items()))
        elif a is Any:
            parts.append(lambda v: True)
        else:
            parts.append(lambda v, a=a: isinstance(v, a))
    return lambda v: any(p(v) for p in parts)


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _field_checks(cls: type) -> dict[str, tuple[Any, Any, bool]]:
    """field -> (checker, hint, required)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out[f.name] = (_checker(hints[f.name]), hints[f.name], required)
    return out


_QUESTION_FIELDS = _field_checks(Question)
_PERSON_FIELDS = _field_checks(Person)


def rebuild_hint(root: Path, meta: dict | None) -> str:
    meta = meta or {}
    preset, seed = meta.get("preset", "tiny"), meta.get("seed", 0)
    return f"rebuild it with `smfa bench build --preset {preset} --seed {seed} --out {root} --overwrite`"


def _read_json(path: Path, what: str, hint: str) -> Any:
    if not path.is_file():
        raise BenchError(f"{path} is missing: {path.parent} is not a complete bench directory; {hint}")
    return read_json(path, lambda msg: BenchError(f"{msg} ({what}); {hint}"))


def _read_meta(root: Path) -> dict:
    hint = rebuild_hint(root, None)
    meta = _read_json(root / BENCH_JSON, "bench metadata", hint)
    if not isinstance(meta, dict):
        raise BenchError(f"{root / BENCH_JSON}: expected a JSON object, found {type(meta).__name__}; {hint}")
    hint = rebuild_hint(root, meta)
    version = meta.get("version")
    if version != BENCH_VERSION:
        raise BenchError(f"{root / BENCH_JSON}: bench version {version!r}, but this smfa reads version {BENCH_VERSION!r}; {hint}")
    for key, typ in (("seed", int), ("preset", str), ("config", dict), ("counts", dict), ("checksum", str)):
        if not isinstance(meta.get(key), typ):
            raise BenchError(f"{root / BENCH_JSON}: field {key!r} is missing or not a {typ.__name__}; {hint}")
    return meta


def _jsonl_rows(path: Path, hint: str):
    """Yield (line number, dict) for each non-empty line."""
    if not path.is_file():
        raise BenchError(f"{path} is missing: {path.parent} is not a complete bench directory; {hint}")
    yield from iter_jsonl(path, lambda msg: BenchError(f"{msg}; fix or remove the line, or {hint}"))


def _check_fields(path: Path, n: int, row: dict, fields: dict[str, tuple[Any, Any, bool]], hint: str) -> None:
    for name, (ok, typ, required) in fields.items():
        if name not in row:
            if required:
                raise BenchError(f"{path}: line {n}: field {name!r} is missing; {hint}")
            continue
        if not ok(row[name]):
            raise BenchError(f"{path}: line {n}: field {name!r} should be {_describe(typ)}, found {row[name]!r}; {hint}")
    if not row.keys() <= fields.keys():
        extra = sorted(set(row) - set(fields))
        raise BenchError(f"{path}: line {n}: unknown field(s) {', '.join(extra)}; {hint}")


def _read_people(path: Path, hint: str) -> dict[str, Person]:
    people: dict[str, Person] = {}
    names: dict[str, str] = {}
    for n, row in _jsonl_rows(path, hint):
        _check_fields(path, n, row, _PERSON_FIELDS, hint)
        pid = row["person_id"]
        if pid in people:
            raise BenchError(f"{path}: line {n}: person id {pid} appears twice; {hint}")
        if row["name"] in names:
            raise BenchError(
                f"{path}: line {n}: name {row['name']!r} of {pid} is also the name of {names[row['name']]}; names must be unique; {hint}"
            )
        if row.get("role", "known") not in ROLES:
            raise BenchError(f"{path}: line {n}: role {row['role']!r} of {pid} is unknown; expected one of {', '.join(ROLES)}; {hint}")
        names[row["name"]] = pid
        people[pid] = Person(**row)
    if not people:
        raise BenchError(f"{path} holds no people; {hint}")
    return people


def _read_questions(path: Path, people: dict[str, Person], hint: str) -> list[Question]:
    rows: list[Question] = []
    seen: set[str] = set()
    for n, row in _jsonl_rows(path, hint):
        _check_fields(path, n, row, _QUESTION_FIELDS, hint)
        qid, kind = row["id"], row["kind"]
        where = f"{path}: line {n} (question {qid})"
        if qid in seen:
            raise BenchError(f"{where}: the id appears twice; {hint}")
        seen.add(qid)
        if kind not in KINDS:
            raise BenchError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}; {hint}")
        if row["domain"] not in DOMAINS:
            raise BenchError(f"{where}: unknown domain {row['domain']!r}; expected one of {', '.join(DOMAINS)}; {hint}")
        if row.get("phrasing", TRAIN_PHRASING) not in (TRAIN_PHRASING, PARAPHRASE):
            raise BenchError(f"{where}: unknown phrasing {row['phrasing']!r}; expected {TRAIN_PHRASING} or {PARAPHRASE}; {hint}")
        pid = row.get("person_id")
        if kind == GENERAL_VQA:
            if pid is not None:
                raise BenchError(f"{where}: a general_vqa question must not name a person (person_id {pid!r}); {hint}")
        elif pid not in people:
            raise BenchError(f"{where}: person {pid!r} is not in {PEOPLE_JSONL}; {hint}")
        image, split = row.get("image"), row.get("image_split")
        if (image is None) != (split is None):
            raise BenchError(f"{where}: image and image_split must both be set or both be null; {hint}")
        if split not in (TRAIN_IMAGE, HELDOUT_IMAGE, None):
            raise BenchError(f"{where}: unknown image_split {split!r}; expected {TRAIN_IMAGE}, {HELDOUT_IMAGE} or null; {hint}")
        if image is not None and (image.startswith(("/", "\\")) or ".." in image.replace("\\", "/").split("/")):
            raise BenchError(f"{where}: image path {image!r} must be relative to the bench directory; {hint}")
        if row["fact"] and row["fact"] not in row["answer"]:
            raise BenchError(f"{where}: fact {row['fact']!r} does not occur in the answer {row['answer']!r}; {hint}")
        rows.append(Question(**row))
    if not rows:
        raise BenchError(f"{path} holds no questions; {hint}")
    return rows


def _read_splits(path: Path, hint: str) -> dict[str, list[str]]:
    data = _read_json(path, "splits", hint)
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a JSON object of split name -> id list, found {type(data).__name__}; {hint}")
    for name, ids in data.items():
        if name not in SPLIT_NAMES:
            raise BenchError(f"{path}: unknown split {name!r}; the splits are {', '.join(SPLIT_NAMES)}; remove it or {hint}")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BenchError(f"{path}: split {name!r} must be a list of id strings; {hint}")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise BenchError(f"{path}: split {name!r} lists {dup} twice; {hint}")
    missing = [s for s in SPLIT_NAMES if s not in data]
    if missing:
        raise BenchError(f"{path}: split(s) {', '.join(missing)} missing; {hint}")
    return {name: data[name] for name in SPLIT_NAMES}


def _check_splits(path: Path, splits: dict[str, list[str]], people: dict[str, Person], questions: list[Question], hint: str) -> None:
    for name in PERSON_SPLITS:
        for pid in splits[name]:
            if pid not in people:
                raise BenchError(f"{path}: split {name} lists {pid}, who is not in {PEOPLE_JSONL}; {hint}")
    owner: dict[str, str] = {}
    for name in EXCLUSIVE_SPLITS:
        for pid in splits[name]:
            if pid in owner:
                raise BenchError(
                    f"{path}: person {pid} is in both {owner[pid]} and {name}; "
                    f"a person may be in only one of {', '.join(EXCLUSIVE_SPLITS)}; {hint}"
                )
            owner[pid] = name
    for small, big in (("forget_5", "forget_10"), ("forget_10", "forget_15")):
        outside = sorted(set(splits[small]) - set(splits[big]))
        if outside:
            raise BenchError(f"{path}: {small} must be inside {big} (nested forget sets), but {', '.join(outside[:5])} is not; {hint}")
    for name in FORGET_SPLIT_NAMES + ("reference",):
        for pid in splits[name]:
            if people[pid].role != "known":
                raise BenchError(
                    f"{path}: split {name} lists {pid}, whose role is {people[pid].role!r}; only known people can be forgotten "
                    f"or be reference people; {hint}"
                )
    for pid in splits["holdout"]:
        if people[pid].role != "holdout":
            raise BenchError(f"{path}: split holdout lists {pid}, whose role in {PEOPLE_JSONL} is {people[pid].role!r}; {hint}")
    by_id = {q.id: q for q in questions}
    for qid in splits["anchor"]:
        q = by_id.get(qid)
        if q is None:
            raise BenchError(f"{path}: anchor question {qid} is not in {QUESTIONS_JSONL}; {hint}")
        variant = eval_variant(q)
        if variant != "":
            if q.kind == GENERAL_VQA:
                where = "general_vqa (a held-out shape picture)"
            else:
                group = "forget" if q.person_id in set(splits["forget_15"]) else "retain"
                where = eval_set_name(group, q.kind, variant or "unseen_image")
            raise BenchError(
                f"{path}: anchor question {qid} is in eval set {where}; "
                f"the anchor may hold only training rows (train phrasing, training images); {hint}"
            )
        if q.person_id is not None and q.person_id in owner:
            raise BenchError(
                f"{path}: anchor question {qid} belongs to {q.person_id}, who is in {owner[q.person_id]}; "
                f"the anchor may hold only rows of retain people outside the reference pool; {hint}"
            )
        if q.kind not in PERSON_KINDS + (GENERAL_VQA,):
            raise BenchError(
                f"{path}: anchor question {qid} is of kind {q.kind}; the anchor holds {', '.join(PERSON_KINDS)} and {GENERAL_VQA} rows; {hint}"
            )


def _check_images_exist(root: Path, questions: list[Question], hint: str) -> None:
    checked: set[str] = set()
    for q in questions:
        if q.image is None or q.image in checked:
            continue
        if not os.path.isfile(root / q.image):
            raise BenchError(f"{root / q.image} is missing (image of question {q.id} in {QUESTIONS_JSONL}); {hint}")
        checked.add(q.image)
