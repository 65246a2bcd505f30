"""Who is forgotten: the forget group of one unlearning run or evaluation, resolved to person ids.

A forget group comes from a bench split (``--forget 10``) or from a deletion request naming people
(``--forget-people p0020,p0052``), and in a chain of requests it also carries the people of every earlier
request. :class:`smfa.bench.Bench` resolves a split name to a :class:`ForgetSet` (``Bench.forget_set``) and
every row set — ``forget_rows``, ``retain_people``, ``eval_sets``, the anchor filter of ``select_data`` —
takes either, so "who is forgotten" and "who is retain" are decided here and nowhere else:

- forgotten now: ``people``; forgotten before: ``earlier`` (one set per earlier request, oldest first);
- retain (evaluation pool): the known people in neither, nor in ``held_out``, nor in the bench's reference
  pool (``held_out`` is ``forget_15`` while tuning on ``val``: tuning never scores a test forget person).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError

REQUEST_LABEL = "request"  # metrics.json "forget" of a run whose forget group is a list of people


@dataclass(frozen=True)
class ForgetSet:
    """A resolved forget group (see the module docstring)."""

    label: str  # the split name ("5", "10", "15", "val") or REQUEST_LABEL for explicit people
    people: frozenset[str]  # forgotten by this run
    earlier: tuple[frozenset[str], ...] = ()  # forgotten by earlier requests of the chain, oldest first
    held_out: frozenset[str] = field(default_factory=frozenset)  # neither forgotten nor retain

    @property
    def forgotten(self) -> frozenset[str]:
        """Everyone forgotten so far: this run's people and every earlier request's."""
        return self.people.union(*self.earlier)

    @property
    def not_retain(self) -> frozenset[str]:
        return self.forgotten | self.held_out


def read_id_list(spec: str) -> list[str]:
    """Person ids from ``spec`` as written: a file (one id per line; blank lines and ``#`` comments skipped) or
    else a comma list (empty items skipped). The one reading of an id list; :func:`parse_people` checks it."""
    path = Path(spec).expanduser()
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return [x for x in (line.split("#", 1)[0].strip() for line in lines) if x]
    return [x.strip() for x in spec.split(",") if x.strip()]


def parse_people(spec: str) -> list[str]:
    """The people of a request or ``--forget FILE``: :func:`read_id_list`, duplicates dropped; a spec that names
    a file which does not exist, or that lists no id, is a one-line :class:`ConfigError`."""
    if not Path(spec).expanduser().is_file() and ("/" in spec or spec.endswith((".txt", ".csv", ".lst"))):
        raise ConfigError(f"people file {Path(spec).expanduser()} does not exist (give a file with one person id per "
                          "line, or a comma list)")
    ids = read_id_list(spec)
    if not ids:
        raise ConfigError(f"no person ids in {spec!r} (give a comma list, e.g. p0020,p0052, or a file with one id per line)")
    return list(dict.fromkeys(ids))


def request_set(known: set[str], holdout: set[str], ids: Iterable[str],
                earlier: tuple[frozenset[str], ...] = ()) -> ForgetSet:
    """The forget group of a deletion request: ``ids`` must be known people (trained on), not already
    forgotten by an earlier request of the chain; a bad id is a one-line :class:`ConfigError` naming it."""
    ids = [i.strip() for i in ids if i.strip()]
    if not ids:
        raise ConfigError("the deletion request names no people (give person ids, e.g. --people p0020,p0052)")
    unknown = [i for i in dict.fromkeys(ids) if i not in known]
    if unknown:
        never = [i for i in unknown if i in holdout]
        what = (f"{never[0]} is a holdout person the model never saw" if never and len(unknown) == 1
                else f"unknown person id{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:10])}"
                     + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""))
        raise ConfigError(f"{what}: a request may name only known people of the bench (people.jsonl, role known)")
    again = [i for i in ids if any(i in e for e in earlier)]
    if again:
        raise ConfigError(f"person {again[0]} was already forgotten by an earlier request of this chain "
                          f"({len(again)} such id{'s' if len(again) > 1 else ''}); drop them from the request")
    return ForgetSet(label=REQUEST_LABEL, people=frozenset(ids), earlier=tuple(earlier))


def resolve_forget(bench: Any, forget: str, people: str | None,
                   earlier: tuple[frozenset[str], ...] = ()) -> ForgetSet:
    """The forget group of a run: the named ``people`` (a request: comma list or file) or else the split
    ``forget``, with ``earlier``, the people of the chain's earlier requests
    (:attr:`smfa.stages.forget.Chain.earlier_people`). The one place a split name or an id list becomes people."""
    if people:
        return bench.request_set(parse_people(people), earlier)
    group = bench.forget_set(str(forget))
    if earlier:
        bench.request_set(sorted(group.people), earlier)  # the same checks: no one forgotten twice
        group = replace(group, earlier=earlier)
    return group
