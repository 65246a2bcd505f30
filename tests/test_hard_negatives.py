"""Hard-negative reference rows (issue 36): the reference-pool people who resemble a request's people — a shared
name word, a look-alike portrait, by smfa.bench.neighbours' definitions — take a share of the capped reference
sample's memory questions, labelled apart from the pool's shared labels."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from smfa.bench import Bench
from smfa.errors import ConfigError


def _words(name: str) -> set[str]:
    return {w for w in re.findall(r"\w+", name.casefold()) if len(w) > 1}


@pytest.mark.parametrize("forget", ["val", "10"])
def test_the_hard_negatives_are_the_pool_people_sharing_a_name_word_or_a_look(tiny_bench_dir: Path,
                                                                               forget: str) -> None:
    from smfa.bench.profiles import VISIBLE_FEATURES
    from smfa.reference import hard_negative_people

    bench = Bench.load(tiny_bench_dir)
    gone = bench.forget_set(forget).forgotten
    words = set().union(*(_words(bench.people[p].name) for p in gone))
    pool = bench.reference_people() - gone
    expected = {pid for pid in pool
                if _words(bench.people[pid].name) & words
                or any(sum(bench.people[pid].visual[f] == bench.people[g].visual[f] for f in VISIBLE_FEATURES) >= 5
                       for g in gone)}
    found = hard_negative_people(bench, gone)
    assert found == expected and 0 < len(found) < len(pool)
    assert hard_negative_people(bench, frozenset()) == frozenset()
    # A request naming a pool person: the searched pool is the rest of it (no one is their own hard negative).
    one = sorted(found)[0]
    assert one not in hard_negative_people(bench, gone | {one})


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_the_hard_negatives_take_their_share_of_the_capped_sample(tiny_bench_dir: Path, share: float) -> None:
    from smfa.bench.schema import MEMORY_KINDS
    from smfa.reference import hard_negative_people, reference_questions, with_hard_negatives

    bench = Bench.load(tiny_bench_dir)
    people = hard_negative_people(bench, bench.forget_set("val").forgotten)
    pool = reference_questions(bench, "self-full")
    sample = reference_questions(bench, "self-full", cap=1000)
    rows = with_hard_negatives(sample, pool, people, share, seed=0)
    assert len(rows) == len(sample) and Counter(q.kind for q in rows) == Counter(q.kind for q in sample)
    assert [q for q in rows if q.kind not in MEMORY_KINDS] == [q for q in sample if q.kind not in MEMORY_KINDS]
    for kind in MEMORY_KINDS:
        quota = sum(q.kind == kind for q in sample)
        before = sum(q.kind == kind and q.person_id in people for q in sample)
        after = sum(q.kind == kind and q.person_id in people for q in rows)
        assert after == round(share * quota) > before, kind
        assert {q.person_id for q in rows if q.kind == kind and q.person_id in people} == people, kind
    # Every other question is the sample's own (its labels are reused).
    assert {q.id for q in rows if q.person_id not in people} <= {q.id for q in sample}
    assert with_hard_negatives(sample, pool, people, 0.0, seed=0) == sample
    assert with_hard_negatives(sample, pool, frozenset(), share, seed=0) == sample


def test_the_hard_negatives_are_labelled_apart_under_a_key_of_their_own(tiny_bench_dir: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    """The capped sample keeps its cache file (every request shares it); the hard negatives outside it are labelled
    once per set of hard negatives: another request's hard negatives, another key. Off: today's rows."""
    import smfa.eval.generate as generate
    from smfa.bench.schema import MEMORY_KINDS
    from smfa.reference import hard_negative_people, label_path, reference_questions, self_labelled_reference

    labelled: list[list[str]] = []

    def fake_answers(model, rows, bench, **kwargs):
        labelled.append([q.id for q in rows])
        return [f"answer {q.id}" for q in rows]

    monkeypatch.setattr(generate, "generate_answers", fake_answers)
    bench = Bench.load(tiny_bench_dir)
    val, ten = bench.forget_set("val").forgotten, bench.forget_set("10").forgotten

    def run(forgotten: frozenset[str], share: float) -> list:
        return self_labelled_reference(bench, None, "self-full", progress=False, forgotten=forgotten, cap=1000,
                                       cache=tmp_path, model_digest="vanilla", hard_negatives=share)

    sample = reference_questions(bench, "self-full", cap=1000)
    off = run(val, 0.0)
    assert [q.id for q in off] == [q.id for q in sample if q.person_id not in val] and len(labelled) == 1
    assert {p.name for p in tmp_path.glob("*.json")} == {label_path(bench, sample, tmp_path, "vanilla", None, None).name}

    on = run(val, 0.5)
    hard = hard_negative_people(bench, val)
    extra = [q for q in on if q.id not in {s.id for s in sample}]
    assert extra and {q.person_id for q in extra} <= hard and labelled[1:] == [[q.id for q in extra]]
    assert all(q.answer == f"answer {q.id}" == q.fact for q in on) and len(on) == len(off)
    assert sum(q.person_id in hard for q in on) > sum(q.person_id in hard for q in off)
    assert run(val, 0.5) == on and len(labelled) == 2  # both parts cached
    twice = self_labelled_reference(bench, None, "self-full", progress=False, forgotten=val, cap=1000, cache=tmp_path,
                                    model_digest="vanilla", hard_negatives=0.5, hard_negative_repeat=2)
    copies = [q for q in on if q.person_id in hard and q.kind in MEMORY_KINDS]
    assert twice == on + copies and copies and len(labelled) == 2  # copies on top of the cap, no new label
    # Repeat alone: the balanced sample's own hard-negative questions, copied.
    thrice = self_labelled_reference(bench, None, "self-full", progress=False, forgotten=val, cap=1000, cache=tmp_path,
                                     model_digest="vanilla", hard_negative_repeat=3)
    own = [q for q in off if q.person_id in hard and q.kind in MEMORY_KINDS]
    assert thrice == off + own * 2 and own and len(labelled) == 2

    other = run(ten, 0.5)  # another request: other hard negatives, another key; the sample's labels reused
    extra_ten = [q for q in other if q.id not in {s.id for s in sample}]
    assert hard_negative_people(bench, ten) != hard and labelled[2:] == [[q.id for q in extra_ten]]
    keys = {label_path(bench, rows, tmp_path, "vanilla", None, None) for rows in (sample, extra, extra_ten)}
    assert len(keys) == 3 and {p for p in tmp_path.glob("*.json")} == keys


def test_hard_negatives_are_off_by_default_and_a_share(tiny_bench_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Every shipped config leaves them off (the default changes on validation evidence only); a share outside
    [0, 1] is refused; ``smfa unlearn --param hard_negatives=S`` reaches the reference rows."""
    import smfa
    import smfa.stages.unlearn as stage
    from smfa.methods import get_method

    for name in ("smfa", "idk", "ties"):
        assert get_method(name).config(reference="self-full").hard_negatives == 0.0
    with pytest.raises(ConfigError, match="hard_negatives"):
        get_method("smfa").config(overrides={"hard_negatives": 1.5})
    with pytest.raises(ConfigError, match="hard_negative_repeat"):
        get_method("smfa").config(overrides={"hard_negative_repeat": 0})

    class Reached(Exception):
        pass

    def spy(*args, **kwargs):
        raise Reached(kwargs["hard_negatives"], kwargs["hard_negative_repeat"])

    monkeypatch.setattr(stage, "self_labelled_reference", spy)
    with pytest.raises(Reached) as seen:
        stage.unlearn(stage.UnlearnConfig(bench=str(tiny_bench_dir), model=str(Path(smfa.__file__).parent / "pretrained" / "tiny-seed0"),
                                          out=str(tmp_path / "run"),
                                          forget="val", params={"hard_negatives": 0.5, "hard_negative_repeat": 3},
                                          progress=False,
                                          device="cpu"))
    assert seen.value.args == (0.5, 3)
