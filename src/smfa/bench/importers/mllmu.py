"""``smfa bench import mllmu DIR``: MLLMU-Bench (arXiv 2410.22108; hub dataset ``MLLMMU/MLLMU-Bench``) as a
bench directory.

The input is the dataset's parquet layout as its card describes it, one folder (or file) per subset:

| subset | columns read | becomes |
|---|---|---|
| ``Full_Set`` | ``ID``, ``image``, ``biography``, ``Classification_Task``, ``Generation_Task``, ``Mask_Task`` (``question``/``answer`` when there is no ``ft_Data``) | the 500 fictitious people (role ``known``) and their evaluation questions |
| ``ft_Data`` | ``ID``, ``image``, ``metadata`` (JSON list of ``{"Question", "Answer"}``) | the vanilla's training rows (image memory) |
| ``forget_5/10/15`` | ``ID`` | splits ``forget_5``, ``forget_10``, ``forget_15`` |
| ``retain_85/90/95`` | ``ID`` | checked: each must be the complement of its forget split |
| ``Test_Set`` | ``ID``, ``images`` (list) or ``image``, the three tasks | held-out photos (image questions, variant ``unseen_image``) and paraphrases (text questions, variant ``paraphrase``) |
| ``Retain_Set`` | ``ID``, ``image``, the three tasks | real celebrities (role ``external``, group ``external``), never fine-tuned on |

Task fields: ``Classification_Task`` = ``{Image_Textual_Questions, Pure_Text_Questions}``, each a list of
``{Question, Options: {A, B, C, D}, Correct_Answer}`` → format ``choice``; ``Generation_Task`` and
``Mask_Task`` = lists of ``{Question, Ground_Truth, Type}`` with ``Type`` ``Image_Textual`` (asked with the
photo: image memory) or ``Pure_Text`` (text memory) → formats ``generation`` and ``cloze`` (the blank
``__`` shown as ``[Blank]``). Every task question is evaluation-only (``trainable: false``): the vanilla
learns from ``ft_Data`` as MLLMU's own fine-tuning does. MLLMU's rows carry no separate name, so a person's
name is its ``ID``; the biography is kept as the attribute ``biography``. A task column may be nested
(struct/list) or JSON text; text that is not valid JSON, or the wrong shape, is refused in one line.

**Facts.** MLLMU gives no fact per free answer, but it names each person's private values elsewhere: the
blanks of ``Mask_Task`` (``Ground_Truth``) and the correct ``Classification_Task`` options. The fact of a
free answer (``Generation_Task``, an ``ft_Data`` pair, ``Full_Set``'s ``answer``) is every such value of the
same person that the answer states on whole-word boundaries (case-insensitively, as spelled in the answer)
and its question does not, a value inside a longer one dropped, several joined by `` | ``
(:func:`smfa.bench.importers.facts.derive_fact`); values of the person's ``Full_Set`` row, plus a
``Test_Set`` row's own; a celebrity's from its ``Retain_Set`` row. An item's own ``Fact`` key, when present,
wins. An answer stating none of them is never scored on the whole sentence: the item is skipped and counted
(one summary line after the import; ``bench.json`` ``"skipped"``), or with ``--strict`` the import stops there
(one line naming the file, row and item). A cloze row's fact is its blank.

MLLMU's evaluation sets map to smfa's: Forget Set = ``forget/*`` (train variant), Test Set =
``forget/image_memory/unseen_image*`` + ``forget/text_memory/paraphrase*``, Retain Set = ``retain/*``,
Real Celebrity = ``external/*``; each with a ``/choice`` and a ``/cloze`` set beside the generation set.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from smfa.bench.importers.common import ImportedData, ImportOptions, RowCollector, unique
from smfa.bench.importers.facts import derive_fact
from smfa.bench.importers.parquet import has_subset, import_parquet_folder, read_subset
from smfa.bench.schema import CHOICE, CLOZE, GENERATION, HELDOUT_IMAGE, IMAGE_MEMORY, PARAPHRASE, TEXT_MEMORY, TRAIN_IMAGE, TRAIN_PHRASING, Person, fact_missing_from
from smfa.errors import BenchError

FORGET_RATIOS = (5, 10, 15)
TASKS = ("Classification_Task", "Generation_Task", "Mask_Task")
CLASSIFICATION_KEYS = ("Image_Textual_Questions", "Pure_Text_Questions")
TYPES = {"Image_Textual": IMAGE_MEMORY, "Pure_Text": TEXT_MEMORY}
CLOZE_HINT = "\nAnswer with the words that fill [Blank]."
EXTERNAL_PREFIX = "celebrity_"  # person ids of Retain_Set rows, apart from the fictitious people's
SUBSETS = {"full": "Full_Set", "test": "Test_Set", "celebrity": "Retain_Set"}  # question-id prefix -> subset read


def _choice_text(question: str, options: dict[str, str]) -> str:
    return question + "".join(f"\n{letter}: {text}" for letter, text in options.items())


def _column(row: dict[str, Any], column: str, where: str, expected: type) -> Any:
    """A task column as a struct/list (``expected``): parquet stores them nested or as JSON text, both read;
    absent or empty is an empty ``expected``; anything else a one-line :class:`BenchError`."""
    value = row.get(column)
    shape = "an object" if expected is dict else "a list"
    if isinstance(value, str):
        if not value.strip():
            return expected()
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{where}: column {column} holds text that is not valid JSON ({exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}); it must be {shape} of questions, nested or as JSON text") from exc
    if value is None:
        return expected()
    if not isinstance(value, expected):
        raise BenchError(f"{where}: column {column} is {type(value).__name__}, not {shape} of questions")
    return value


def _items(value: Any, what: str, where: str) -> list[dict[str, Any]]:
    """``value`` as a list of objects (``what`` names it in errors)."""
    value = [] if value is None else value
    if not isinstance(value, list):
        raise BenchError(f"{where}: {what} is {type(value).__name__}, not a list of questions")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BenchError(f"{where}: {what}[{i}] is {type(item).__name__}, not an object with Question and answer keys")
    return value


def _classification(row: dict[str, Any], where: str) -> dict[str, list[dict[str, Any]]]:
    cls = _column(row, "Classification_Task", where, dict)
    return {key: _items(cls.get(key), f"Classification_Task.{key}", where) for key in CLASSIFICATION_KEYS}


def known_values(row: dict[str, Any], where: str) -> list[str]:
    """The private values one MLLMU row names outside its free answers: every ``Mask_Task`` blank
    (``Ground_Truth``) and the text of every correct ``Classification_Task`` option."""
    values = [str(item.get("Ground_Truth") or "") for item in _items(_column(row, "Mask_Task", where, list), "Mask_Task", where)]
    for items in _classification(row, where).values():
        for item in items:
            options, letter = item.get("Options"), str(item.get("Correct_Answer") or "").strip()
            if isinstance(options, dict) and options.get(letter) is not None:
                values.append(str(options[letter]))
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


def short_fact(rows: RowCollector, source: str, answer: str, question: str, values: list[str], given: Any, where: str,
               key: str) -> str | None:
    """The fact of a free answer: ``given`` (an item's own ``Fact`` key; one that is not in the answer is a
    :class:`BenchError`) when present, else derived from the person's ``values``
    (:func:`smfa.bench.importers.facts.derive_fact`). ``None`` when neither gives one — never the whole
    answer: ``rows`` skips the item (``source``: its subset and column), or under ``--strict`` raises."""
    if given is not None and str(given).strip():
        fact = str(given).strip()
        missing = fact_missing_from(fact, answer)
        if missing is not None:
            raise BenchError(f"{where}: {key}: Fact {missing!r} does not occur in the answer {answer!r}")
        return fact
    fact = derive_fact(answer, question, values)
    if fact is None:
        rows.skip(source, f"{where}: {key}", f"no short fact in the answer {answer!r}: none of this person's Mask_Task "
                  "blanks or correct Classification_Task options occurs in it (outside the question); add a \"Fact\" key "
                  "(the private value inside the answer) to that item or remove the item")
    return fact


def _tasks(rows: RowCollector, subset: str, pid: str, row: dict[str, Any], where: str, image: str | None, *, test: bool,
           values: list[str]) -> None:
    """The three MLLMU tasks of one person as evaluation-only rows. ``test``: Test_Set (held-out photo,
    paraphrased text questions). ``values``: the person's private values, from which each generation row's
    short fact is derived."""
    image_split = HELDOUT_IMAGE if test else TRAIN_IMAGE

    def place(kind: str) -> dict[str, Any]:
        if kind == IMAGE_MEMORY:
            if image is None:
                raise BenchError(f"{where}: an Image_Textual question but the row has no image")
            return {"image": image, "image_split": image_split, "domain": "portrait", "phrasing": TRAIN_PHRASING}
        return {"image": None, "image_split": None, "domain": "none", "phrasing": PARAPHRASE if test else TRAIN_PHRASING}

    base = f"{subset}/{pid}"
    for key, items in _classification(row, where).items():
        kind = IMAGE_MEMORY if key == "Image_Textual_Questions" else TEXT_MEMORY
        for i, item in enumerate(items):
            raw = item.get("Options")
            if not isinstance(raw, dict):
                raise BenchError(f"{where}: Classification_Task.{key}[{i}]: Options is {type(raw).__name__}, not an "
                                 "object of letter -> option text")
            options = {k: str(v) for k, v in raw.items() if v is not None}
            answer = str(item.get("Correct_Answer") or "").strip()
            if answer not in options:
                raise BenchError(f"{where}: Classification_Task.{key}[{i}]: Correct_Answer {answer!r} is not one of the "
                                 f"options {', '.join(options) or '(none)'}")
            rows.add(id=f"{base}/choice_{kind}/{i}", kind=kind, attribute="classification", person_id=pid,
                     question=_choice_text(str(item.get("Question") or ""), options), answer=answer, fact=answer,
                     format=CHOICE, options=options, trainable=False, **place(kind))
    for column, fmt in (("Generation_Task", GENERATION), ("Mask_Task", CLOZE)):
        for i, item in enumerate(_items(_column(row, column, where, list), column, where)):
            kind = TYPES.get(item.get("Type"))
            if kind is None:
                raise BenchError(f"{where}: {column}[{i}]: Type {item.get('Type')!r} is not one of {', '.join(TYPES)}")
            truth = str(item.get("Ground_Truth") or "").strip()
            question = str(item.get("Question") or "").strip()
            if not truth or not question:
                raise BenchError(f"{where}: {column}[{i}]: empty Question or Ground_Truth")
            if fmt == CLOZE:  # the blank's Ground_Truth is the fact itself
                fact, question = truth, question.replace("__", "[Blank]") + CLOZE_HINT
            else:
                fact = short_fact(rows, f"{SUBSETS[subset]} {column}", truth, question, values, item.get("Fact"), where,
                                  f"{column}[{i}]")
                if fact is None:
                    continue
            rows.add(id=f"{base}/{fmt}_{kind}/{i}", kind=kind, attribute=column.removesuffix("_Task").lower(),
                     person_id=pid, question=question, answer=truth, fact=fact, format=fmt, trainable=False,
                     **place(kind))


def parse_mllmu(root: Path, seed: int = 0, strict: bool = False) -> ImportedData:
    """Read MLLMU-Bench's parquet subsets under ``root`` into :class:`ImportedData` (see the module docstring);
    ``strict``: a free answer without a short fact stops the import instead of being skipped."""
    data = ImportedData(people=[], questions=[], forget_splits={})
    rows = RowCollector(data, strict=strict)
    full = read_subset(root, "Full_Set", ("ID", "image"), one_of=TASKS)
    people: dict[str, Person] = {}
    unique([str(r["ID"]) for _, r in full], "ID", f"{root}/Full_Set")
    full_images: dict[str, str] = {}
    values: dict[str, list[str]] = {}  # person -> the private values Full_Set names (facts are derived from them)
    for where, row in full:
        pid = str(row["ID"])
        people[pid] = Person(person_id=pid, name=pid, attributes={"biography": str(row.get("biography") or "")}, visual={})
        full_images[pid] = rows.image(pid, row["image"], f"{where} (ID {pid})")
        values[pid] = known_values(row, f"{where} (ID {pid})")
        _tasks(rows, "full", pid, row, f"{where} (ID {pid})", full_images[pid], test=False, values=values[pid])

    if has_subset(root, "ft_Data"):
        for where, row in read_subset(root, "ft_Data", ("ID", "image", "metadata")):
            pid = str(row["ID"])
            if pid not in people:
                raise BenchError(f"{where}: ID {pid!r} is not in Full_Set")
            image = rows.image(pid, row["image"], f"{where} (ID {pid})")
            pairs = _items(_column(row, "metadata", f"{where} (ID {pid})", list), "metadata", f"{where} (ID {pid})")
            for i, pair in enumerate(pairs):
                q, a = str(pair.get("Question") or "").strip(), str(pair.get("Answer") or "").strip()
                if not q or not a:
                    continue  # an empty pair trains nothing
                fact = short_fact(rows, "ft_Data metadata", a, q, values[pid], pair.get("Fact"), f"{where} (ID {pid})",
                                  f"metadata[{i}]")
                if fact is not None:
                    rows.add(id=f"ft/{pid}/{i}", kind=IMAGE_MEMORY, domain="portrait", attribute="qa", person_id=pid,
                             question=q, answer=a, fact=fact, image=image, image_split=TRAIN_IMAGE)
    else:  # without ft_Data, Full_Set's own question/answer pair is the training row
        for where, row in full:
            pid, q, a = str(row["ID"]), str(row.get("question") or "").strip(), str(row.get("answer") or "").strip()
            if not q or not a:
                raise BenchError(f"{where}: no ft_Data subset and no question/answer columns to train on")
            fact = short_fact(rows, "Full_Set question/answer", a, q, values[pid], None, f"{where} (ID {pid})", "question/answer")
            if fact is not None:
                rows.add(id=f"full/{pid}/qa", kind=IMAGE_MEMORY, domain="portrait", attribute="qa", person_id=pid,
                         question=q, answer=a, fact=fact, image=full_images[pid], image_split=TRAIN_IMAGE)

    for ratio in FORGET_RATIOS:
        name = f"forget_{ratio}"
        if not has_subset(root, name):
            continue
        ids = unique([str(r["ID"]) for _, r in read_subset(root, name, ("ID",))], "ID", f"{root}/{name}")
        unknown = [i for i in ids if i not in people]
        if unknown:
            raise BenchError(f"{root}/{name}: ID {unknown[0]!r} is not in Full_Set ({len(unknown)} unknown)")
        data.forget_splits[name] = ids
        retain = f"retain_{100 - ratio}"
        if has_subset(root, retain):
            kept = {str(r["ID"]) for _, r in read_subset(root, retain, ("ID",))}
            expected = set(people) - set(ids)
            if kept != expected:
                odd = sorted(kept ^ expected)
                raise BenchError(f"{root}/{retain} is not the complement of {name} in Full_Set (e.g. ID {odd[0]!r})")
    if not data.forget_splits:
        raise BenchError(f"{root}: no forget_5, forget_10 or forget_15 subset: nothing says whom to forget")

    if has_subset(root, "Test_Set"):
        for where, row in read_subset(root, "Test_Set", ("ID",), one_of=TASKS):
            pid = str(row["ID"])
            if pid not in people:
                raise BenchError(f"{where}: ID {pid!r} is not in Full_Set")
            views = row.get("images") or ([row["image"]] if row.get("image") else [])
            image = None
            if views:  # MLLMU asks each test question with one of the person's held-out photos
                pick = random.Random(f"test-image/{seed}/{pid}").randrange(len(views))
                image = rows.image(pid, views[pick], f"{where} (ID {pid}, image {pick})")
            own = known_values(row, f"{where} (ID {pid})")
            _tasks(rows, "test", pid, row, f"{where} (ID {pid})", image, test=True,
                   values=list(dict.fromkeys(values[pid] + own)))

    if has_subset(root, "Retain_Set"):
        celebrities = read_subset(root, "Retain_Set", ("ID", "image"), one_of=TASKS)
        unique([str(r["ID"]) for _, r in celebrities], "ID", f"{root}/Retain_Set")
        for where, row in celebrities:
            pid = EXTERNAL_PREFIX + str(row["ID"])
            people[pid] = Person(person_id=pid, name=pid, attributes={"biography": str(row.get("biography") or "")},
                                 visual={}, role="external")
            image = rows.image(pid, row["image"], f"{where} (ID {row['ID']})")
            _tasks(rows, "celebrity", pid, row, f"{where} (ID {row['ID']})", image, test=False,
                   values=known_values(row, f"{where} (ID {row['ID']})"))

    data.people = list(people.values())
    return data


def import_mllmu(root: str | Path, opts: ImportOptions) -> dict[str, Any]:
    """Import MLLMU-Bench from ``root`` into ``opts.out``; returns ``bench.json``'s content."""
    subsets = ("Full_Set", "ft_Data", "Test_Set", "Retain_Set", *(f"forget_{r}" for r in FORGET_RATIOS),
               *(f"retain_{100 - r}" for r in FORGET_RATIOS))
    return import_parquet_folder(root, opts, "mllmu", "MLLMU-Bench's subsets (Full_Set/, forget_10/, ...)", subsets,
                                 lambda folder: parse_mllmu(folder, seed=opts.seed, strict=opts.strict))
