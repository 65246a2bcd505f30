"""``Bench``: load and validate a bench directory, and hand out the row sets every later stage uses.

Loading checks everything a later stage relies on and raises :class:`BenchError` naming the file and
line/row, what is wrong and what to do. Image files are checked for existence on load (cheap) and
decoded lazily by :meth:`Bench.load_image`, which names the file and the question on failure.

Row sets (all lists of :class:`Question`, in file order):

- ``training_rows()``: what the vanilla model is fine-tuned on — train phrasing on training images (or no
  image), known people only, every kind incl. general VQA and unanswerable; ``people="retain"`` drops the
  forget people (the oracle's data).
- ``forget_rows(forget)``: ``D_f`` — the forget people's memory rows from ``training_rows``; ``forget`` is a
  split name (``10``, ``forget_10``, an imported ``user``) or a file of person ids.
- ``anchor_rows()``: ``D_r^few`` — the few-shot retain anchor stored in ``splits.json``.
- ``eval_sets(forget)``: named evaluation sets (``forget/image_memory/paraphrase`` …, ``…/choice`` and
  ``…/cloze`` where a bench has such rows, ``external/…`` for external people); no anchor row is ever in one.

Imported benches (``smfa bench import``, docs/data-format.md) load through the same checks; one written by an
older importer (``bench.json`` ``import_version`` below :data:`smfa.bench.importers.common.IMPORT_VERSION`)
loads with one warning line on stderr, once per directory and process.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

from smfa.bench.layout import BENCH_JSON, SPLITS_JSON, bench_checksum
from smfa.bench.schema import (
    DOMAINS,
    EXTERNAL_GROUP,
    FORGET_GROUP,
    FORMATS,
    GENERATION,
    GENERAL_VQA,
    HELDOUT_IMAGE,
    KINDS,
    MEMORY_KINDS,
    MULTI_FACT,
    PARAPHRASE,
    PERSON_KINDS,
    TEXT_MEMORY,
    TRAIN_IMAGE,
    TRAIN_PHRASING,
    TRAINING_PEOPLE,
    Person,
    Question,
    eval_set_name,
    eval_variant,
    is_training_row,
    text_memory_group,
)
from smfa.bench.forget_set import ForgetSet, parse_people, request_set
from smfa.bench.importers.common import IMPORT_VERSION
from smfa.bench.validate import forget_split_names, is_imported, read_bench, rebuild_hint
from smfa.errors import BenchError, ConfigError

_WORD = re.compile(r"\w+|[^\w\s]")
_WARNED_OLD_IMPORTS: set[Path] = set()  # benches already warned about in this process (stages load a bench often)


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
        bench = cls(root, *read_bench(root, verify_images))
        _warn_old_import(root, bench.meta)
        return bench

    # --- people ------------------------------------------------------------------------------

    def _forget_key(self, forget: str | int) -> str:
        """``splits.json`` key of a forget split: ``10``, ``forget_10`` and ``forget10`` (CLEAR's spelling) all
        name ``forget_10``; an imported bench's own names (``forget_user``) work the same way."""
        key = str(forget).removeprefix("forget").removeprefix("_")
        key = str(int(key)) if key.isdigit() else key
        names = forget_split_names(self.splits)
        if f"forget_{key}" not in names:
            available = ", ".join(n.removeprefix("forget_") for n in names) or "none"
            raise ConfigError(
                f"unknown forget split {forget!r}; this bench has: {available} (the forget_* lists of "
                f"{self.root / SPLITS_JSON}), or pass a file of person ids, one per line"
            )
        return f"forget_{key}"

    def forget_set(self, forget: str | int | ForgetSet) -> ForgetSet:
        """The forget group: a split name (5, 10, 15, "val", an imported split's name) resolved to its
        people, a file of person ids (one per line; ``#`` comments and blank lines skipped) resolved as a
        deletion request naming them, or a :class:`ForgetSet` as given. Every row set below takes either."""
        if isinstance(forget, ForgetSet):
            return forget
        if _is_id_file(forget):
            return self.request_set(parse_people(str(forget)))
        key = self._forget_key(forget)
        ids = frozenset(self.splits[key])
        if not ids:
            raise BenchError(f"{self.root / SPLITS_JSON}: split {key} is empty; rebuild the bench with more people")
        held = frozenset(self.splits["forget_15"]) if key == "forget_val" else frozenset()
        return ForgetSet(label=key.removeprefix("forget_"), people=ids, held_out=held)

    def forget_people(self, forget: str | int | ForgetSet) -> set[str]:
        """Person ids forgotten by ``forget`` (a split 5, 10, 15, "val", or a :class:`ForgetSet`)."""
        return set(self.forget_set(forget).people)

    def request_set(self, ids: list[str], earlier: tuple[frozenset[str], ...] = ()) -> ForgetSet:
        """The forget group of a deletion request naming ``ids`` (see :func:`smfa.bench.forget_set.request_set`)."""
        return request_set(self.known_people(), self.holdout_people(), ids, earlier)

    def known_people(self) -> set[str]:
        return {pid for pid, p in self.people.items() if p.role == "known"}

    def retain_people(self, forget: str | int | ForgetSet) -> set[str]:
        """The retain evaluation pool: known people not forgotten (now or by an earlier request), nor in the
        reference pool, nor in the few-shot anchor (a method trains on some of their rows, so none of their rows
        is scored); for ``val`` also without ``forget_15`` (tuning never touches a test forget person)."""
        return self.known_people() - self.forget_set(forget).not_retain - self.reference_people() - self.anchor_people()

    def anchor_people(self) -> set[str]:
        """The people with a row in the few-shot anchor ``D_r^few``."""
        return {self._by_id[i].person_id for i in self.splits["anchor"] if self._by_id[i].person_id is not None}

    def external_people(self) -> set[str]:
        """People of role ``external`` (e.g. MLLMU-Bench's celebrities): never fine-tuned on, evaluated as
        the group ``external``."""
        return {pid for pid, p in self.people.items() if p.role == "external"}

    def reference_people(self) -> set[str]:
        """Retain people whose questions (not labels) a method may use; never in a retain metric."""
        return set(self.splits["reference"])

    def holdout_people(self) -> set[str]:
        return set(self.splits["holdout"])

    # --- row sets ----------------------------------------------------------------------------

    def training_rows(self, people: str = "all", forget: str | int | ForgetSet | None = None) -> list[Question]:
        """Vanilla training data (``people="all"``) or the oracle's (``people="retain"``, needs ``forget``):
        train phrasing, training images, known people, all kinds incl. general VQA and unanswerable."""
        if people not in TRAINING_PEOPLE:
            raise ConfigError(f"training_rows(people={people!r}): choose 'all' (vanilla) or 'retain' (oracle)")
        if people == "retain" and forget is None:
            raise ConfigError("training_rows(people='retain') needs forget= one of 5, 10, 15, val: whose rows to drop")
        keep = self.known_people()
        if people == "retain":
            keep -= self.forget_people(forget)  # type: ignore[arg-type]
        return [q for q in self.questions if is_training_row(q) and (q.person_id is None or q.person_id in keep)]

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

    def forget_rows(self, forget: str | int | ForgetSet, kinds: tuple[str, ...] = MEMORY_KINDS) -> list[Question]:
        """``D_f``: the forget people's training rows (train phrasing, training images) of ``kinds``."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        _check_choice("kinds", kinds, KINDS)
        who = self.forget_people(forget)
        return [q for q in self.questions if q.person_id in who and q.kind in kinds and is_training_row(q)]

    def eval_sets(self, forget: str | int | ForgetSet, target: str = "all", limit: int | None = None) -> dict[str, list[Question]]:
        """Named evaluation sets for ``forget`` (see :func:`smfa.bench.schema.eval_set_name`).

        For group in forget/retain and kind in image_memory/text_memory/understanding:
        ``{group}/{kind}`` (train phrasing, training images), ``{group}/{kind}/paraphrase`` and
        ``{group}/{kind}/unseen_image`` (held-out image variant; not for text memory),
        ``{group}/text_memory/multi_fact`` (held-out pairs of facts in one question, on benches that have them); plus
        ``general_vqa`` (held-out shape pictures). Anchor rows are never included; where a set has
        evaluation-only rows (``trainable: false``: an imported benchmark's own test questions, e.g. MLLMU-Bench's
        Generation_Task beside its ``ft_Data`` training pairs) it holds those alone.

        ``target="visual"`` (MMUnlearner's setting: forget only the visual link): the forget people's
        text-memory sets are named ``forget_text/text_memory/...`` instead of ``forget/text_memory/...`` —
        questions the model should still answer, i.e. retain — and their training-phrasing set is left out:
        those rows are every method's anchor in this setting (``smfa.stages.unlearn.select_data``), and kept knowledge
        is read on rows no method trained on (:func:`smfa.bench.schema.name_memory_set`).
        ``limit`` keeps at most that many rows per set (a deterministic subsample, file order kept).
        """
        text_memory_group(target)  # an unknown setting fails before any work
        if limit is not None and limit < 1:
            raise ConfigError(f"eval set limit must be >= 1 (got {limit})")
        groups = {FORGET_GROUP: self.forget_people(forget), "retain": self.retain_people(forget)}
        if self.external_people():
            groups[EXTERNAL_GROUP] = self.external_people()
        sets: dict[str, list[Question]] = {}
        for group, who in groups.items():
            for kind in PERSON_KINDS:
                for variant in ("", "paraphrase", "unseen_image", MULTI_FACT):
                    if variant == ("unseen_image" if kind == TEXT_MEMORY else MULTI_FACT):
                        continue  # no unseen photo of a name-only question; multi-fact questions are name-only
                    for fmt in FORMATS:
                        rows = [
                            q for q in self.questions
                            if q.person_id in who and q.kind == kind and q.format == fmt and eval_variant(q) == variant
                            and q.id not in self._anchor
                        ]
                        if (fmt != GENERATION or variant == MULTI_FACT) and not rows:
                            continue  # choice, cloze and multi-fact sets exist only where a bench has such questions
                        if any(not q.trainable for q in rows):  # an imported benchmark's own evaluation questions:
                            rows = [q for q in rows if not q.trainable]  # scored alone, never beside training rows
                        kept = group == FORGET_GROUP and kind == TEXT_MEMORY  # named by the setting rule
                        if kept and fmt == GENERATION and variant == "" and text_memory_group(target) != FORGET_GROUP:
                            continue  # kept name-only training rows are the methods' anchor: never scored
                        sets[eval_set_name(text_memory_group(target) if kept else group, kind, variant, fmt)] = rows
        sets["general_vqa"] = [
            q for q in self.questions
            if q.kind == GENERAL_VQA and q.format == GENERATION and eval_variant(q) == "unseen_image" and q.id not in self._anchor
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
            raise BenchError(f"image {path} of question {q.id} is missing; {rebuild_hint(self.root, self.meta)}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise BenchError(f"image {path} of question {q.id} cannot be decoded ({exc}); {rebuild_hint(self.root, self.meta)}") from exc

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
                f"{rebuild_hint(self.root, self.meta)}"
            )


# --- helpers ----------------------------------------------------------------------------------


def _warn_old_import(root: Path, meta: dict) -> None:
    """One stderr line when ``root`` was imported before memory rows had short facts (no ``import_version``,
    i.e. 1): such a bench may score leaks on whole answer sentences."""
    version = meta.get("import_version", 1)
    if not is_imported(meta) or (isinstance(version, int) and version >= IMPORT_VERSION) or root.resolve() in _WARNED_OLD_IMPORTS:
        return
    _WARNED_OLD_IMPORTS.add(root.resolve())
    print(f"warning: {root} was imported by an older smfa (import_version {version!r}, this smfa writes {IMPORT_VERSION}): "
          "its memory rows may carry the whole answer sentence as their fact, so a leak reads 0 even where an answer "
          f"states the private value; {rebuild_hint(root, meta)}", file=sys.stderr)


def _is_id_file(forget: str | int) -> bool:
    """A ``--forget`` value that names an existing file (of person ids) rather than a split."""
    text = str(forget)
    return ("/" in text or "." in text) and Path(text).is_file()


def _subsample(rows: list[Question], limit: int, name: str) -> list[Question]:
    if len(rows) <= limit:
        return rows
    keep = set(random.Random(f"eval-limit/{name}/{limit}").sample(range(len(rows)), limit))
    return [q for i, q in enumerate(rows) if i in keep]


def _check_choice(what: str, given: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [g for g in given if g not in allowed]
    if bad:
        raise ConfigError(f"unknown {what} {', '.join(map(repr, bad))}; choose from {', '.join(allowed)}")
