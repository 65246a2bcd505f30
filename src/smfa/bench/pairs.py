"""Planted neighbour pairs (bench v3, ``BenchConfig.neighbour_pairs``): retain people made to resemble forget people.

The neighbour evaluation sets (:mod:`smfa.bench.neighbours`) are found by chance on a bench drawn at random, and on
the tiny preset chance gives a handful of name-sharing and look-alike retain people per forget split. With
``neighbour_pairs`` = s > 0 the generator plants them: in each *group* a share s of the forget people get a **name
twin** (a retain person whose first or last name becomes the forget person's) and a share s get a **look twin** (a
retain person whose seven visible identity features become the forget person's but for two, drawn at random: 5 of
7 equal, the :data:`smfa.bench.neighbours.LOOK_MIN_EQUAL` of the look set, and still at least
``min_visual_distance`` from everyone). Every twin is a different person, and only names and visible features
change: private attributes, patients, roles, splits, question ids and the anchor stay as the seed drew them.

The groups and where their twins live (never the reference pool, never an anchor person; the pools of
:meth:`smfa.bench.Bench.retain_people`):

- ``forget_10`` (``forget_5`` and ``forget_10 - forget_5`` each give their share, so ``forget_5`` has its own
  twins): twins among the ``forget_val`` people first, then ``forget_15 - forget_10`` — both in forget 10's retain
  evaluation pool, and the ``forget_val`` twins also in forget 15's;
- ``forget_val``: twins among the known people in no split and no anchor row (val's whole retain evaluation pool).

A twin of a ``forget_val`` person who is also a name twin of a ``forget_10`` person copies the word of its own name,
not the one planted from forget 10, so val's twins do not become forget 10's by a chain.
"""

from __future__ import annotations

import random
from dataclasses import replace

from smfa.bench.config import BenchConfig
from smfa.bench.neighbours import LOOK_MIN_EQUAL, name_words
from smfa.bench.profiles import FEATURE_VALUES, VISIBLE_FEATURES, visual_distance
from smfa.bench.schema import Person
from smfa.errors import ConfigError

LOOK_CHANGED = len(VISIBLE_FEATURES) - LOOK_MIN_EQUAL  # features a look twin does not share (2 of 7)


def twin_groups(splits: dict[str, list[str]], known: set[str],
                anchor_people: set[str]) -> list[tuple[str, list[list[str]], list[list[str]]]]:
    """``(group, layers of forget people, layers of host people)`` in planting order; person ids sorted in each
    layer. forget_10's hosts are forget_val and forget_15 - forget_10; forget_val's, its retain evaluation pool."""
    f5, f10, f15, val = (set(splits[s]) for s in ("forget_5", "forget_10", "forget_15", "forget_val"))
    core = known - f15 - val - set(splits["reference"]) - anchor_people
    return [
        ("forget_10", [sorted(f5), sorted(f10 - f5)], [sorted(val - anchor_people), sorted(f15 - f10 - anchor_people)]),
        ("forget_val", [sorted(val)], [sorted(core)]),
    ]


def plant_neighbour_pairs(people: list[Person], splits: dict[str, list[str]], anchor_people: set[str],
                          cfg: BenchConfig) -> tuple[list[Person], dict[str, dict[str, int]]]:
    """``people`` with the twins of ``cfg.neighbour_pairs`` planted (the list unchanged when it is 0), and the groups
    whose pool held fewer hosts than their twins: ``{group: {"asked": n, "planted": m, "pool": hosts}}`` (empty on
    the presets).
    Such a group (a small custom bench: the tiny preset plants by default) gets as many twins as its pool holds,
    name and look twins alternating; the caller says so. A pure function of its arguments."""
    share = cfg.neighbour_pairs
    short: dict[str, dict[str, int]] = {}
    if not share:
        return people, short
    rng = cfg.rng("neighbour-pairs")
    by_id = {p.person_id: p for p in people}
    known = {p.person_id for p in people if p.role == "known"}
    planted_word: dict[str, int] = {}  # host id -> position of the name word it received
    for group, layers, host_layers in twin_groups(splits, known, anchor_people):
        name_targets: list[str] = []
        look_targets: list[str] = []
        for layer in layers:
            order = rng.sample(layer, len(layer))
            k = round(share * len(layer))
            name_targets += order[:k]
            look_targets += order[len(order) - k:]
        hosts = [pid for layer in host_layers for pid in rng.sample(layer, len(layer))]
        need = len(name_targets) + len(look_targets)
        if need > len(hosts):  # as many as the pool holds
            n_name = min(len(name_targets), (len(hosts) + 1) // 2)
            n_look = min(len(look_targets), len(hosts) - n_name)
            short[group] = {"asked": need, "planted": n_name + n_look, "pool": len(hosts)}
            name_targets, look_targets = name_targets[:n_name], look_targets[:n_look]
        for target, host in zip(name_targets, hosts):
            by_id[host] = _name_twin(by_id[host], by_id[target], by_id, planted_word, rng)
        for target, host in zip(look_targets, hosts[len(name_targets):]):
            by_id[host] = _look_twin(by_id[host], by_id[target], by_id, cfg, rng)
    return [by_id[p.person_id] for p in people], short


def _name_twin(host: Person, target: Person, by_id: dict[str, Person], planted_word: dict[str, int],
               rng: random.Random) -> Person:
    """``host`` renamed to share one name word (first with first or last with last) with ``target``."""
    if name_words(host.name) & name_words(target.name):
        return host  # shares a word already
    first = planted_word.get(target.person_id)
    positions = [1 - first] if first is not None else rng.sample([0, 1], 2)
    taken = {p.name for p in by_id.values()}
    own, theirs = host.name.split(" "), target.name.split(" ")
    for pos in positions:
        words = list(own)
        words[pos] = theirs[pos]
        name = " ".join(words)
        if name not in taken:
            planted_word[host.person_id] = pos
            return replace(host, name=name)
    raise ConfigError(f"bench config: cannot give {host.person_id} a name word of {target.name!r} without repeating a "
                      "name; try another --seed")


def _look_twin(host: Person, target: Person, by_id: dict[str, Person], cfg: BenchConfig, rng: random.Random) -> Person:
    """``host`` with ``target``'s visible features but for :data:`LOOK_CHANGED` of them, at least
    ``cfg.min_visual_distance`` from every other person (its eye colour and beard kept)."""
    others = [tuple(p.visual[f] for f in VISIBLE_FEATURES) for pid, p in by_id.items() if pid != host.person_id]
    visual = look_alike_visual(host.visual, target.visual, others, cfg.min_visual_distance, rng)
    if visual is None:
        raise ConfigError(f"bench config: cannot draw a look twin of {target.person_id} at least {cfg.min_visual_distance} "
                          "features from everyone; try another --seed or lower min_visual_distance")
    return replace(host, visual=visual)


def look_alike_visual(base: dict[str, str], target: dict[str, str], others: list[tuple[str, ...]], min_distance: int,
                      rng: random.Random, tries: int = 2000) -> dict[str, str] | None:
    """``base``'s features with ``target``'s visible ones but for :data:`LOOK_CHANGED` of them (redrawn from the other
    values), the shirt never the background's colour, at least ``min_distance`` visible features from each of
    ``others`` (tuples in :data:`VISIBLE_FEATURES` order); None when ``tries`` draws find none."""
    for _ in range(tries):
        visual = dict(base)
        visual.update({f: target[f] for f in VISIBLE_FEATURES})
        for f in rng.sample(VISIBLE_FEATURES, LOOK_CHANGED):
            visual[f] = rng.choice([v for v in FEATURE_VALUES[f] if v != target[f]])
        if visual["shirt_colour"] == visual["background_colour"]:
            continue
        key = tuple(visual[f] for f in VISIBLE_FEATURES)
        if all(visual_distance(key, k) >= min_distance for k in others):
            return visual
    return None
