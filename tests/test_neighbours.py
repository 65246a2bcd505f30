"""Neighbour evaluation sets (issue #31, smfa.bench.neighbours): retain people who share a name word, a look or
a private value with a forgotten person, found from the bench at evaluation time and scored apart."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from smfa.bench import Bench
from smfa.bench.neighbours import NEIGHBOUR_SETS, find_neighbours, neighbour_people, neighbour_sets
from smfa.bench.schema import Person, Question

LOOK = {"background_colour": "purple", "shirt_colour": "teal", "hair_colour": "black", "hair_style": "short",
        "skin_tone": "pale", "glasses": "no", "hat": "yes", "eye_colour": "grey", "beard": "no"}
FAR = {"background_colour": "white", "shirt_colour": "red", "hair_colour": "blond", "hair_style": "long",
       "skin_tone": "dark", "glasses": "yes", "hat": "no", "eye_colour": "blue", "beard": "yes"}
ATTRS = {"home_city": "Zephrine", "occupation": "mechanic", "employer": "Pendrake Insurance", "birth_year": "2000",
         "medical_condition": "arthritis"}


def _other_attrs(i: int) -> dict[str, str]:
    return {k: f"{v}-{i}" for k, v in ATTRS.items()}


def _person(pid: str, name: str, visual: dict[str, str] | None = None, attrs: dict[str, str] | None = None) -> Person:
    return Person(person_id=pid, name=name, attributes=attrs or _other_attrs(int(pid[1:])), visual=visual or FAR)


def _rows(p: Person) -> list[Question]:
    """Per person: a photo and a name question in training phrasing (home city), and both in a held-out phrasing
    (occupation), plus an understanding question (never a neighbour row)."""
    out = []
    for kind, image in (("image_memory", f"images/{p.person_id}.png"), ("text_memory", None)):
        for phrasing, attr in (("train", "home_city"), ("paraphrase", "occupation")):
            value = p.attributes[attr]
            out.append(Question(id=f"{p.person_id}-{kind}-{phrasing}", kind=kind, domain="portrait" if image else "none",
                                attribute=attr, question=f"{attr} of {p.name}?", answer=f"It is {value}.", fact=value,
                                person_id=p.person_id, image=image, variant=0 if image else None,
                                image_split="train" if image else None, phrasing=phrasing))
    out.append(Question(id=f"{p.person_id}-und", kind="understanding", domain="portrait", attribute="hat",
                        question="Hat?", answer="yes", fact="yes", person_id=p.person_id,
                        image=f"images/{p.person_id}.png", variant=0, image_split="train"))
    return out


def _hand_bench() -> Bench:
    """Forget 10 = {p0001 Faelena Haskvale}; validation forget = {p0008 Ilse Varrow}; forget_15 adds p0009."""
    people = [
        _person("p0001", "Faelena Haskvale", LOOK, ATTRS),  # forgotten (forget_10)
        _person("p0002", "Orin Haskvale"),  # retain, shares the surname: name
        _person("p0003", "Brin Haskvale"),  # reference pool, shares the surname: never a neighbour
        _person("p0004", "Tam Haskvale"),  # an anchor person, shares the surname: never a neighbour
        _person("p0005", "Kel Morrow", {**LOOK, "hat": "no", "glasses": "yes", "eye_colour": "blue"}),  # 5 of 7: look
        _person("p0006", "Dov Pellin", {**LOOK, "hat": "no", "glasses": "yes", "skin_tone": "dark"}),  # 4 of 7 only
        _person("p0007", "Sela Quin", attrs={**_other_attrs(7), "home_city": "Zephrine"}),  # shares a city: attribute
        _person("p0008", "Ilse Varrow"),  # forget_val
        _person("p0009", "Aron Varrow"),  # forget_15 (not forget_10): retain for 10, held out for val
        _person("p0010", "Nim Osk"),  # retain, nothing shared
    ]
    questions = [q for p in people for q in _rows(p)]
    splits = {"forget_5": ["p0001"], "forget_10": ["p0001"], "forget_15": ["p0001", "p0009"], "forget_val": ["p0008"],
              "holdout": [], "reference": ["p0003"], "anchor": ["p0004-text_memory-train"]}
    return Bench(Path("/nonexistent"), {"checksum": "0" * 64}, {p.person_id: p for p in people}, questions, splits)


def _ids(rows: list[Question]) -> set[str]:
    return {q.id for q in rows}


def test_neighbour_sets_on_a_hand_built_bench() -> None:
    bench = _hand_bench()
    sets = neighbour_sets(bench, "10")
    assert neighbour_people(bench, "10") == {"name": 1, "look": 1, "attribute": 1}
    # name: the retain person with the surname; not the reference-pool nor the anchor person with it
    assert _ids(sets["neighbour/name/image_memory"]) == {"p0002-image_memory-train"}
    assert _ids(sets["neighbour/name/text_memory/paraphrase"]) == {"p0002-text_memory-paraphrase"}
    # look: 5 of the 7 visible features equal (eye colour and beard do not count), not 4
    assert {q.person_id for name, rows in sets.items() if "/look/" in name for q in rows} == {"p0005"}
    # attribute: only the question asking for the shared value (home city), not the person's other questions
    assert _ids(sets["neighbour/attribute/image_memory"]) == {"p0007-image_memory-train"}
    assert _ids(sets["neighbour/attribute/text_memory"]) == {"p0007-text_memory-train"}
    assert sets["neighbour/attribute/image_memory/paraphrase"] == []
    # every set is memory rows of retain evaluation people only
    everyone = {q.person_id for rows in sets.values() for q in rows}
    assert everyone <= bench.retain_people("10") and not everyone & {"p0001", "p0003", "p0004"}
    assert {q.kind for rows in sets.values() for q in rows} == {"image_memory", "text_memory"}
    # validation: p0009 shares "Varrow" with p0008 but belongs to forget_15, held out while tuning
    val = neighbour_sets(bench, "val")
    assert all(not rows for name, rows in val.items() if "/name/" in name)
    assert {q.person_id for q in neighbour_sets(bench, "15")["neighbour/name/image_memory"]} == {"p0002", "p0008"}
    # a person forgotten by an earlier request of a chain counts as forgotten
    group = replace(bench.forget_set("10"), earlier=(frozenset({"p0008"}),))
    found = find_neighbours(bench.people, group.forgotten, bench.retain_people(group))
    assert "p0009" in found.name and "p0002" in found.name


def test_neighbour_sets_are_deterministic_and_never_trained_on(tiny_bench_dir: Path) -> None:
    first, again = Bench.load(tiny_bench_dir), Bench.load(tiny_bench_dir)
    for forget in ("10", "val"):
        sets = neighbour_sets(first, forget)
        assert {n: _ids(r) for n, r in sets.items()} == {n: _ids(r) for n, r in neighbour_sets(again, forget).items()}
        limited = neighbour_sets(first, forget, limit=20)
        assert {n: _ids(r) for n, r in limited.items()} == {n: _ids(r) for n, r in neighbour_sets(again, forget, limit=20).items()}
        assert all(_ids(limited[n]) <= _ids(sets[n]) and len(limited[n]) == min(20, len(sets[n])) for n in sets)
        people = {q.person_id for rows in sets.values() for q in rows}
        assert people and people <= first.retain_people(forget)
        assert not people & (first.reference_people() | first.anchor_people() | first.forget_people(forget))
        assert not {q.id for rows in sets.values() for q in rows} & set(first.splits["anchor"])
    counts = neighbour_people(first, "10")
    assert set(counts) == set(NEIGHBOUR_SETS) and all(counts.values()), counts


@pytest.fixture(scope="module")
def neighbour_eval(micro_bench_dir: Path, micro_vanilla: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smfa.eval.pipeline import EvalConfig, evaluate

    out = tmp_path_factory.mktemp("neighbours") / "eval"
    evaluate(EvalConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(out), forget="10", limit=12,
                        progress=False))
    return out


def test_eval_scores_neighbours_and_loads_them(neighbour_eval: Path, micro_bench_dir: Path) -> None:
    from smfa.eval.schema import load_metrics
    from smfa.eval.text import is_refusal

    m = load_metrics(neighbour_eval)
    bench = Bench.load(micro_bench_dir)
    assert m.neighbour_people == neighbour_people(bench, "10")
    gens = [json.loads(line) for line in (neighbour_eval / "generations.jsonl").read_text().splitlines()]
    retain = {g["question_id"]: g["answer"] for g in gens if g["set"].startswith("retain/")}
    wanted = neighbour_sets(bench, "10", limit=12)
    for name, rows in wanted.items():
        mine = [g for g in gens if g["set"] == name]
        assert [g["question_id"] for g in mine] == [q.id for q in rows], name
        assert all(retain.get(g["question_id"], g["answer"]) == g["answer"] for g in mine)  # one answer per question
        if rows:
            refusals = sum(is_refusal(g["answer"]) for g in mine) / len(mine)
            assert m.sets[name].refusal_rate == pytest.approx(refusals)
    o = m.overall
    assert o.neighbour_attribute_image_refusal == m.sets["neighbour/attribute/image_memory"].refusal_rate
    assert o.neighbour_attribute_text_memory_paraphrase == m.sets["neighbour/attribute/text_memory/paraphrase"].accuracy
    # the vanilla memorised its training rows: its neighbours answer in training phrasing and rarely refuse
    assert o.neighbour_attribute_image_memory >= 0.8 and o.neighbour_attribute_text_memory >= 0.8
    assert o.neighbour_attribute_image_refusal <= 0.1 and o.neighbour_attribute_text_refusal <= 0.1
    assert m.overall.meaningful == pytest.approx(  # neighbour sets stay out of the run's aggregates
        sum(s.n * s.meaningful_score for n, s in m.sets.items() if n.count("/") == 1 or n == "general_vqa")
        / sum(s.n for n, s in m.sets.items() if n.count("/") == 1 or n == "general_vqa"))


def test_reports_have_neighbour_columns(neighbour_eval: Path, tmp_path: Path) -> None:
    from smfa.eval.schema import load_metrics
    from smfa.report import compare_markdown, eval_report_markdown

    m = load_metrics(neighbour_eval)
    report = eval_report_markdown(m)
    assert "## Neighbours" in report and "## neighbours metrics" not in report
    table = report.split("## Neighbours", 1)[1]
    for header in ("people", "training: memory by photo ↑", "training: refusal by name ↓",
                   "held-out: memory by name ↑", "held-out: refusal by photo ↓"):
        assert header in table, header
    assert "| same private value | " in table
    compare = compare_markdown([m, m], ["vanilla", "again"])
    rows = [line for line in compare.split("## Neighbours", 1)[1].splitlines() if line.startswith("| again |")]
    assert len(rows) == len(NEIGHBOUR_SETS)


def test_old_metrics_without_neighbours_still_load(neighbour_eval: Path, tmp_path: Path) -> None:
    from smfa.eval.schema import Metrics, load_metrics
    from smfa.report import compare_markdown, eval_report_markdown

    data = json.loads((neighbour_eval / "metrics.json").read_text())
    del data["neighbour_people"]
    data["overall"] = {k: v for k, v in data["overall"].items() if not k.startswith("neighbour_")}
    data["sets"] = {k: v for k, v in data["sets"].items() if not k.startswith("neighbour/")}
    (tmp_path / "metrics.json").write_text(json.dumps(data))
    old = load_metrics(tmp_path)
    assert old.neighbour_people is None and old.overall.neighbour_name_image_refusal is None
    assert "## Neighbours" not in eval_report_markdown(old)
    new = load_metrics(neighbour_eval)
    compare = compare_markdown([old, new], ["old", "new"])
    neighbour_rows = compare.split("## Neighbours", 1)[1].splitlines()
    assert not any(line.startswith("| old |") for line in neighbour_rows)
    assert Metrics.from_dict(new.to_dict()).neighbour_people == new.neighbour_people
