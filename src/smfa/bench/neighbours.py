"""Neighbour evaluation sets (issue #31): the retain people who resemble a forgotten person, scored apart.

A refusal trigger learnt on surfaces — words of a name, a look, a private value — fires on retain people who
share that surface with someone forgotten. These sets find them, deterministically, from the bench as it is
(nothing is generated or stored; a bench's files and checksum do not change). Only the retain evaluation pool
is searched (:meth:`smfa.bench.Bench.retain_people`: never trained on by any method — not the reference pool,
not an anchor person, not a held-out forget split), and "forgotten" means everyone the forget group has
forgotten so far (a chain's earlier requests included).

- ``name``: a retain person one of whose name words (case-folded, two letters or more) is a word of a forgotten
  person's name ("Faelena Haskvale" and "Orin Haskvale"); all their memory questions count.
- ``look``: a retain person whose portrait agrees with a forgotten person's in at least
  :data:`LOOK_MIN_EQUAL` of the :data:`LOOK_FEATURES` — the seven visible identity features the renderer draws
  recognisably at 32 px (background, shirt, hair colour, hair style, skin tone, glasses, hat; eye colour and
  beard are left out: too small to identify anyone there). Five of seven is as alike as the generator lets two
  people be (any two differ in at least two, ``min_visual_distance``); a bare majority (four) holds for most
  retain people of a tiny bench by chance (pools of 2 to 10 values, 18 forget people). All their memory
  questions count.
- ``attribute``: a retain person's memory questions that ask for a private attribute (``Person.attributes``:
  home city, occupation, employer, birth year, medical condition) whose value a forgotten person shares
  ("Where does X live?" when X and a forgotten person both live in Zephrine); a multi-fact question counts when
  any of its attributes is shared. Only those questions count, not the person's others.

Each set is split by kind (``image_memory``: by photo; ``text_memory``: by name) and phrasing (training, held
out): sets ``neighbour/<set>/<kind>`` and ``neighbour/<set>/<kind>/paraphrase``, whose rows are the retain
evaluation sets' rows of those people (no anchor row, the same row rule as
:meth:`smfa.bench.Bench.eval_sets`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smfa.bench.profiles import VISIBLE_FEATURES
from smfa.bench.schema import MEMORY_KINDS, MULTI_FACT_JOIN, PARAPHRASE, Person, Question

NEIGHBOUR_SETS = ("name", "look", "attribute")
NEIGHBOUR_GROUP = "neighbour"  # evaluation-set prefix: neighbour/<set>/<kind>[/paraphrase]
NEIGHBOUR_VARIANTS = ("", PARAPHRASE)  # training phrasing, held-out phrasing
LOOK_FEATURES = VISIBLE_FEATURES
LOOK_MIN_EQUAL = 5  # of the 7 LOOK_FEATURES: differing in at most 2, the closest two people of a bench can be
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Neighbours:
    """The neighbour sets of one forget group (:func:`find_neighbours`).

    ``name`` and ``look`` are retain people (all their memory questions count); ``attribute`` maps each retain
    person who shares a private value with a forgotten person to the attributes shared (only questions asking
    for one of them count)."""

    name: frozenset[str]
    look: frozenset[str]
    attribute: Mapping[str, frozenset[str]]

    def people(self, which: str) -> frozenset[str]:
        """The retain people of set ``which`` (one of :data:`NEIGHBOUR_SETS`)."""
        if which == "attribute":
            return frozenset(self.attribute)
        return {"name": self.name, "look": self.look}[which]

    def covers(self, which: str, q: Question) -> bool:
        """Whether memory question ``q`` belongs to set ``which``."""
        if q.kind not in MEMORY_KINDS or q.person_id is None:
            return False
        if which == "attribute":
            shared = self.attribute.get(q.person_id, frozenset())
            return any(part in shared for part in q.attribute.split(MULTI_FACT_JOIN))
        return q.person_id in self.people(which)


def name_words(name: str) -> frozenset[str]:
    """The words of a name that can be shared: case-folded, two letters or more (no initials)."""
    return frozenset(w for w in _WORD.findall(name.casefold()) if len(w) > 1)


def looks_alike(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Whether two portraits (``Person.visual``) agree in at least :data:`LOOK_MIN_EQUAL` of :data:`LOOK_FEATURES`;
    a person without those features (an imported bench's) looks like no one."""
    if any(f not in a or f not in b for f in LOOK_FEATURES):
        return False
    return sum(a[f] == b[f] for f in LOOK_FEATURES) >= LOOK_MIN_EQUAL


def find_neighbours(people: Mapping[str, Person], forgotten: frozenset[str] | set[str],
                    retain: frozenset[str] | set[str]) -> Neighbours:
    """The neighbour sets of the ``retain`` people with respect to the ``forgotten`` ones (both person ids of
    ``people``); a pure function of its arguments."""
    gone = [people[p] for p in sorted(forgotten)]
    words = frozenset().union(*(name_words(p.name) for p in gone))
    name, look, attribute = set(), set(), {}
    for pid in sorted(retain):
        p = people[pid]
        if name_words(p.name) & words:
            name.add(pid)
        if any(looks_alike(p.visual, q.visual) for q in gone):
            look.add(pid)
        shared = frozenset(a for a, v in p.attributes.items() if any(q.attributes.get(a) == v for q in gone))
        if shared:
            attribute[pid] = shared
    return Neighbours(name=frozenset(name), look=frozenset(look), attribute=attribute)


def neighbour_set_name(which: str, kind: str, variant: str = "") -> str:
    """``neighbour/name/image_memory``, ``neighbour/look/text_memory/paraphrase``."""
    return f"{NEIGHBOUR_GROUP}/{which}/{kind}" + (f"/{variant}" if variant else "")


def neighbour_sets(bench: Any, forget: Any, limit: int | None = None) -> dict[str, list[Question]]:
    """The neighbour evaluation sets of ``bench`` (a :class:`smfa.bench.Bench`) for ``forget`` (a split name or a
    :class:`smfa.bench.forget_set.ForgetSet`), named by :func:`neighbour_set_name`, every set present (possibly
    empty); ``limit`` keeps at most that many rows per set (a deterministic subsample, file order kept)."""
    group = bench.forget_set(forget)
    found = find_neighbours(bench.people, group.forgotten, bench.retain_people(group))
    retain = bench.eval_sets(group)
    sets: dict[str, list[Question]] = {}
    for which in NEIGHBOUR_SETS:
        for kind in MEMORY_KINDS:
            for variant in NEIGHBOUR_VARIANTS:
                rows = retain.get(f"retain/{kind}" + (f"/{variant}" if variant else ""), [])
                name = neighbour_set_name(which, kind, variant)
                sets[name] = _subsample([q for q in rows if found.covers(which, q)], limit, name)
    return sets


def neighbour_people(bench: Any, forget: Any) -> dict[str, int]:
    """How many retain people each neighbour set holds for ``forget``."""
    group = bench.forget_set(forget)
    found = find_neighbours(bench.people, group.forgotten, bench.retain_people(group))
    return {which: len(found.people(which)) for which in NEIGHBOUR_SETS}


def _subsample(rows: list[Question], limit: int | None, name: str) -> list[Question]:
    if limit is None or len(rows) <= limit:
        return rows
    keep = set(random.Random(f"neighbours/{name}/{limit}").sample(range(len(rows)), limit))
    return [q for i, q in enumerate(rows) if i in keep]
