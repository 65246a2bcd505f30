"""``smfa bench import jsonl ROWS.jsonl --images DIR``: your own people, photos and questions.

One JSON object per line (blank lines skipped):

| field | required | meaning |
|---|---|---|
| ``person_id`` | yes | who the question is about |
| ``name`` | yes | the person's name (the same on every row of a person; unique across people) |
| ``question``, ``answer`` | yes | the question and its reference answer |
| ``image`` | no | the person's photo: a path relative to ``--images`` (or absolute); ``null``/absent = a text question |
| ``fact`` | memory rows | the short private value inside ``answer`` that accuracy and leak matching look for ("Norvale" in "This person lives in Norvale."); required for ``image_memory``/``text_memory`` generation rows (with the whole sentence as the fact even a perfect answer in other words would "leak" nothing), default the whole answer for ``understanding`` and ``cloze`` rows; several facts joined by `` | `` ("Norvale | nurse"): correct when all are stated, a leak when any is |
| ``kind`` | no | ``image_memory`` (default with an image), ``text_memory`` (default without), ``understanding`` |
| ``variant`` | no | ``""`` (default: trained on and evaluated), ``paraphrase`` (held-out wording) or ``unseen_image`` (held-out photo); the last two are evaluation only |
| ``format`` | no | ``generation`` (default), ``choice`` (needs ``options``; ``answer`` = the correct letter) or ``cloze``; the last two are evaluation only |
| ``options`` | for choice | ``{"A": "...", "B": "..."}`` |
| ``id`` | no | a question id (default ``row<N>``); must be unique |

``--forget`` (a file of person ids, one per line, or a comma list) stores the split ``forget_user``, so later
stages take ``--forget user``; any later stage also takes ``--forget FILE`` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smfa.bench.forget_set import read_id_list
from smfa.bench.importers.common import ImportedData, ImportOptions, RowCollector, write_imported_bench
from smfa.bench.schema import (
    CHOICE,
    FORMATS,
    GENERATION,
    HELDOUT_IMAGE,
    IMAGE_MEMORY,
    PARAPHRASE,
    TEXT_MEMORY,
    TRAIN_IMAGE,
    TRAIN_PHRASING,
    UNDERSTANDING,
    Person,
    default_fact,
    fact_missing_from,
    requires_fact,
)
from smfa.errors import BenchError
from smfa.rundir import iter_jsonl

USER_SPLIT = "forget_user"
JSONL_KINDS = (IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING)
VARIANTS = ("", PARAPHRASE, "unseen_image")
KNOWN_FIELDS = frozenset({"person_id", "name", "question", "answer", "image", "fact", "kind", "variant", "format",
                          "options", "id"})


def _string(row: dict[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BenchError(f"{where}: field {key!r} is {'missing' if value is None else 'not a non-empty string'}")
    return value.strip()


def parse_jsonl(path: Path, images_dir: Path | None) -> ImportedData:
    """Read the user's rows (see the module docstring) into :class:`ImportedData`."""
    data = ImportedData(people=[], questions=[], forget_splits={})
    rows = RowCollector(data)
    people: dict[str, Person] = {}
    names: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for n, row in iter_jsonl(path, BenchError):
        where = f"{path}: line {n}"
        unknown = sorted(set(row) - KNOWN_FIELDS)
        if unknown:
            raise BenchError(f"{where}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(KNOWN_FIELDS))}")
        pid, name = _string(row, "person_id", where), _string(row, "name", where)
        question, answer = _string(row, "question", where), _string(row, "answer", where)
        if pid in people and people[pid].name != name:
            raise BenchError(f"{where}: person {pid} is named {name!r} here but {people[pid].name!r} before")
        if names.get(name, pid) != pid:
            raise BenchError(f"{where}: name {name!r} belongs to both {names[name]} and {pid}; names must be unique")
        people.setdefault(pid, Person(person_id=pid, name=name, attributes={}, visual={}))
        names[name] = pid
        image_ref = _string(row, "image", where, required=False)
        image = None
        if image_ref is not None:
            file = Path(image_ref) if Path(image_ref).is_absolute() or images_dir is None else images_dir / image_ref
            if not file.is_file():
                raise BenchError(f"{where}: image {file} does not exist" + ("" if images_dir else " (pass --images DIR)"))
            image = rows.image(pid, file.read_bytes(), f"{where} (image {file})")
        kind = row.get("kind") or (IMAGE_MEMORY if image else TEXT_MEMORY)
        if kind not in JSONL_KINDS:
            raise BenchError(f"{where}: kind {kind!r} is not one of {', '.join(JSONL_KINDS)}")
        if (kind == TEXT_MEMORY) == (image is not None):
            raise BenchError(f"{where}: a {kind} question " + ("has no image" if image is None else "must not have an image"))
        variant = row.get("variant", "") or ""
        if variant not in VARIANTS:
            raise BenchError(f"{where}: variant {variant!r} is not one of '', {PARAPHRASE}, unseen_image")
        if variant == "unseen_image" and image is None:
            raise BenchError(f"{where}: variant unseen_image needs an image")
        fmt = row.get("format", GENERATION)
        if fmt not in FORMATS:
            raise BenchError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
        options = row.get("options")
        if fmt == CHOICE:
            if not isinstance(options, dict) or len(options) < 2 or not all(isinstance(v, str) for v in options.values()):
                raise BenchError(f"{where}: a choice question needs 'options', an object of at least two letter -> text")
            if answer not in options:
                raise BenchError(f"{where}: the answer of a choice question is the correct letter, one of {', '.join(options)}")
        elif options is not None:
            raise BenchError(f"{where}: 'options' is only for format choice")
        fact = answer if fmt == CHOICE else _string(row, "fact", where, required=False)
        if fact is None and requires_fact(kind, fmt):
            raise BenchError(f"{where}: a {kind} question needs a 'fact', the short private value inside its answer that "
                             "accuracy and leak matching look for (e.g. \"fact\": \"Norvale\" for \"This person lives in "
                             "Norvale.\"); add one to the row")
        fact = fact or default_fact(kind, answer)  # understanding and cloze rows: the whole (short) answer
        missing = fact_missing_from(fact, answer)
        if missing is not None:
            raise BenchError(f"{where}: fact {missing!r} does not occur in the answer {answer!r}")
        qid = row.get("id", f"row{n}")
        if not isinstance(qid, str) or not qid:
            raise BenchError(f"{where}: field 'id' must be a non-empty string")
        if qid in first_line:
            raise BenchError(f"{where}: question id {qid!r} is already used on line {first_line[qid]}; ids must be unique")
        first_line[qid] = n
        rows.add(id=qid, kind=kind, domain="portrait" if image else "none", attribute="user", person_id=pid,
                 question=question, answer=answer, fact=fact, image=image,
                 image_split=(HELDOUT_IMAGE if variant == "unseen_image" else TRAIN_IMAGE) if image else None,
                 phrasing=PARAPHRASE if variant == PARAPHRASE else TRAIN_PHRASING, format=fmt,
                 options=options if fmt == CHOICE else None, trainable=fmt == GENERATION and variant == "")
    if not data.questions:
        raise BenchError(f"{path} holds no rows")
    data.people = list(people.values())
    return data


def import_jsonl(rows_path: str | Path, opts: ImportOptions, images: str | Path | None = None,
                 forget: str | None = None) -> dict[str, Any]:
    """Import the user's rows into ``opts.out``; ``forget`` (file or comma list of person ids) becomes the
    split ``forget_user``. Returns ``bench.json``'s content."""
    path = Path(rows_path).expanduser()
    if not path.is_file():
        raise BenchError(f"rows file {path} does not exist")
    images_dir = Path(images).expanduser() if images else None
    if images_dir is not None and not images_dir.is_dir():
        raise BenchError(f"--images {images_dir} is not a directory")
    data = parse_jsonl(path, images_dir)
    if forget:
        ids = read_id_list(forget)
        known = {p.person_id for p in data.people}
        missing = [i for i in ids if i not in known]
        if missing:
            raise BenchError(f"--forget names {missing[0]!r}, who has no row in {path} ({len(missing)} unknown id(s))")
        if not ids:
            raise BenchError(f"--forget {forget} lists no person ids")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise BenchError(f"--forget lists {dup!r} twice")
        data.forget_splits[USER_SPLIT] = ids
    source = {"format": "jsonl", "input": str(path), "images": str(images_dir) if images_dir else None,
              "forget": USER_SPLIT if forget else None}
    return write_imported_bench(data, opts, source)


__all__ = ["USER_SPLIT", "import_jsonl", "parse_jsonl"]
