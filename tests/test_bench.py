"""S-MLLMUn Bench: determinism, uniqueness, splits, row sets, validation errors and the CLI."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from smfa.bench import Bench, build_bench, preset_config
from smfa.bench import vocab
from smfa.bench.profiles import VISIBLE_FEATURES
from smfa.bench.questions import TEMPLATES
from smfa.bench.schema import (
    GENERAL_VQA,
    IMAGE_MEMORY,
    MULTI_FACT_JOIN,
    PARAPHRASE,
    PERSON_KINDS,
    TEXT_MEMORY,
    TRAIN_PHRASING,
    UNANSWERABLE,
    UNDERSTANDING,
)
from smfa.cli.main import main
from smfa.errors import BenchError, ConfigError

FORGETS = ("5", "10", "15", "val")
SMALL = {"n_people": 40, "n_shape_images": 40, "anchor_size": 12}


@pytest.fixture(scope="module")
def bench(tiny_bench_dir: Path) -> Bench:
    return Bench.load(tiny_bench_dir)


def _ids(rows) -> set[str]:
    return {q.id for q in rows}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def _copy(src: Path, dst: Path, images: bool = False) -> Path:
    """A writable copy of a bench; the images folder is linked unless ``images`` (to delete one)."""
    dst.mkdir()
    for p in src.iterdir():
        if p.name == "images":
            if images:
                shutil.copytree(p, dst / "images")
            else:
                (dst / "images").symlink_to(p)
        else:
            shutil.copy(p, dst / p.name)
    return dst


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --- generation ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    a = build_bench(preset_config("tiny", seed=3, **SMALL), tmp_path / "a", progress=False, workers=1)
    b = build_bench(preset_config("tiny", seed=3, **SMALL), tmp_path / "b", progress=False, workers=2)  # a pool changes nothing
    c = build_bench(preset_config("tiny", seed=4, **SMALL), tmp_path / "c", progress=False)
    assert a["checksum"] == b["checksum"] == Bench.load(tmp_path / "a").checksum
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert c["checksum"] != a["checksum"]
    Bench.load(tmp_path / "b").verify_checksum()


def test_presets() -> None:
    tiny, full = preset_config("tiny"), preset_config("full")
    assert (tiny.n_people, tiny.image_size, tiny.anchor_size, tiny.n_variants) == (200, 32, 48, 3)
    assert (full.n_people, full.image_size, full.anchor_size, full.n_variants) == (1000, 336, 100, 4)
    assert preset_config("tiny", anchor_size=30).anchor_size == 30
    with pytest.raises(ConfigError, match="image_size"):
        preset_config("tiny", image_size=8)
    with pytest.raises(ConfigError, match="unknown bench preset"):
        preset_config("huge")


def test_people_have_unique_names_and_looks(bench: Bench) -> None:
    people = list(bench.people.values())
    assert len(people) == 200
    assert Counter(p.role for p in people) == {"known": 180, "holdout": 20}
    assert len({p.name for p in people}) == len(people)
    looks = [tuple(p.visual[f] for f in VISIBLE_FEATURES) for p in people]
    assert len(set(looks)) == len(looks)
    # Any two people differ in at least two features visible at 32 px.
    assert min(sum(x != y for x, y in zip(a, b)) for a, b in itertools.combinations(looks, 2)) >= 2
    assert all(p.visual["shirt_colour"] != p.visual["background_colour"] for p in people)
    for p in people:
        assert p.attributes["home_city"] in vocab.CITIES and p.attributes["employer"] in vocab.EMPLOYERS
        first, last = p.name.split(" ")
        assert first not in vocab.REAL_NAME_BLOCKLIST


def test_fundus_patients(bench: Bench) -> None:
    patients = [p for p in bench.people.values() if p.fundus]
    known = [p for p in patients if p.role == "known"]
    assert 0.2 <= len(known) / 180 <= 0.25 and any(p.role == "holdout" for p in patients)
    for p in patients:
        assert p.fundus["diagnosis"] == p.attributes["medical_condition"] in vocab.EYE_CONDITIONS
    rows = bench.select(people={p.person_id for p in patients}, domain="fundus")
    assert {q.attribute for q in rows} == {"name", "medical_condition", "lesion_count", "lesion_colour", "disc_side"}


def test_renderer_labels_match_pixels(bench: Bench) -> None:
    """The canonical view's corner is the background colour, its bottom centre the shirt colour."""
    for p in bench.people.values():
        img = Image.open(bench.root / f"images/portraits/{p.person_id}_v0.png").convert("RGB")
        assert img.size == (32, 32)
        bg, shirt = img.getpixel((1, 1)), img.getpixel((16, 31))
        assert max(abs(a - b) for a, b in zip(bg, vocab.NAMED_COLOURS[p.visual["background_colour"]])) <= 3
        assert max(abs(a - b) for a, b in zip(shirt, vocab.NAMED_COLOURS[p.visual["shirt_colour"]])) <= 12


def test_understanding_labels_come_from_the_renderer(bench: Bench) -> None:
    for q in bench.select(kinds=(UNDERSTANDING,), domain="portrait"):
        value = bench.people[q.person_id].visual[q.attribute]
        assert q.fact == ({"yes": "Yes", "no": "No"}.get(value, value))
    for q in bench.select(kinds=(UNDERSTANDING,), domain="fundus"):
        record = bench.people[q.person_id].fundus
        n = int(record["lesion_count"])
        count = f"{vocab.number_word(n)} lesion{'s' * (n != 1)}"  # the count names its noun
        expected = count if q.attribute == "lesion_count" else record[q.attribute]
        assert q.fact == expected


def test_facts_occur_in_short_answers(bench: Bench) -> None:
    for q in bench.questions:
        assert len(q.answer.split()) <= 9, q
        if q.kind == UNANSWERABLE:
            assert q.fact == "" and q.answer in vocab.REFUSALS
        else:
            assert q.fact and q.fact in q.answer, q
    assert len({q.answer for q in bench.select(kinds=(UNANSWERABLE,))}) >= 4  # several refusals, not one string


def test_every_template_is_used(bench: Bench) -> None:
    used = Counter((q.kind, q.domain, q.attribute if q.kind != UNANSWERABLE else "*", q.phrasing, q.template_id) for q in bench.questions)
    for (kind, domain, attribute), t in TEMPLATES.items():
        if attribute == "eye_colour" or MULTI_FACT_JOIN in attribute:
            continue  # not asked at 32 px; multi-fact questions are off by default (test_multi_fact_questions)
        assert len(t.train) >= 12 and len(t.paraphrase) >= 6, (kind, domain, attribute)
        for phrasing, pool in ((TRAIN_PHRASING, t.train), (PARAPHRASE, t.paraphrase)):
            for i in range(len(pool)):
                assert used[(kind, domain, attribute, phrasing, i)] > 0, (kind, domain, attribute, phrasing, i)


def _words(text: str) -> set[str]:
    from smfa.eval.text import normalize

    return set(normalize(text.replace("{", " ").replace("}", " ")).split())


def _frame(phrasing: str) -> str:
    """A phrasing without its wrapper ("Quick question. {q}" → q)."""
    from smfa.bench.phrasings import HELDOUT_WRAPPERS, TRAIN_WRAPPERS

    prefixes = sorted((w.split("{q}")[0] for w in TRAIN_WRAPPERS + HELDOUT_WRAPPERS), key=len, reverse=True)
    return next(phrasing[len(p):] for p in prefixes if phrasing.startswith(p))


def test_heldout_phrasings_are_new_sentences_made_of_trained_words(bench: Bench) -> None:
    """A held-out phrasing is never a training phrasing of its attribute, and every word in it occurs in the
    training questions: a model that knows the person can answer it, one that memorised a template cannot."""
    trained_words = set().union(*(_words(q.question) | _words(q.answer) for q in bench.training_rows()))
    for key, t in TEMPLATES.items():
        assert not set(t.paraphrase) & set(t.train), key
        assert not {_frame(p) for p in t.paraphrase} & {_frame(p) for p in t.train}, key
    asked = [q for q in bench.questions if q.phrasing == PARAPHRASE and q.person_id not in bench.holdout_people()]
    unknown = sorted(set().union(*(_words(q.question) for q in asked)) - trained_words)
    assert not unknown, f"held-out phrasings use words never trained on: {unknown}"


def test_one_fact_is_trained_under_several_phrasings(bench: Bench) -> None:
    rows = bench.training_rows()
    per_fact = Counter((q.person_id, q.attribute) for q in rows if q.kind == TEXT_MEMORY)
    assert min(per_fact.values()) == 4  # text_phrasings
    phrasings = {}
    for q in rows:
        if q.kind == TEXT_MEMORY:
            phrasings.setdefault((q.person_id, q.attribute), set()).add(q.question)
    assert min(len(v) for v in phrasings.values()) == 4  # all different


def test_the_tokenizer_never_collapses_an_input(tiny_bench_dir: Path) -> None:
    from smfa.models.tiny import build_tokenizer, tiny_corpus

    tok = build_tokenizer(tiny_corpus(Bench.load(tiny_bench_dir, verify_images=False)))
    for text in ("Where does Zyxqwort Plimbersnatch live?", "Ça coûte 12€ — naïve café 😀", "ASSISTANT: This is"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids).strip() == text
    assert len(tok(" Where does", add_special_tokens=False)["input_ids"]) == 2  # bench words are whole tokens


def test_questions_load_with_datasets(tiny_bench_dir: Path, tmp_path: Path) -> None:
    import datasets

    ds = datasets.load_dataset("json", data_files=str(tiny_bench_dir / "questions.jsonl"), split="train", cache_dir=str(tmp_path))
    assert len(ds) == len(Bench.load(tiny_bench_dir).questions)
    assert set(ds.column_names) >= {"id", "kind", "question", "answer", "fact", "image", "person_id"}


# --- splits and row sets ------------------------------------------------------------------------


def test_splits_are_nested_and_disjoint(bench: Bench) -> None:
    f5, f10, f15, val = (bench.forget_people(k) for k in FORGETS)
    assert (len(f5), len(f10), len(f15), len(val)) == (9, 18, 27, 18)
    assert f5 < f10 < f15
    assert not (f15 & val) and not (f15 & bench.holdout_people()) and not (val & bench.holdout_people())
    assert bench.holdout_people() == {pid for pid, p in bench.people.items() if p.role == "holdout"}
    ref = bench.reference_people()
    assert len(ref) == 81 and not ref & (f15 | val | bench.holdout_people())  # 0.6 of the 135 retain people
    anchor_people = {q.person_id for q in bench.select(ids=set(bench.splits["anchor"]))} - {None}
    assert anchor_people == bench.anchor_people() and len(anchor_people) == 31
    assert not anchor_people & ref  # the labelled anchor never comes from the reference pool
    # the evaluation pool: no forget, reference or anchor person (a method trains on the anchor's rows)
    assert bench.retain_people(10) == bench.known_people() - f10 - ref - anchor_people
    assert len(bench.retain_people(10)) == 50
    assert bench.retain_people("val") == bench.known_people() - val - f15 - ref - anchor_people
    assert bench.forget_people(10) == bench.forget_people("forget_10")
    assert any(bench.people[p].fundus for p in f5)  # patients are spread over the forget sets


def test_training_rows(bench: Bench) -> None:
    rows = bench.training_rows()
    assert 10000 <= len(rows) <= 20000
    assert {q.kind for q in rows} == {IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING, GENERAL_VQA, UNANSWERABLE}
    assert all(q.phrasing == TRAIN_PHRASING and q.image_split in ("train", None) for q in rows)
    assert not {q.person_id for q in rows} & bench.holdout_people()
    oracle = bench.training_rows("retain", forget=10)
    assert not {q.person_id for q in oracle} & bench.forget_people(10)
    assert len(rows) - len(oracle) == sum(1 for q in rows if q.person_id in bench.forget_people(10))
    forget = bench.forget_rows(10)
    assert forget and {q.kind for q in forget} == {IMAGE_MEMORY, TEXT_MEMORY} and _ids(forget) <= _ids(rows)
    with pytest.raises(ConfigError, match="forget="):
        bench.training_rows("retain")
    with pytest.raises(ConfigError):
        bench.training_rows("everyone")


def test_anchor(bench: Bench) -> None:
    anchor = bench.anchor_rows()
    assert len(anchor) == 48
    kinds = Counter(q.kind for q in anchor)
    assert set(kinds) == {IMAGE_MEMORY, TEXT_MEMORY, UNDERSTANDING, GENERAL_VQA} and 5 <= kinds[GENERAL_VQA] <= 9
    excluded = bench.forget_people(15) | bench.forget_people("val") | bench.holdout_people()
    assert not {q.person_id for q in anchor} & excluded
    assert _ids(anchor) <= _ids(bench.training_rows())
    small = bench.anchor_rows(20, seed=1)
    assert len(small) == 20 and _ids(small) <= _ids(anchor) and Counter(q.kind for q in small)[GENERAL_VQA] == 3
    assert small == bench.anchor_rows(20, seed=1) != bench.anchor_rows(20, seed=2)
    with pytest.raises(ConfigError, match="anchor"):
        bench.anchor_rows(49)


@pytest.mark.parametrize("forget", FORGETS)
def test_eval_sets(bench: Bench, forget: str) -> None:
    anchor = set(bench.splits["anchor"])
    sets = bench.eval_sets(forget)
    expected = {"general_vqa"}
    for group, kind in itertools.product(("forget", "retain"), PERSON_KINDS):
        expected |= {f"{group}/{kind}", f"{group}/{kind}/paraphrase"} | ({f"{group}/{kind}/unseen_image"} if kind != TEXT_MEMORY else set())
    assert set(sets) == expected
    forget_ids, retain_ids = bench.forget_people(forget), bench.retain_people(forget)
    for name, rows in sets.items():
        assert rows, name
        assert not {q.id for q in rows} & anchor, name
        owners = {q.person_id for q in rows}
        assert owners <= (forget_ids if name.startswith("forget") else retain_ids if name.startswith("retain") else {None}), name
    assert all(q.phrasing == PARAPHRASE for q in sets["retain/image_memory/paraphrase"])
    assert all(q.image_split == "heldout" for q in sets["forget/understanding/unseen_image"] + sets["general_vqa"])
    visual = bench.eval_sets(forget, target="visual", limit=10)
    assert "forget/text_memory" not in visual and len(visual["forget_text/text_memory/paraphrase"]) == 10
    assert visual["forget_text/text_memory/paraphrase"] == bench.eval_sets(forget, target="visual", limit=10)["forget_text/text_memory/paraphrase"]


@pytest.mark.parametrize("target", ["all", "visual"])
@pytest.mark.parametrize("forget", FORGETS)
def test_no_trained_row_or_person_is_scored_as_kept(bench: Bench, forget: str, target: str) -> None:
    """A retention or "kept" number is read on rows no method trained on: not the anchor (nor its people's
    other rows), not the visual setting's name-only anchor, not the reference pool, not a preserve set."""
    from smfa.reference import reference_questions
    from smfa.stages.unlearn import select_data

    data = select_data(bench, forget, target, None, 0)
    trained = {q.id for q in data.retain_rows + data.preserve_rows + reference_questions(bench, "self-full")}
    trained_people = {q.person_id for q in data.retain_rows + data.preserve_rows} - bench.forget_people(forget) - {None}
    assert trained_people and bench.anchor_people() <= trained_people | bench.forget_people(forget)
    for name, rows in bench.eval_sets(forget, target=target).items():
        if name.startswith("forget/"):
            continue  # forgetting is read on the forget set itself, by design
        assert not {q.id for q in rows} & trained, name
        assert not {q.person_id for q in rows} & trained_people, name
    assert "forget_text/text_memory" not in bench.eval_sets(forget, target=target)


def test_unknown_forget_ratio_lists_the_available_ones(bench: Bench) -> None:
    with pytest.raises(ConfigError, match="5, 10, 15, val"):
        bench.forget_people(20)
    with pytest.raises(ConfigError):
        bench.eval_sets("7")


def test_vocabulary_and_images(bench: Bench) -> None:
    words = bench.vocabulary()
    assert words == sorted(set(words)) and "?" in words and "." in words
    name = next(iter(bench.people.values())).name
    assert set(name.split()) <= set(words)
    q = bench.select(kinds=(GENERAL_VQA,))[0]
    img = bench.load_image(q)
    assert img.mode == "RGB" and img.size == (32, 32)


# --- validation errors --------------------------------------------------------------------------


def test_missing_image(tiny_bench_dir: Path, tmp_path: Path) -> None:
    root = _copy(tiny_bench_dir, tmp_path / "b", images=True)
    (root / "images/portraits/p0007_v1.png").unlink()
    with pytest.raises(BenchError, match=r"p0007_v1\.png is missing \(image of question p0007-"):
        Bench.load(root)
    bench = Bench.load(root, verify_images=False)
    q = next(q for q in bench.questions if q.image == "images/portraits/p0007_v1.png")
    with pytest.raises(BenchError, match=f"p0007_v1.png of question {q.id} is missing"):
        bench.load_image(q)
    (root / "images/portraits/p0008_v0.png").write_bytes(b"not a png")
    q = next(q for q in bench.questions if q.image == "images/portraits/p0008_v0.png")
    with pytest.raises(BenchError, match=f"p0008_v0.png of question {q.id} cannot be decoded"):
        bench.load_image(q)


def _break_questions(root: Path, line: int, change) -> None:
    path = root / "questions.jsonl"
    lines = path.read_text().splitlines()
    lines[line - 1] = change(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s[:-5], r"questions\.jsonl: line 5: not valid JSON"),
        (lambda s: json.dumps({**json.loads(s), "kind": "gossip"}), r"questions\.jsonl: line 5 \(question .*\): unknown kind 'gossip'"),
        (lambda s: json.dumps({**json.loads(s), "person_id": "p9999"}), r"line 5 \(question .*\): person 'p9999' is not in people\.jsonl"),
        (lambda s: json.dumps({**json.loads(s), "variant": "one"}), r"line 5: field 'variant' should be"),
        (lambda s: json.dumps({k: v for k, v in json.loads(s).items() if k != "answer"}), r"line 5: field 'answer' is missing"),
    ],
)
def test_bad_question_rows(tiny_bench_dir: Path, tmp_path: Path, change, message: str) -> None:
    root = _copy(tiny_bench_dir, tmp_path / "b")
    _break_questions(root, 5, change)
    with pytest.raises(BenchError, match=message):
        Bench.load(root)


def test_bad_meta_and_missing_dir(tiny_bench_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="does not exist; build one"):
        Bench.load(tmp_path / "nowhere")
    root = _copy(tiny_bench_dir, tmp_path / "b")
    _edit_json(root / "bench.json", lambda d: d.update(version="0.1"))
    with pytest.raises(BenchError, match=r"bench\.json: bench version '0\.1'.*rebuild it with `smfa bench build --preset tiny --seed 0"):
        Bench.load(root)
    (root / "bench.json").unlink()
    with pytest.raises(BenchError, match=r"bench\.json is missing"):
        Bench.load(root)


def _two_splits(d: dict) -> None:
    d["holdout"].append(d["forget_15"][0])


def _anchor_in_eval_set(d: dict) -> None:
    d["anchor"][0] = "p0001-im-home_city-v1-p1"  # a paraphrase row: it belongs to an eval set


def _anchor_of_forget_person(d: dict) -> None:
    pid = d["forget_15"][0]
    pool = len(TEMPLATES[("text_memory", "none", "home_city")].train)
    d["anchor"][0] = f"{pid}-tm-home_city-txt-t{(int(pid[1:]) - 1) % pool}"  # the person's first name-only row


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_two_splits, r"splits\.json: person p\d+ is in both forget_15 and holdout"),
        (_anchor_in_eval_set, r"splits\.json: anchor question p0001-im-home_city-v1-p1 is in eval set \w+/image_memory/paraphrase"),
        (_anchor_of_forget_person, r"splits\.json: anchor question p\d+-tm-home_city-txt-t\d+ belongs to p\d+, who is in forget_15"),
        (lambda d: d.update(forget_20=d["forget_15"]), r"splits\.json: unknown split 'forget_20'"),
        (lambda d: d["reference"].append(d["forget_15"][0]), r"splits\.json: person p\d+ is in both forget_15 and reference"),
        (lambda d: d["forget_5"].append(d["forget_val"][0]), r"splits\.json: forget_5 must be inside forget_10"),
        (lambda d: d.pop("forget_val"), r"splits\.json: split\(s\) forget_val missing"),
    ],
)
def test_bad_splits(tiny_bench_dir: Path, tmp_path: Path, change, message: str) -> None:
    root = _copy(tiny_bench_dir, tmp_path / "b")
    _edit_json(root / "splits.json", change)
    with pytest.raises(BenchError, match=message):
        Bench.load(root)


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_build_and_show(tmp_path: Path, tiny_bench_dir: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "b"
    assert main(["bench", "build", "--preset", "tiny", "--seed", "1", "--n-people", "40", "--anchor-size", "10", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "bench.json").read_text())
    assert meta["checksum"] in printed and meta["config"]["anchor_size"] == 10 and "image_memory" in printed
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "show", str(tiny_bench_dir)]) == 0
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.size[0] > 400
    assert "forget_15" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "build", "--out", "{tiny}"], "already exists; pass --overwrite"),
        (["bench", "build", "--out", "{tmp}/x", "--image-size", "8"], "image_size=8"),
        (["bench", "build", "--out", "{tmp}/x", "--anchor-size", "5000"], "anchor_size=5000"),
        (["bench", "show", "{tmp}/nowhere"], "does not exist"),
        (["bench", "show", "{tiny}", "--out", "{tiny}/sheet.png"], "inside the bench directory"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, tiny_bench_dir: Path, capsys, argv: list[str], message: str) -> None:
    argv = [a.format(tiny=tiny_bench_dir, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("smfa bench: error:")


def test_reference_share_moves_people_from_the_evaluation_pool_to_the_reference_pool(tmp_path: Path, capsys) -> None:
    """A larger ``--reference-share``: the default pool plus more retain people, the rest evaluated; without planted
    neighbour pairs the training rows (hence the content checksum a vanilla is matched on) are unchanged. (With
    them, the twins are drawn outside the reference pool, so the share also decides who is renamed.)"""
    from smfa.pretrained import content_checksum

    common = ["bench", "build", "--preset", "tiny", "--seed", "3", "--n-people", "40", "--anchor-size", "12", "--quiet",
              "--neighbour-pairs", "0"]
    assert main([*common, "--reference-share", "0.3", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b")]) == 0  # the default share, 0.6
    a, b = Bench.load(tmp_path / "a"), Bench.load(tmp_path / "b")
    assert a.reference_people() < b.reference_people()
    assert len(b.retain_people("10")) < len(a.retain_people("10"))
    assert b.retain_people("10") == b.known_people() - b.forget_people("10") - b.reference_people() - b.anchor_people()
    assert content_checksum(a) == content_checksum(b) and a.checksum != b.checksum
    assert b.meta["config"]["reference_share"] == 0.6
    assert not {q.person_id for q in b.anchor_rows(None, seed=0)} & b.reference_people()
    capsys.readouterr()
    with pytest.raises(ConfigError, match="reference_share=0.9 must be between 0 and 0.8"):
        preset_config("tiny", reference_share=0.9)


def test_build_flags_set_shape_pictures_and_portrait_variants(tmp_path: Path, capsys) -> None:
    """``--shape-images``, ``--variants`` and ``--multi-fact`` reach the generator: more pictures, one more
    photo per person, multi-fact questions."""
    common = ["bench", "build", "--preset", "tiny", "--seed", "3", "--n-people", "40", "--anchor-size", "12", "--quiet"]
    assert main([*common, "--shape-images", "60", "--variants", "4", "--multi-fact", "2", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    bench = Bench.load(tmp_path / "b")
    config = bench.meta["config"]
    assert (config["n_shape_images"], config["n_variants"], config["multi_fact_phrasings"]) == (60, 4, 2)
    assert len(list((tmp_path / "b" / "images" / "shapes").glob("*.png"))) == 60
    person = next(iter(bench.known_people()))
    assert len(list((tmp_path / "b" / "images").glob(f"portraits/{person}*.png"))) == 4
    with pytest.raises(ConfigError, match="n_shape_images=5 must be between 20"):
        preset_config("tiny", n_shape_images=5)


def test_multi_fact_questions(tmp_path: Path) -> None:
    """``multi_fact_phrasings``: known people are trained on pairs of their facts asked at once; three pairs
    are never trained and form the ``multi_fact`` evaluation sets; every word of those questions is trained.
    Off by default: no row, no set, and the content checksum (the shipped vanilla's key) ignores the field."""
    from smfa.bench.questions import HELDOUT_MULTI_FACT_PAIRS, TRAIN_MULTI_FACT_PAIRS
    from smfa.bench.schema import fact_parts, is_multi_fact
    from smfa.pretrained import content_checksum

    build_bench(preset_config("tiny", seed=3, multi_fact_phrasings=3, **SMALL), tmp_path / "mf", progress=False)
    bench = Bench.load(tmp_path / "mf")
    multi = [q for q in bench.questions if is_multi_fact(q)]
    trained = [q for q in bench.training_rows() if is_multi_fact(q)]
    assert Counter(q.person_id for q in trained) == {pid: 3 for pid in bench.known_people()}
    assert {tuple(q.attribute.split(MULTI_FACT_JOIN)) for q in trained} == set(TRAIN_MULTI_FACT_PAIRS)
    heldout = [q for q in multi if q.phrasing == PARAPHRASE]
    assert {tuple(q.attribute.split(MULTI_FACT_JOIN)) for q in heldout} == set(HELDOUT_MULTI_FACT_PAIRS)
    for q in multi:
        first, second = fact_parts(q.fact)
        assert q.answer.startswith(bench.people[q.person_id].name) and first in q.answer and second in q.answer, q
        assert " and " in q.question and q.kind == TEXT_MEMORY and q.image is None
    sets = bench.eval_sets("10")
    assert {q.id for q in sets["forget/text_memory/multi_fact"] + sets["retain/text_memory/multi_fact"]} <= {q.id for q in heldout}
    assert len(sets["forget/text_memory/multi_fact"]) == 3 * len(bench.forget_people("10"))
    assert not any(is_multi_fact(q) for name, rows in sets.items() if "multi_fact" not in name for q in rows)
    trained_words = set().union(*(_words(q.question) | _words(q.answer) for q in bench.training_rows()))
    asked = [q for q in heldout if q.person_id in bench.known_people()]
    assert not set().union(*(_words(q.question) for q in asked)) - trained_words

    build_bench(preset_config("tiny", seed=3, **SMALL), tmp_path / "plain", progress=False)
    plain = Bench.load(tmp_path / "plain")
    assert not any(is_multi_fact(q) for q in plain.questions) and not any("multi_fact" in n for n in plain.eval_sets("10"))
    before = content_checksum(plain)
    del plain.meta["config"]["multi_fact_phrasings"]  # a bench built before the field existed
    assert content_checksum(plain) == before != content_checksum(bench)
