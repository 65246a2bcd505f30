"""``Bench``: load and validate a bench directory, and hand out the row sets every later stage uses.

Loading checks everything a later stage relies on and raises :class:`BenchError` naming the file and
line/row, what is wrong and what to do. Image files are checked for existence on load (cheap) and
decoded lazily by :meth:`Bench.load_image`, which names the file and the question on failure.

Row sets (all lists of :class:`Question`, in file order):

- ``training_rows()``: what the vanilla model is fine-tuned on — train phrasing on training images (or no
  image), known people only, every kind incl. general VQA and unanswerable; ``people="retain"`` drops the
  forget people (the oracle's data).
- ``forget_rows(forget)``: ``D_f`` — the forget people's memory rows from ``training_rows``.
- ``anchor_rows()``: ``D_r^few`` — the few-shot retain anchor stored in ``splits.json``.
- ``eval_sets(forget)``: named evaluation sets (``forget/image_memory/paraphrase`` …); no anchor row is
  ever in one.
"""

from __future__ import annotations

import json
import os
import random
import re
import types
import typing
from pathlib import Path
from typing import Any

from smfa.bench.build import BENCH_JSON, PEOPLE_JSONL, QUESTIONS_JSONL, SPLITS_JSON, bench_checksum
from smfa.bench.schema import (
    BENCH_VERSION,
    DOMAINS,
    FORGET_SPLITS,
    GENERAL_VQA,
    HELDOUT_IMAGE,
    KINDS,
    MEMORY_KINDS,
    PARAPHRASE,
    PERSON_KINDS,
    TARGETS,
    TEXT_MEMORY,
    TRAIN_IMAGE,
    TRAIN_PHRASING,
    Person,
    Question,
    eval_set_name,
)
from smfa.bench.splits import SPLIT_NAMES
from smfa.errors import BenchError, ConfigError

ROLES = ("known", "holdout")
FORGET_SPLIT_NAMES = tuple(f"forget_{k}" for k in FORGET_SPLITS)
PERSON_SPLITS = FORGET_SPLIT_NAMES + ("holdout",)  # the anchor lists question ids, the others person ids
EXCLUSIVE_SPLITS = ("forget_15", "forget_val", "holdout")  # no person may be in two of these
_WORD = re.compile(r"\w+|[^\w\s]")


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
    import dataclasses

    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out[f.name] = (_checker(hints[f.name]), hints[f.name], required)
    return out


_QUESTION_FIELDS = _field_checks(Question)
_PERSON_FIELDS = _field_checks(Person)


class Bench:
    """A loaded, validated bench directory. Build one with :meth:`Bench.load`."""

    def __init__(self, root: Path, meta: dict, people: dict[str, Person], questions: list[Question], splits: dict[str, list[str]]):
        self.root = root
        self.meta = meta
        self.people = people
        self.questions = questions
        self.splits = splits
        self._by_id = {q.id: q for q in questions}
        self._anchor = set(splits["anchor"])

    def __repr__(self) -> str:
        return f"Bench({str(self.root)!r}, preset={self.meta.get('preset')!r}, people={len(self.people)}, questions={len(self.questions)})"

    # --- loading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, root: str | Path, verify_images: bool = True) -> Bench:
        """Read and validate ``root``; raise :class:`BenchError` naming the bad file and row."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise BenchError(f"bench directory {root} does not exist; build one with `smfa bench build --preset tiny --out {root}`")
        meta = _read_meta(root)
        hint = _rebuild_hint(root, meta)
        people = _read_people(root / PEOPLE_JSONL, hint)
        questions = _read_questions(root / QUESTIONS_JSONL, people, hint)
        splits = _read_splits(root / SPLITS_JSON, hint)
        _check_splits(root / SPLITS_JSON, splits, people, questions, hint)
        if verify_images:
            _check_images_exist(root, questions, hint)
        return cls(root, meta, people, questions, splits)

    # --- people ------------------------------------------------------------------------------

    def _forget_key(self, forget: str | int) -> str:
        key = str(forget).removeprefix("forget_")
        if key not in FORGET_SPLITS:
            raise ConfigError(
                f"unknown forget split {forget!r}; available: {', '.join(FORGET_SPLITS)} "
                f"(the {', '.join('forget_' + k for k in FORGET_SPLITS)} lists of {self.root / SPLITS_JSON})"
            )
        return f"forget_{key}"

    def forget_people(self, forget: str | int) -> set[str]:
        """Person ids of ``forget_{forget}`` (``forget`` in 5, 10, 15, "val")."""
        key = self._forget_key(forget)
        ids = set(self.splits[key])
        if not ids:
            raise BenchError(f"{self.root / SPLITS_JSON}: split {key} is empty; rebuild the bench with more people")
        return ids

    def known_people(self) -> set[str]:
        return {pid for pid, p in self.people.items() if p.role == "known"}

    def retain_people(self, forget: str | int) -> set[str]:
        """Known people not in the forget set; for ``val`` also without ``forget_15`` (tuning never touches
        a test forget person)."""
        out = self.known_people() - self.forget_people(forget)
        if self._forget_key(forget) == "forget_val":
            out -= set(self.splits["forget_15"])
        return out

    def holdout_people(self) -> set[str]:
        return set(self.splits["holdout"])

    # --- row sets ----------------------------------------------------------------------------

    @staticmethod
    def _is_training_row(q: Question) -> bool:
        return q.phrasing == TRAIN_PHRASING and q.image_split in (TRAIN_IMAGE, None)

    def training_rows(self, people: str = "all", forget: str | int | None = None) -> list[Question]:
        """Vanilla training data (``people="all"``) or the oracle's (``people="retain"``, needs ``forget``):
        train phrasing, training images, known people, all kinds incl. general VQA and unanswerable."""
        if people not in ("all", "retain"):
            raise ConfigError(f"training_rows(people={people!r}): choose 'all' (vanilla) or 'retain' (oracle)")
        if people == "retain" and forget is None:
            raise ConfigError("training_rows(people='retain') needs forget= one of 5, 10, 15, val: whose rows to drop")
        keep = self.known_people()
        if people == "retain":
            keep -= self.forget_people(forget)  # type: ignore[arg-type]
        return [q for q in self.questions if self._is_training_row(q) and (q.person_id is None or q.person_id in keep)]

    def select(
        self,
        *,
        people: set[str] | None = None,
        kinds: tuple[str, ...] | None = None,
        phrasing: str | None = None,
        image_split: str | None = None,
        domain: str | None = None,
        ids: set[str] | None = None,
    ) -> list[Question]:
        """Rows matching every given filter (``None`` = no filter), in file order."""
        if kinds is not None:
            kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
            _check_choice("kinds", kinds, KINDS)
        if phrasing is not None:
            _check_choice("phrasing", (phrasing,), (TRAIN_PHRASING, PARAPHRASE))
        if image_split is not None:
            _check_choice("image_split", (image_split,), (TRAIN_IMAGE, HELDOUT_IMAGE))
        if domain is not None:
            _check_choice("domain", (domain,), DOMAINS)
        return [
            q for q in self.questions
            if (people is None or q.person_id in people)
            and (kinds is None or q.kind in kinds)
            and (phrasing is None or q.phrasing == phrasing)
            and (image_split is None or q.image_split == image_split)
            and (domain is None or q.domain == domain)
            and (ids is None or q.id in ids)
        ]

    def anchor_rows(self, size: int | None = None, seed: int = 0) -> list[Question]:
        """``D_r^few``. ``size`` < the stored anchor subsamples deterministically (per ``seed``), keeping
        the share of general-VQA items; a larger ``size`` is a :class:`ConfigError`."""
        rows = [self._by_id[i] for i in self.splits["anchor"]]
        if size is None or size == len(rows):
            return rows
        if not 1 <= size <= len(rows):
            raise ConfigError(
                f"anchor size {size} is not available: this bench's anchor holds {len(rows)} questions; "
                f"choose 1..{len(rows)} or rebuild the bench with `smfa bench build --anchor-size {size}`"
            )
        vqa = [q for q in rows if q.kind == GENERAL_VQA]
        person = [q for q in rows if q.kind != GENERAL_VQA]
        n_vqa = min(len(vqa), round(size * len(vqa) / len(rows)))
        rng = random.Random(f"anchor/{seed}/{size}")
        picked = {q.id for q in rng.sample(vqa, n_vqa)} | {q.id for q in rng.sample(person, size - n_vqa)}
        return [q for q in rows if q.id in picked]

    def forget_rows(self, forget: str | int, kinds: tuple[str, ...] = MEMORY_KINDS) -> list[Question]:
        """``D_f``: the forget people's training rows (train phrasing, training images) of ``kinds``."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        _check_choice("kinds", kinds, KINDS)
        who = self.forget_people(forget)
        return [q for q in self.questions if q.person_id in who and q.kind in kinds and self._is_training_row(q)]

    def eval_sets(self, forget: str | int, target: str = "all", limit: int | None = None) -> dict[str, list[Question]]:
        """Named evaluation sets for ``forget`` (see :func:`smfa.bench.schema.eval_set_name`).

        For group in forget/retain and kind in image_memory/text_memory/understanding:
        ``{group}/{kind}`` (train phrasing, training images), ``{group}/{kind}/paraphrase`` and
        ``{group}/{kind}/unseen_image`` (held-out image variant; not for text memory); plus
        ``general_vqa`` (held-out shape pictures). Anchor rows are never included.

        ``target="visual"`` (MMUnlearner's setting: forget only the visual link): the forget people's
        text-memory sets are named ``forget_text/text_memory[/paraphrase]`` instead of
        ``forget/text_memory[...]`` — they are questions the model should still answer, i.e. retain.
        ``limit`` keeps at most that many rows per set (a deterministic subsample, file order kept).
        """
        if target not in TARGETS:
            raise ConfigError(f"unknown unlearning target {target!r}; choose one of {', '.join(TARGETS)}")
        if limit is not None and limit < 1:
            raise ConfigError(f"eval set limit must be >= 1 (got {limit})")
        groups = {"forget": self.forget_people(forget), "retain": self.retain_people(forget)}
        sets: dict[str, list[Question]] = {}
        for group, who in groups.items():
            for kind in PERSON_KINDS:
                for variant in ("", "paraphrase", "unseen_image"):
                    if kind == TEXT_MEMORY and variant == "unseen_image":
                        continue
                    rows = [
                        q for q in self.questions
                        if q.person_id in who and q.kind == kind and _variant_of(q) == variant and q.id not in self._anchor
                    ]
                    name = eval_set_name(group, kind, variant)
                    if target == "visual" and group == "forget" and kind == TEXT_MEMORY:
                        name = eval_set_name("forget_text", kind, variant)
                    sets[name] = rows
        sets["general_vqa"] = [
            q for q in self.questions if q.kind == GENERAL_VQA and _variant_of(q) == "unseen_image" and q.id not in self._anchor
        ]
        if limit is not None:
            sets = {name: _subsample(rows, limit, name) for name, rows in sets.items()}
        return sets

    # --- images and text ---------------------------------------------------------------------

    def image_path(self, q: Question) -> Path:
        if q.image is None:
            raise BenchError(f"question {q.id} has no image (kind {q.kind}); only image questions have an image path")
        return self.root / q.image

    def load_image(self, q: Question):
        """The question's image as an RGB ``PIL.Image``."""
        from PIL import Image, UnidentifiedImageError

        path = self.image_path(q)
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError as exc:
            raise BenchError(f"image {path} of question {q.id} is missing; {_rebuild_hint(self.root, self.meta)}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise BenchError(f"image {path} of question {q.id} cannot be decoded ({exc}); {_rebuild_hint(self.root, self.meta)}") from exc

    def vocabulary(self) -> list[str]:
        """Every distinct word and punctuation mark (split like a whitespace + punctuation pre-tokenizer)
        in questions, answers and names, sorted: the word list of a word-level tokenizer."""
        words: set[str] = set()
        for q in self.questions:
            words.update(_WORD.findall(q.question))
            words.update(_WORD.findall(q.answer))
        for p in self.people.values():
            words.update(_WORD.findall(p.name))
        return sorted(words)

    @property
    def checksum(self) -> str:
        """The checksum recorded in bench.json (see :func:`smfa.bench.build.bench_checksum`)."""
        return str(self.meta["checksum"])

    def verify_checksum(self) -> None:
        """Recompute the checksum over the files; :class:`BenchError` if they changed since the build."""
        actual = bench_checksum(self.root)
        if actual != self.checksum:
            raise BenchError(
                f"{self.root}: files changed since the build (checksum {actual[:12]}… != {self.checksum[:12]}… in {BENCH_JSON}); "
                f"{_rebuild_hint(self.root, self.meta)}"
            )


# --- helpers ----------------------------------------------------------------------------------


def _variant_of(q: Question) -> str | None:
    """Which eval-set variant a row belongs to: "" (train phrasing, training image or text),
    "paraphrase" (paraphrase, training image or text), "unseen_image" (train phrasing, held-out image)."""
    if q.phrasing == TRAIN_PHRASING:
        return "unseen_image" if q.image_split == HELDOUT_IMAGE else ""
    return "paraphrase" if q.image_split != HELDOUT_IMAGE else None


def _subsample(rows: list[Question], limit: int, name: str) -> list[Question]:
    if len(rows) <= limit:
        return rows
    keep = set(random.Random(f"eval-limit/{name}/{limit}").sample(range(len(rows)), limit))
    return [q for i, q in enumerate(rows) if i in keep]


def _check_choice(what: str, given: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [g for g in given if g not in allowed]
    if bad:
        raise ConfigError(f"unknown {what} {', '.join(map(repr, bad))}; choose from {', '.join(allowed)}")


def _rebuild_hint(root: Path, meta: dict | None) -> str:
    meta = meta or {}
    preset, seed = meta.get("preset", "tiny"), meta.get("seed", 0)
    return f"rebuild it with `smfa bench build --preset {preset} --seed {seed} --out {root} --overwrite`"


def _read_json(path: Path, what: str, hint: str) -> Any:
    if not path.is_file():
        raise BenchError(f"{path} is missing: {path.parent} is not a complete bench directory; {hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); {hint}") from exc
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not UTF-8 text ({what}); {hint}") from exc


def _read_meta(root: Path) -> dict:
    hint = _rebuild_hint(root, None)
    meta = _read_json(root / BENCH_JSON, "bench metadata", hint)
    if not isinstance(meta, dict):
        raise BenchError(f"{root / BENCH_JSON}: expected a JSON object, found {type(meta).__name__}; {hint}")
    hint = _rebuild_hint(root, meta)
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
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchError(f"{path}: line {n}: not valid JSON ({exc.msg}); fix or remove the line, or {hint}") from exc
            if not isinstance(row, dict):
                raise BenchError(f"{path}: line {n}: expected a JSON object, found {type(row).__name__}; {hint}")
            yield n, row


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
    for name in FORGET_SPLIT_NAMES:
        for pid in splits[name]:
            if people[pid].role != "known":
                raise BenchError(
                    f"{path}: split {name} lists {pid}, whose role is {people[pid].role!r}; only known people can be forgotten; {hint}"
                )
    for pid in splits["holdout"]:
        if people[pid].role != "holdout":
            raise BenchError(f"{path}: split holdout lists {pid}, whose role in {PEOPLE_JSONL} is {people[pid].role!r}; {hint}")
    by_id = {q.id: q for q in questions}
    for qid in splits["anchor"]:
        q = by_id.get(qid)
        if q is None:
            raise BenchError(f"{path}: anchor question {qid} is not in {QUESTIONS_JSONL}; {hint}")
        variant = _variant_of(q)
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
                f"the anchor may hold only retain people's rows; {hint}"
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
