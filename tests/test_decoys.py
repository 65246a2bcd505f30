"""Decoys (issue 36): by-name questions about made-up people whose name shares a word with a forgotten person's
(answered by the vanilla), and rendered look-alikes of the forgotten people, so the forgetting adapter sees that a
word of a name or most of a look is not the person."""

from __future__ import annotations

from pathlib import Path

import pytest

from smfa.bench import Bench
from smfa.errors import ConfigError


def test_decoys_put_a_forgotten_word_into_a_pool_name_and_never_name_a_real_person(tiny_bench_dir: Path) -> None:
    from smfa.bench.schema import TEXT_MEMORY
    from smfa.decoys import name_decoys

    bench = Bench.load(tiny_bench_dir)
    gone = bench.forget_set("val").forgotten
    decoys = name_decoys(bench, gone, 4, seed=0)
    assert len(decoys) == 4 * len(gone) and len({q.id for q in decoys}) == len(decoys)
    assert decoys == name_decoys(bench, gone, 4, seed=0) and decoys != name_decoys(bench, gone, 4, seed=1)
    real = {p.name.casefold() for p in bench.people.values()}
    pool = bench.reference_people() - gone
    by_id = {q.id: q for q in bench.training_rows()}
    for q in decoys:
        source = by_id[q.id.split("~decoy-")[0]]
        forgotten = bench.people[q.meta["decoy_of"]].name.split()
        place = int(q.id.rsplit("-", 2)[1])
        theirs = bench.people[source.person_id].name.split()
        decoy = " ".join(forgotten[place] if j == place else w for j, w in enumerate(theirs))
        assert source.kind == q.kind == TEXT_MEMORY and source.person_id in pool and q.person_id == source.person_id
        assert q.question == source.question.replace(" ".join(theirs), decoy) and decoy in q.question
        assert decoy.casefold() not in real and theirs[place] != forgotten[place]
        assert q.answer == q.fact == "" and q.meta["decoy_of"] in gone
    # Every word of a forgotten name is used in turn.
    places = {(q.meta["decoy_of"], int(q.id.rsplit("-", 2)[1])) for q in decoys}
    assert all((p, i) in places for p in gone for i in range(len(bench.people[p].name.split())))
    assert name_decoys(bench, gone, 0, seed=0) == [] and name_decoys(bench, frozenset(), 4, seed=0) == []


def test_a_decoy_label_that_recalls_the_forgotten_person_is_dropped(tiny_bench_dir: Path) -> None:
    from smfa.decoys import decoy_label_kept

    bench = Bench.load(tiny_bench_dir)
    person = bench.people[sorted(bench.forget_set("val").forgotten)[0]]
    value = next(iter(person.attributes.values()))
    assert decoy_label_kept("Someone else lives in Nowhere-at-all.", person)
    assert not decoy_label_kept(f"They are {str(value).upper()}.", person)
    assert not decoy_label_kept(f"{person.name} it is.", person)
    assert not decoy_label_kept("  ", person)


def test_decoys_join_the_reference_rows_labelled_apart_and_cached(tiny_bench_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from smfa.eval import generate
    from smfa.decoys import name_decoys
    from smfa.reference import label_path, reference_questions, self_labelled_reference

    labelled: list[list[str]] = []
    bench = Bench.load(tiny_bench_dir)
    gone = bench.forget_set("val").forgotten
    recall = bench.people[sorted(gone)[0]].name

    def fake_answers(model, rows, bench, **kwargs):
        labelled.append([q.id for q in rows])
        # The first decoy's answer names its forgotten person: that row must not train the adapter.
        return [f"{recall} again" if i == 0 and "~decoy-" in q.id else f"answer {q.id}" for i, q in enumerate(rows)]

    monkeypatch.setattr(generate, "generate_answers", fake_answers)

    def run(n: int) -> list:
        return self_labelled_reference(bench, None, "self-full", progress=False, forgotten=gone, cap=1000,
                                       cache=tmp_path, model_digest="vanilla", decoys=n)

    off = run(0)
    sample = [q for q in reference_questions(bench, "self-full", cap=1000) if q.person_id not in gone]
    assert [q.id for q in off] == [q.id for q in sample] and len(labelled) == 1
    on = run(3)
    decoys = name_decoys(bench, gone, 3, seed=0)
    assert on[: len(off)] == off and [q.id for q in on[len(off):]] == [q.id for q in decoys[1:]]
    assert all(q.answer == q.fact == f"answer {q.id}" for q in on[len(off):])
    assert labelled[1:] == [[q.id for q in decoys]]
    assert label_path(bench, decoys, tmp_path, "vanilla", None, None).is_file()
    assert run(3) == on and len(labelled) == 2  # cached


def test_decoys_must_be_a_count() -> None:
    from smfa.methods.base import get_method

    with pytest.raises(ConfigError, match="decoys"):
        get_method("smfa").config(None, {"decoys": -1})


def test_decoy_refusals_are_floored_and_the_floor_needs_decoys(tiny_bench_dir: Path) -> None:
    import math
    from dataclasses import replace

    from smfa.data import DECOY_OF
    from smfa.methods.base import get_method
    from smfa.methods.smfa import decoy_refusal_items
    from smfa.decoys import name_decoys
    from smfa.reference import reference_questions
    from smfa.refusals import refusal_pool

    bench = Bench.load(tiny_bench_dir)
    gone = bench.forget_set("val").forgotten
    decoys = [replace(q, answer="x", fact="x") for q in name_decoys(bench, gone, 2, seed=0)]
    rows = reference_questions(bench, "self", cap=50) + decoys
    items = decoy_refusal_items(rows, 2.5, seed=0)
    assert [i.row for i in items] == decoys and all(i.row.meta[DECOY_OF] in gone for i in items)
    assert all(i.floor == 2.5 and i.answer in refusal_pool() and not math.isnan(i.floor) for i in items)
    assert items == decoy_refusal_items(rows, 2.5, seed=0) and decoy_refusal_items(rows, 0.0, seed=0) == []
    for method in ("smfa", "idk", "ties"):
        with pytest.raises(ConfigError, match="needs decoys"):
            get_method(method).config(None, {"decoy_refusal_floor": 2.0})
        with pytest.raises(ConfigError, match="decoy_refusal_floor"):
            get_method(method).config(None, {"decoy_refusal_floor": -1.0, "decoys": 2})
        assert get_method(method).config(None, {"decoy_refusal_floor": 2.0, "decoys": 2}).decoy_refusal_floor == 2.0


def test_the_cache_keys_leave_decoys_out_when_off() -> None:
    """MFA and RA keys made before the field existed still match at decoys 0 (their caches stay warm)."""
    from smfa.methods.base import get_method
    from smfa.methods.smfa import common_hp

    off, on = (get_method("smfa").config(None, {"decoys": n}) for n in (0, 3))
    assert "decoys" not in common_hp(off) and common_hp(on)["decoys"] == 3
    assert {k: v for k, v in common_hp(on).items() if k != "decoys"} == common_hp(off)


def test_look_decoys_are_made_up_look_alikes_asked_the_persons_photo_questions(tiny_bench_dir: Path,
                                                                                tmp_path: Path) -> None:
    from PIL import Image

    from smfa.bench.neighbours import looks_alike
    from smfa.bench.profiles import VISIBLE_FEATURES, visual_distance
    from smfa.bench.schema import IMAGE_MEMORY
    from smfa.data import DECOY_OF
    from smfa.decoys import DECOY_KIND, look_decoys

    bench = Bench.load(tiny_bench_dir)
    gone = frozenset(sorted(bench.forget_set("val").forgotten)[:3])
    decoys = look_decoys(bench, gone, 2, seed=0, image_dir=tmp_path / "a")
    assert len(decoys) == 6 and len({q.id for q in decoys}) == 6
    again = look_decoys(bench, gone, 2, seed=0, image_dir=tmp_path / "b")
    assert [q.id for q in again] == [q.id for q in decoys]
    assert all(Path(a.image).read_bytes() == Path(b.image).read_bytes() for a, b in zip(decoys, again))
    own = {q.id: q for q in bench.training_rows() if q.kind == IMAGE_MEMORY}
    for q in decoys:
        f = q.meta[DECOY_OF]
        source = own[q.id.split("~look-decoy-")[0]]
        assert f in gone and source.person_id == f and q.question == source.question and q.meta[DECOY_KIND] == "look"
        assert q.person_id is None and q.answer == q.fact == "" and Path(q.image).is_absolute()
        with Image.open(q.image) as img:
            assert img.size == bench.load_image(source).size
    assert not list((tmp_path / "a").glob(".*.tmp"))  # written atomically
    # The rendered look: 5 of 7 visible features of the person, and nobody's portrait (>= 2 features from everyone).
    import random

    from smfa.bench.pairs import look_alike_visual

    person = bench.people[sorted(gone)[0]]
    real = [tuple(p.visual[k] for k in VISIBLE_FEATURES) for p in bench.people.values()]
    for _ in range(20):
        visual = look_alike_visual(person.visual, person.visual, real, 2, random.Random(_))
        assert visual is not None and looks_alike(visual, person.visual)
        assert sum(visual[k] != person.visual[k] for k in VISIBLE_FEATURES) == 2
        assert all(visual_distance(tuple(visual[k] for k in VISIBLE_FEATURES), r) >= 2 for r in real)
    assert look_decoys(bench, gone, 0, seed=0, image_dir=tmp_path / "c") == []
    assert look_decoys(bench, frozenset(), 2, seed=0, image_dir=tmp_path / "c") == []


def test_look_decoys_need_the_floor() -> None:
    from smfa.methods.base import get_method

    with pytest.raises(ConfigError, match="look_decoys 3 are trained through decoy_refusal_floor"):
        get_method("smfa").config(None, {"look_decoys": 3})
    with pytest.raises(ConfigError, match="look_decoys must be an integer"):
        get_method("idk").config(None, {"look_decoys": -1, "decoy_refusal_floor": 2.0})
    assert get_method("ties").config(None, {"look_decoys": 3, "decoy_refusal_floor": 2.0}).look_decoys == 3


class _Encoded(Exception):
    """Raised by the fake context once the MFA's items are built (no training needed to read them)."""


def _mfa_items(bench: Bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict, reference: list) -> list:
    from types import SimpleNamespace

    import smfa.methods.smfa as smfa_method
    from smfa.methods.base import get_method

    forget = [q for q in bench.training_rows() if q.person_id in bench.forget_set("val").forgotten][:40]
    captured: list = []

    def encode(items, desc=""):
        captured.extend(items)
        raise _Encoded

    monkeypatch.setattr(smfa_method, "prepare_trainable", lambda ctx, hp, model: model)
    ctx = SimpleNamespace(shared_dir=None, seed=0, bench=bench, work_dir=tmp_path, encode=encode, trainee=lambda hp: None,
                          data=SimpleNamespace(anchor_rows=[], reference_rows=reference))
    hp = get_method("smfa").config(None, params, reference="self-full")
    with pytest.raises(_Encoded):
        smfa_method.train_mfa(ctx, hp, forget, "mfa")
    return captured


def test_the_mfa_data_holds_the_levers_rows(tiny_bench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """forget_rephrase: refusals to the forget rows asked with other training templates; look decoys and name
    decoys among the reference rows: refusals paying the floor; off: none of them."""
    from dataclasses import replace

    from smfa.data import DECOY_OF
    from smfa.decoys import DECOY_KIND
    from smfa.refusals import refusal_pool

    bench = Bench.load(tiny_bench_dir)
    gone = bench.forget_set("val").forgotten
    from smfa.decoys import name_decoys

    names = [replace(q, answer="vanilla's", fact="vanilla's") for q in name_decoys(bench, gone, 1, seed=0)]
    base = _mfa_items(bench, tmp_path, monkeypatch, {"forget_repeat": 1}, names)
    assert all(i.floor is None for i in base) and len(base) == 40 + len(names)
    more = _mfa_items(bench, tmp_path, monkeypatch, {"forget_repeat": 1, "forget_rephrase": 2}, names)
    extra = [i for i in more if i.row.id.split("-r")[-1].isdigit() and "-r" in i.row.id]
    assert extra and all(i.answer in refusal_pool() and i.row.phrasing == "train" for i in extra)
    assert len(more) == len(base) + len(extra)
    floored = _mfa_items(bench, tmp_path, monkeypatch, {"forget_repeat": 1, "decoys": 1, "look_decoys": 2,
                                                        "decoy_refusal_floor": 2.5}, names)
    paid = [i for i in floored if i.floor is not None]
    assert all(i.floor == 2.5 and i.answer in refusal_pool() and i.row.meta.get(DECOY_OF) for i in paid)
    kinds = [i.row.meta[DECOY_KIND] for i in paid]
    people = {r.person_id for r in [i.row for i in base[:40]]}
    assert kinds.count("name") == len(names) and kinds.count("look") == 2 * len(people)
    assert all(Path(i.row.image).parent == tmp_path / "look-decoys" for i in paid if i.row.meta[DECOY_KIND] == "look")


@pytest.mark.parametrize("method", ["smfa", "idk", "ties"])
def test_a_negative_forget_rephrase_is_refused(method: str) -> None:
    from smfa.methods.base import get_method

    with pytest.raises(ConfigError, match="forget_rephrase"):
        get_method(method).config(None, {"forget_rephrase": -1})
    assert get_method(method).config(None, {"forget_rephrase": 2}).forget_rephrase == 2


def test_look_decoys_draw_nothing_on_an_imported_bench(tmp_path: Path) -> None:
    """An imported bench's people have no renderer features and its bench.json config is not a BenchConfig: no decoy,
    no error."""
    from types import SimpleNamespace

    from smfa.bench.schema import Person, Question
    from smfa.decoys import look_decoys

    person = Person(person_id="u1", name="Ana Lima", attributes={"home_city": "Porto"}, visual={})
    photo = Question(id="u1-im", kind="image_memory", domain="portrait", attribute="home_city", question="Where?",
                     answer="Porto.", fact="Porto", person_id="u1", image="images/u1.png", variant=0, image_split="train")
    bench = SimpleNamespace(people={"u1": person}, meta={"config": {"source": "jsonl", "seed": 0}},
                            training_rows=lambda: [photo])
    assert look_decoys(bench, frozenset({"u1"}), 3, seed=0, image_dir=tmp_path) == []
    assert not any(tmp_path.iterdir())
