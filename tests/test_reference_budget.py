"""The ``self`` reference budget: the reference pool's questions labelled by the vanilla's own answers, in
every retain term, never in a retain metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smfa.bench import Bench
from smfa.errors import ConfigError


@pytest.mark.slow
def test_reference_rows_are_self_labelled_and_never_evaluated(micro_bench_dir: Path, micro_vanilla: Path, floor) -> None:
    from smfa.bench.schema import MEMORY_KINDS
    from smfa.models.loading import load_model
    from smfa.reference import self_labelled_reference

    bench = Bench.load(micro_bench_dir)
    ref = bench.reference_people()
    assert ref and not ref & bench.retain_people("10")
    rows = self_labelled_reference(bench, load_model(micro_vanilla), progress=False)
    assert {r.person_id for r in rows} == ref and {r.kind for r in rows} <= set(MEMORY_KINDS)
    truth = {q.id: q.answer for q in bench.questions}
    same = sum(r.answer == truth[r.id] for r in rows) / len(rows)
    floor.at_least("self-labels equal to the training answers", same, 0.7)  # the vanilla's own answers: mostly, not necessarily, the training answers
    assert all(r.fact == r.answer for r in rows)
    for name, eval_rows in bench.eval_sets("10").items():
        if name.startswith("retain"):
            assert not {q.person_id for q in eval_rows} & ref, name


@pytest.mark.slow
def test_reference_labels_are_computed_once_per_model_and_reused(micro_bench_dir: Path, micro_vanilla: Path,
                                                                 tmp_path: Path, monkeypatch) -> None:
    """Decision 4 of #25: every method, compare cell and request reuses the vanilla's labels of the pool."""
    import smfa.eval.generate as generate
    from smfa.models.digest import model_digest, weight_hashes
    from smfa.models.loading import load_model
    from smfa.models.placement import CPU_FP32
    from smfa.reference import self_labelled_reference

    bench = Bench.load(micro_bench_dir)
    vanilla = load_model(micro_vanilla)
    digest = model_digest(weight_hashes(micro_vanilla / "model"))
    first = self_labelled_reference(bench, vanilla, "self", progress=False, cache=tmp_path, model_digest=digest,
                                    placement=CPU_FP32)
    assert len(list(tmp_path.glob("*.json"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached labels were not reused")

    monkeypatch.setattr(generate, "generate_answers", no_generation)
    again = self_labelled_reference(bench, vanilla, "self", progress=False, cache=tmp_path, model_digest=digest,
                                    placement=CPU_FP32)
    assert again == first
    # A request naming pool people reuses the pool's labels (they were a cache miss, and a relabelling, before:
    # the key hashed the filtered questions); its people are removed after the cache.
    one = sorted(bench.reference_people())[0]
    request = self_labelled_reference(bench, vanilla, "self", progress=False, cache=tmp_path, model_digest=digest,
                                      placement=CPU_FP32, forgotten=frozenset({one}))
    assert request == [r for r in first if r.person_id != one] and len(request) < len(first)
    for other in ({"model_digest": "other"}, {"text_io": "another tokenizer"}, {"cap": 10}):
        with pytest.raises(AssertionError, match="not reused"):  # another model, tokenizer or sample: another key
            self_labelled_reference(bench, vanilla, "self", progress=False, cache=tmp_path, placement=CPU_FP32,
                                    **{"model_digest": digest, **other})
    # A cached file that does not hold one answer per question is relabelled, never zipped short.
    monkeypatch.undo()
    (path,) = tmp_path.glob("*.json")
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "answers": stored["answers"][:-3]}))
    healed = self_labelled_reference(bench, vanilla, "self", progress=False, cache=tmp_path, model_digest=digest,
                                     placement=CPU_FP32)
    assert healed == first and len(json.loads(path.read_text())["answers"]) == stored["n"]


def test_the_default_budget_is_the_selective_recipe_where_a_method_has_a_retain_term(tiny_bench_dir: Path) -> None:
    """``--reference auto`` (the default of unlearn, forget, compare, demo): self-full for every method with a
    retain term whose values were chosen for the budget, on a bench with a reference pool; none for the others
    (GA has no retain term; GA Difference, KL, NPO and MMUnlearner have no values for it yet) and on a bench
    without a pool."""
    from smfa.stages.compare import CompareConfig
    from smfa.methods import get_method, method_names
    from smfa.reference import resolve_reference
    from smfa.stages.unlearn import UnlearnConfig

    bench = Bench.load(tiny_bench_dir)
    assert UnlearnConfig().reference == CompareConfig().reference == "auto"
    for name in method_names():
        expected = "self-full" if name in ("smfa", "idk", "ties") else "none"
        assert resolve_reference("auto", get_method(name), bench) == expected, name
    assert resolve_reference("none", get_method("smfa"), bench) == "none"  # the paper recipe, on request

    class NoPool:
        def reference_people(self) -> set[str]:
            return set()

    assert resolve_reference("auto", get_method("smfa"), NoPool()) == "none"


def test_every_retain_term_sees_the_reference_rows() -> None:
    from smfa.methods.context import UnlearnData

    data = UnlearnData(forget_rows=["f"], anchor_rows=["a1", "a2"], reference_rows=["r1"])
    assert data.retain_rows == ["a1", "a2", "r1"]
    assert UnlearnData(forget_rows=["f"], anchor_rows=["a"]).retain_rows == ["a"]


def test_an_unknown_budget_is_refused(tiny_bench_dir: Path, tmp_path: Path, capsys) -> None:
    from smfa.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["unlearn", "--bench", str(tiny_bench_dir), "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
              "--reference", "labels"])
    assert exc.value.code == 2 and "invalid choice: 'labels'" in capsys.readouterr().err


def test_the_full_budget_adds_understanding_and_training_vqa_never_an_evaluated_question(tiny_bench_dir: Path) -> None:
    from smfa.bench.schema import GENERAL_VQA, MEMORY_KINDS, UNDERSTANDING
    from smfa.reference import REFERENCE_VQA_ROWS, reference_questions

    bench = Bench.load(tiny_bench_dir)
    memory = reference_questions(bench, "self")
    full = reference_questions(bench, "self-full")
    assert {q.kind for q in memory} == set(MEMORY_KINDS)
    assert {q.id for q in memory} < {q.id for q in full}
    assert {q.kind for q in full} == set(MEMORY_KINDS) | {UNDERSTANDING, GENERAL_VQA}
    people = {q.person_id for q in full if q.kind != GENERAL_VQA}
    assert people == bench.reference_people()
    assert 0 < sum(q.kind == GENERAL_VQA for q in full) <= REFERENCE_VQA_ROWS
    assert [q.id for q in reference_questions(bench, "self-full")] == [q.id for q in full]  # seeded
    evaluated = {q.id for rows in bench.eval_sets("10").values() for q in rows}
    assert not evaluated & {q.id for q in full}
    assert reference_questions(bench, "none") == []


@pytest.mark.slow
def test_the_kl_reference_loss_trains_reference_rows_towards_the_vanilla(micro_bench_dir: Path, micro_vanilla: Path,
                                                                        tmp_path: Path) -> None:
    """``reference_loss=kl``: the collated batches mark the reference rows, the MFA trains (its loss falls),
    and the MFA's cache key differs from the cross-entropy one (IDK and SMFA share an MFA only when equal)."""
    from smfa.data import DISTILL_KEY, make_collator, reference_items, refusal_items
    from smfa.methods import get_method
    from smfa.methods.context import UnlearnContext
    from smfa.methods.smfa import mfa_key, train_mfa
    from smfa.models.loading import load_model
    from smfa.stages.unlearn import select_data

    bench = Bench.load(micro_bench_dir)
    vanilla = load_model(micro_vanilla)
    data = select_data(bench, "10", "all", None, 0)
    data.reference_rows = [r for r in bench.training_rows() if r.person_id in bench.reference_people()][:40]
    ctx = UnlearnContext(bench=bench, vanilla=vanilla, data=data, target="all", seed=0, work_dir=tmp_path, progress=False)
    items = refusal_items(data.forget_rows[:2], seed=0) + reference_items(data.reference_rows[:2], distill=True)
    batch = make_collator(vanilla.family, vanilla.processor)(list(ctx.encode(items).examples))
    assert batch[DISTILL_KEY].tolist() == [False, False, True, True]
    plain = make_collator(vanilla.family, vanilla.processor)(list(ctx.encode(items[:2]).examples))
    assert DISTILL_KEY not in plain
    ce = get_method("idk").config(overrides={"max_steps": 6, "anchor_repeat": 1})
    kl = get_method("idk").config(overrides={"max_steps": 6, "anchor_repeat": 1, "reference_loss": "kl"})
    assert mfa_key(ctx, ce, data.forget_rows) != mfa_key(ctx, kl, data.forget_rows)
    import json
    import math

    train_mfa(ctx, kl, data.forget_rows, "idk")
    log = [json.loads(line) for line in (tmp_path / "train_logs" / "idk.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 6 and math.isfinite(log[-1]["train_loss"]) and log[-1]["train_loss"] > 0


def test_the_anchor_can_train_on_the_few_shot_anchor_alone(tmp_path: Path) -> None:
    """``anchor_reference=false``: the RA sees D_r^few only (the MFA keeps the reference rows), and the RA
    cache key says so."""
    from types import SimpleNamespace

    from smfa.errors import ConfigError
    from smfa.methods import get_method
    from smfa.methods.context import UnlearnData
    from smfa.methods.smfa import anchor_key, anchor_rows

    row = lambda i: SimpleNamespace(id=f"q{i}", answer=f"a{i}")  # noqa: E731
    data = UnlearnData(forget_rows=[row(0)], anchor_rows=[row(1), row(2)], reference_rows=[row(3)])
    from smfa.models.placement import CPU_FP32

    ctx = SimpleNamespace(data=data, model_digest="d", seed=0, placement=CPU_FP32)
    both = get_method("smfa").config(reference="self-full")
    few = get_method("smfa").config(overrides={"anchor_reference": False}, reference="self-full")
    assert [r.id for r in anchor_rows(ctx, both)] == ["q1", "q2", "q3"]
    assert [r.id for r in anchor_rows(ctx, few)] == ["q1", "q2"]
    assert anchor_key(ctx, both) != anchor_key(ctx, few)
    with pytest.raises(ConfigError, match="'anchor_reference' expects true/false, got 'maybe'"):
        get_method("smfa").config(overrides={"anchor_reference": "maybe"})


def test_a_capped_budget_is_a_fixed_balanced_sample(tiny_bench_dir: Path) -> None:
    """Decision 2 of #34: the reference budget is a fixed amount of work. ``reference_cap`` keeps at most that
    many questions whatever the pool's size, each kind at its share of the pool, every person thinned rather
    than some dropped, the same sample every time."""
    from collections import Counter

    from smfa.methods import get_method
    from smfa.reference import balanced_sample, reference_questions

    bench = Bench.load(tiny_bench_dir)
    pool = reference_questions(bench, "self-full")
    capped = reference_questions(bench, "self-full", cap=600)
    assert len(capped) == 600 and {q.id for q in capped} <= {q.id for q in pool}
    assert [q.id for q in reference_questions(bench, "self-full", cap=600)] == [q.id for q in capped]
    share, kept = Counter(q.kind for q in pool), Counter(q.kind for q in capped)
    for kind, n in share.items():
        assert abs(kept[kind] - 600 * n / len(pool)) < 1, kind
    people = Counter(q.person_id for q in capped if q.person_id in bench.reference_people())
    assert set(people) == bench.reference_people() and max(people.values()) - min(people.values()) <= 3
    assert balanced_sample(pool, 0, 0) == pool and balanced_sample(pool, len(pool) + 5, 0) == pool
    with pytest.raises(ConfigError, match="reference_cap"):
        get_method("smfa").config(overrides={"reference_cap": -1})
