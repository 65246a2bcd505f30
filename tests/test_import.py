"""``smfa bench import``: MLLMU-Bench, CLEAR and JSONL inputs built here in their published layouts (nothing
downloaded), the benches they give, the bad inputs they refuse, the choice/cloze metrics, and one path
import → finetune → unlearn (SMFA) → eval → report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from import_fixtures import CITIES, JOBS, png_bytes, write_clear, write_jsonl, write_mllmu
from smfa.bench import Bench
from smfa.bench.importers import ImportOptions
from smfa.bench.importers.clear import import_clear
from smfa.bench.importers.jsonl import import_jsonl
from smfa.bench.importers.mllmu import import_mllmu
from smfa.bench.schema import CHOICE, CLOZE, GENERATION, Question
from smfa.cli.main import main
from smfa.errors import ConfigError


def _opts(out: Path, **kw) -> ImportOptions:
    return ImportOptions(out=out, progress=False, **kw)


@pytest.fixture(scope="module")
def mllmu_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mllmu")
    import_mllmu(write_mllmu(root / "in"), _opts(root / "bench", anchor_size=8))
    return root / "bench"


# ---- what the importers write ------------------------------------------------------------------------


def test_mllmu_import_maps_people_splits_kinds_and_sets(mllmu_bench: Path) -> None:
    bench = Bench.load(mllmu_bench)
    assert len(bench.known_people()) == 20 and len(bench.external_people()) == 3
    assert [len(bench.forget_people(f)) for f in ("5", "forget_10", "15")] == [1, 2, 3]
    # Only ft_Data's QA pairs are trained on; every task question is evaluation-only.
    training = bench.training_rows()
    assert training and all(q.id.startswith("ft/") and q.format == GENERATION for q in training)
    assert len(training) == 40
    assert all(not q.trainable for q in bench.questions if q.format in (CHOICE, CLOZE))
    anchor = bench.anchor_rows()
    assert 0 < len(anchor) <= 8 and not {q.person_id for q in anchor} & (bench.forget_people("15") | bench.reference_people())
    sets = bench.eval_sets("10")
    for name in ("forget/image_memory/choice", "forget/text_memory/cloze", "forget/image_memory/unseen_image/choice",
                 "forget/text_memory/paraphrase/cloze", "retain/image_memory/cloze", "external/text_memory/choice"):
        assert sets[name], name
    assert sets["forget/understanding"] == [] and sets["general_vqa"] == []  # kinds MLLMU lacks: empty, tolerated
    choice = sets["forget/image_memory/choice"][0]
    assert set(choice.options) == set("ABCD") and choice.answer in choice.options and "\nA: " in choice.question
    # Test_Set rows are asked with a held-out photo, its text questions count as paraphrases.
    assert {q.image_split for q in sets["forget/image_memory/unseen_image"]} == {"heldout"}
    # Each distinct image decoded once: 20 people + 20 test photos + 3 celebrities.
    assert len(list((mllmu_bench / "images").rglob("*.png"))) == 43
    meta = json.loads((mllmu_bench / "bench.json").read_text())
    assert meta["preset"] == "imported" and meta["source"]["format"] == "mllmu"


def test_reference_pool_on_request(tmp_path: Path) -> None:
    import_mllmu(write_mllmu(tmp_path / "in", n_people=20, n_celebrities=1), _opts(tmp_path / "bench", reference_share=0.25))
    bench = Bench.load(tmp_path / "bench")
    reference = bench.reference_people()
    assert len(reference) == 4  # a quarter of the 17 people outside every forget split, rounded
    assert not reference & bench.forget_people("15") and not reference & bench.retain_people("10")
    assert not reference & {q.person_id for q in bench.anchor_rows()}


def test_import_draws_the_builtin_benchs_reference_pool(tmp_path: Path, capsys) -> None:
    """Without --reference-share an import sets apart the built-in bench's share of its retain people (the
    people a --reference budget may ask), as `smfa bench build` does; --reference-share 0 keeps none."""
    from smfa.bench.config import BenchConfig
    from smfa.bench.importers.common import DEFAULT_REFERENCE_SHARE, draw_reference

    assert DEFAULT_REFERENCE_SHARE == BenchConfig().reference_share == ImportOptions(out=tmp_path).reference_share
    src = write_mllmu(tmp_path / "in", n_people=20, n_celebrities=1)
    assert main(["bench", "import", "mllmu", str(src), "--out", str(tmp_path / "bench"), "--quiet"]) == 0, capsys.readouterr().err
    bench = Bench.load(tmp_path / "bench")
    assert len(bench.reference_people()) == round(17 * DEFAULT_REFERENCE_SHARE) > 0  # 17 people outside every forget split
    assert json.loads((tmp_path / "bench" / "bench.json").read_text())["config"]["reference_share"] == DEFAULT_REFERENCE_SHARE
    assert bench.retain_people("15") and not bench.retain_people("15") & bench.reference_people()
    assert main(["bench", "import", "mllmu", str(src), "--out", str(tmp_path / "none"), "--quiet", "--reference-share", "0"]) == 0
    assert Bench.load(tmp_path / "none").reference_people() == set()
    # A pool never takes every retain person: someone is left to compute the retain metrics on.
    assert draw_reference(["a"], DEFAULT_REFERENCE_SHARE, 0) == [] and len(draw_reference(["a", "b"], 0.9, 0)) == 1


def test_clear_import_builds_name_caption_and_choice_rows(tmp_path: Path) -> None:
    import_clear(write_clear(tmp_path / "in"), _opts(tmp_path / "bench"))
    bench = Bench.load(tmp_path / "bench")
    assert len(bench.people) == 10
    assert bench.forget_people("forget10") == bench.forget_people("10") == {"Author_Norvale"}
    name_rows = [q for q in bench.training_rows() if q.attribute == "name"]
    assert len(name_rows) == 20 and all(q.fact in q.answer for q in name_rows)
    choice = bench.eval_sets("10")["forget/image_memory/choice"]
    assert len(choice) == 4 and all(q.options[q.answer] in (bench.people[q.person_id].name, q.options[q.answer]) for q in choice)


def test_jsonl_import_forget_split_and_id_file(tmp_path: Path) -> None:
    rows, images = write_jsonl(tmp_path / "in")
    import_jsonl(rows, _opts(tmp_path / "bench", reference_share=0.0), images=images, forget="u0,u1")
    bench = Bench.load(tmp_path / "bench")
    ids = tmp_path / "ids.txt"
    ids.write_text("# the deletion request\nu0\nu1\n")
    assert bench.forget_people("user") == bench.forget_people(str(ids)) == {"u0", "u1"}
    sets = bench.eval_sets(str(ids))
    anchored = sum(1 for q in bench.anchor_rows() if q.kind == "image_memory")
    assert len(sets["forget/text_memory/paraphrase"]) == 2 and len(sets["retain/image_memory"]) + anchored == 4
    assert all(q.phrasing == "train" for q in bench.training_rows())
    ids.write_text("u0\nnobody\n")
    with pytest.raises(ConfigError, match="unknown person id nobody"):  # a file of ids is a deletion request
        bench.forget_people(str(ids))


def test_builtin_rows_keep_their_format() -> None:
    """The new fields are left out of a built-in row at their defaults: built-in files and checksums unchanged."""
    q = Question(id="q", kind="text_memory", domain="none", attribute="home_city", question="?", answer="In X.", fact="X")
    assert "format" not in q.to_dict() and "options" not in q.to_dict() and "trainable" not in q.to_dict()
    choice = Question(id="c", kind="text_memory", domain="none", attribute="a", question="?", answer="B", fact="B",
                      format=CHOICE, options={"A": "x", "B": "y"}, trainable=False)
    assert choice.to_dict()["options"] == {"A": "x", "B": "y"}


# ---- facts: a memory row's fact is the private value, never the whole answer ----------------------------


def test_mllmu_facts_are_the_private_values(mllmu_bench: Path) -> None:
    """Every free answer's fact is the city or job it states (from Mask_Task / Classification_Task), found in
    the answer; a name-only answer repeating the question's name does not make the name a fact."""
    bench = Bench.load(mllmu_bench)
    free = [q for q in bench.questions if q.format == GENERATION]
    assert {q.kind for q in free} == {"image_memory", "text_memory"} and len(free) > 100
    for q in free:
        assert q.fact in CITIES + JOBS and q.fact != q.answer and q.fact in q.answer, (q.id, q.fact)
    by_id = {q.id: q for q in free}
    assert by_id["full/p001/generation_text_memory/1"].answer == "p001 lives in Quenby."
    assert by_id["full/p001/generation_text_memory/1"].fact == "Quenby"
    assert by_id["ft/p001/0"].fact == "pilot" and by_id["test/p001/generation_image_memory/0"].fact == "Quenby"
    assert by_id["celebrity/celebrity_celeb0/generation_text_memory/1"].fact == CITIES[0]


def test_mllmu_fact_of_an_item_and_refusal_without_one_under_strict(tmp_path: Path, capsys) -> None:
    """An item's own Fact key is used; with --strict an answer naming none of the person's values stops the
    import in one line naming the file, row and item, what is wrong and what to do."""
    item = {"Question": "What does this person enjoy?", "Ground_Truth": "This person enjoys sailing at dawn.", "Type": "Image_Textual"}
    src = write_mllmu(tmp_path / "in", n_people=8, n_celebrities=1, extra_generation={**item, "Fact": "sailing"})
    import_mllmu(src, _opts(tmp_path / "ok"))
    assert next(q.fact for q in Bench.load(tmp_path / "ok").questions if q.id == "full/p002/generation_image_memory/2") == "sailing"
    src = write_mllmu(tmp_path / "bad", n_people=8, n_celebrities=1, extra_generation=item)
    err = _run_import(["mllmu", str(src), "--strict"], tmp_path / "bench", capsys)
    assert "Full_Set/train-00000-of-00001.parquet row 2 (ID p002): Generation_Task[2]: no short fact" in err
    assert '"Fact" key' in err and "without --strict" in err


def test_mllmu_rows_without_a_fact_are_skipped_and_counted(tmp_path: Path, capsys) -> None:
    """A free answer naming none of the person's values is left out (never scored on the whole sentence) and
    the import goes on: one summary line says how many rows, from which subset and column, and where the first
    are; bench.json records the same."""
    item = {"Question": "What does this person enjoy?", "Ground_Truth": "This person enjoys sailing at dawn.", "Type": "Image_Textual"}
    pair = {"Question": "What does this person enjoy?", "Answer": "This person enjoys sailing at dawn."}
    src = write_mllmu(tmp_path / "in", n_people=8, n_celebrities=1, extra_generation=item, extra_pair=pair)
    out = tmp_path / "bench"
    assert main(["bench", "import", "mllmu", str(src), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: skipped 2 rows"), err
    first = ["Full_Set/train-00000-of-00001.parquet row 2 (ID p002): Generation_Task[2]",
             "ft_Data/train-00000-of-00001.parquet row 2 (ID p002): metadata[2]"]
    assert "Full_Set Generation_Task 1" in err[0] and "ft_Data metadata 1" in err[0] and first[0] in err[0]
    assert "--strict" in err[0], err
    skipped = json.loads((out / "bench.json").read_text())["skipped"]
    assert skipped == {"rows": 2, "by_source": {"Full_Set Generation_Task": 1, "ft_Data metadata": 1}, "first": first}
    ids = {q.id for q in Bench.load(out).questions}
    assert "full/p002/generation_text_memory/1" in ids and "ft/p002/1" in ids
    assert "full/p002/generation_image_memory/2" not in ids and "ft/p002/2" not in ids


def test_an_import_without_skipped_rows_records_none(mllmu_bench: Path) -> None:
    assert json.loads((mllmu_bench / "bench.json").read_text())["skipped"] == {"rows": 0, "by_source": {}, "first": []}


def test_a_bench_imported_before_the_fact_rule_warns_on_load(tmp_path: Path, capsys, nano_bench_dir: Path) -> None:
    """An imported bench records its import format; one from before memory rows had short facts (no
    import_version) warns once on load with what is off and the command that re-imports it. A fresh import and
    a generated bench load silently."""
    from smfa.bench.importers.common import IMPORT_VERSION

    rows, images = write_jsonl(tmp_path / "in", n_people=3)
    out = tmp_path / "bench"
    import_jsonl(rows, _opts(out), images=images)
    meta = json.loads((out / "bench.json").read_text())
    assert meta["import_version"] == IMPORT_VERSION >= 2
    Bench.load(out)
    Bench.load(nano_bench_dir)
    assert capsys.readouterr().err == ""
    del meta["import_version"]  # as an import before the fact rule wrote it
    (out / "bench.json").write_text(json.dumps(meta))
    Bench.load(out)
    Bench.load(out)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {out}"), err
    assert "whole answer sentence" in err[0] and "leak" in err[0]
    assert f"re-import it with `smfa bench import jsonl {rows} --out {out} --overwrite`" in err[0], err


def test_jsonl_memory_row_needs_a_fact(tmp_path: Path, capsys) -> None:
    rows, images = write_jsonl(tmp_path / "in", n_people=3)
    lines = [json.loads(line) for line in rows.read_text().splitlines()]
    del lines[4]["fact"]  # u1's name-only question
    rows.write_text("".join(json.dumps(r) + "\n" for r in lines))
    err = _run_import(["jsonl", str(rows), "--images", str(images)], tmp_path / "bench", capsys)
    assert f"{rows}: line 5: a text_memory question needs a 'fact'" in err and "add one to the row" in err
    # An understanding row (what the photo shows) may go without: its short answer is the fact.
    lines[4] = {"person_id": "u1", "name": "Person Quenby", "image": "u1.png", "kind": "understanding",
                "question": "What colour is the background?", "answer": "green"}
    rows.write_text("".join(json.dumps(r) + "\n" for r in lines))
    import_jsonl(rows, _opts(tmp_path / "ok"), images=images)
    assert [q.fact for q in Bench.load(tmp_path / "ok").questions if q.kind == "understanding"] == ["green"]


def test_clear_caption_fact_is_the_name_as_written(tmp_path: Path, capsys) -> None:
    src = write_clear(tmp_path / "in", n_people=3, images_per_person=1,
                      captions={1: "Quenby, the author, sits at a desk."})
    import_clear(src, _opts(tmp_path / "bench"))
    facts = {q.id: q.fact for q in Bench.load(tmp_path / "bench").training_rows() if q.attribute == "caption"}
    assert facts == {"full/0/caption": "Author Norvale", "full/1/caption": "Quenby", "full/2/caption": "Author Ostrava"}
    # A caption naming no one is skipped and counted (the person's name row stays); --strict stops at it.
    src = write_clear(tmp_path / "bad", n_people=3, images_per_person=1, captions={2: "A person sits at a desk."})
    import_clear(src, _opts(tmp_path / "skipped"))
    ids = {q.id for q in Bench.load(tmp_path / "skipped").questions}
    assert "full/2/name" in ids and "full/2/caption" not in ids
    skipped = json.loads((tmp_path / "skipped" / "bench.json").read_text())["skipped"]
    assert skipped == {"rows": 1, "by_source": {"full caption": 1}, "first": ["full/train-00000-of-00001.parquet row 2"]}
    err = _run_import(["clear", str(src), "--strict"], tmp_path / "bench2", capsys)
    assert "full/train-00000-of-00001.parquet row 2: the caption 'A person sits at a desk.' does not name 'Author Ostrava'" in err


# ---- MLLMU task columns as JSON text ----------------------------------------------------------------


def test_mllmu_task_columns_as_json_text(tmp_path: Path, capsys) -> None:
    """Task columns stored as JSON text import to the same rows as nested ones; malformed text or the wrong
    shape is one line naming the file, row and column."""
    import_mllmu(write_mllmu(tmp_path / "nested", n_people=8, n_celebrities=1), _opts(tmp_path / "a"))
    import_mllmu(write_mllmu(tmp_path / "text", n_people=8, n_celebrities=1, json_text=True), _opts(tmp_path / "b"))
    a, b = Bench.load(tmp_path / "a"), Bench.load(tmp_path / "b")
    assert [q.to_dict() for q in a.questions] == [q.to_dict() for q in b.questions] and len(a.questions) > 100
    for value, message in (
        ('[{"Question": "Where', "column Generation_Task holds text that is not valid JSON"),
        (json.dumps({"Question": "q"}), "column Generation_Task is dict, not a list of questions"),
        (json.dumps(["just text"]), "Generation_Task[0] is str, not an object"),
    ):
        src = write_mllmu(tmp_path / "in", n_people=8, n_celebrities=1, json_text=True, replace={"Generation_Task": value})
        err = _run_import(["mllmu", str(src)], tmp_path / "bench", capsys)
        assert "Full_Set/train-00000-of-00001.parquet row 2 (ID p002): " + message in err, err
    src = write_mllmu(tmp_path / "in", n_people=8, n_celebrities=1, json_text=True,
                      replace={"Classification_Task": json.dumps({"Image_Textual_Questions": [{"Question": "q", "Options": "A"}]})})
    assert "Classification_Task.Image_Textual_Questions[0]: Options is str" in _run_import(["mllmu", str(src)], tmp_path / "bench", capsys)


# ---- evaluation sets hold no training rows -------------------------------------------------------------


def test_mllmu_generation_sets_hold_no_training_rows(mllmu_bench: Path) -> None:
    sets = Bench.load(mllmu_bench).eval_sets("10")
    for name in ("forget/image_memory", "retain/image_memory"):
        assert sets[name] and all(not q.trainable for q in sets[name]), name


# ---- bad input: one line, exit 2, nothing written ----------------------------------------------------


def _run_import(args: list[str], out: Path, capsys) -> str:
    rc = main(["bench", "import", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("smfa bench: error:"), err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*")), "a partial output was left behind"
    return err


@pytest.mark.parametrize("breakage, message", [
    ({"drop": {"Full_Set": "ID"}}, "column(s) ID missing"),
    ({"drop": {"ft_Data": "metadata"}}, "column(s) metadata missing"),
    ({"bad_image": True}, "image bytes cannot be decoded"),
    ({"duplicate_id": True}, "'p004' appears twice"),
    ({"unknown_forget_id": True}, "'p999' is not in Full_Set"),
])
def test_mllmu_bad_input(tmp_path: Path, capsys, breakage: dict, message: str) -> None:
    src = write_mllmu(tmp_path / "in", n_people=8, n_celebrities=1, **breakage)
    assert message in _run_import(["mllmu", str(src)], tmp_path / "bench", capsys)


def test_split_naming_unknown_people(tmp_path: Path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = write_mllmu(tmp_path / "in", n_people=8, n_celebrities=1)
    pq.write_table(pa.Table.from_pylist([{"ID": "p001"}, {"ID": "stranger"}]), src / "retain_95" / "train-00000-of-00001.parquet")
    assert "retain_95 is not the complement of forget_5" in _run_import(["mllmu", str(src)], tmp_path / "bench", capsys)
    clear = write_clear(tmp_path / "clear", n_people=3, images_per_person=1)
    pq.write_table(pa.Table.from_pylist([{"image": {"bytes": png_bytes(1), "path": None}, "caption": "c", "name": "Nobody Here"}]),
                   clear / "forget10" / "train-00000-of-00001.parquet")
    assert "'Nobody Here' is not in the full subset" in _run_import(["clear", str(clear)], tmp_path / "bench2", capsys)


def test_jsonl_bad_input(tmp_path: Path, capsys) -> None:
    rows, images = write_jsonl(tmp_path / "in", n_people=3)
    out = tmp_path / "bench"
    err = _run_import(["jsonl", str(rows), "--images", str(images), "--forget", "u0,ghost"], out, capsys)
    assert "--forget names 'ghost', who has no row" in err
    lines = rows.read_text().splitlines()
    dup = rows.with_name("dup.jsonl")
    dup.write_text("\n".join(json.dumps({**json.loads(line), "id": "same"}) for line in lines[:2]) + "\n")
    assert "line 2: question id 'same' is already used on line 1" in _run_import(["jsonl", str(dup), "--images", str(images)], out, capsys)
    (images / "u1.png").write_bytes(b"not an image")
    assert "cannot be decoded" in _run_import(["jsonl", str(rows), "--images", str(images)], out, capsys)
    missing = rows.with_name("missing.jsonl")
    missing.write_text(json.dumps({"person_id": "u9", "name": "N", "answer": "A."}) + "\n")
    assert "field 'question' is missing" in _run_import(["jsonl", str(missing)], out, capsys)


def test_forget_file_with_unknown_person_fails_before_loading_a_model(mllmu_bench: Path, tmp_path: Path, capsys) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("p001\np999\n")
    rc = main(["eval", "--bench", str(mllmu_bench), "--model", str(tmp_path / "no-model"), "--forget", str(ids),
               "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "p999" in err and len(err.splitlines()) == 1
    rc = main(["eval", "--bench", str(mllmu_bench), "--model", "x", "--forget", "20", "--out", str(tmp_path / "e2")])
    assert rc == 2 and "this bench has: 5, 10, 15" in capsys.readouterr().err


# ---- choice and cloze scoring ------------------------------------------------------------------------


def test_pick_option_takes_the_lowest_loss_first_on_ties() -> None:
    from smfa.eval.generate import pick_option

    assert pick_option({"A": 2.0, "B": 0.5, "C": 0.7}) == "B"
    assert pick_option({"A": 1.0, "B": 1.0}) == "A"


def test_choice_and_cloze_metrics_and_na(capsys) -> None:
    from smfa.eval.judges import get_judge
    from smfa.eval.metrics import compute_all_sets, compute_overall
    from smfa.eval.schema import Generation, Metrics
    from smfa.report import eval_report_markdown

    def gen(set_name: str, fmt: str, answer: str, fact: str, reference: str = "") -> Generation:
        return Generation(set=set_name, question_id=f"{set_name}{answer}", kind="image_memory", attribute="a",
                          question="q", answer=answer, reference=reference or fact, fact=fact, person_id="p",
                          is_forget_person=True, format=fmt)

    gens = [gen("forget/image_memory/choice", CHOICE, "B", "B"), gen("forget/image_memory/choice", CHOICE, "A", "C"),
            gen("forget/image_memory/cloze", CLOZE, "He is a Baker now", "baker"),
            gen("forget/image_memory/cloze", CLOZE, "pilot", "nurse"),
            gen("forget/image_memory", GENERATION, "This person lives in Norvale.", "Norvale", "This person lives in Norvale.")]
    sets = compute_all_sets(gens, get_judge("offline", vocabulary=["This", "person", "lives", "in", "Norvale"]))
    assert sets["forget/image_memory/choice"].choice_accuracy == 0.5
    assert sets["forget/image_memory/choice"].rouge_l is None  # a picked letter has no text to score
    assert sets["forget/image_memory/cloze"].cloze_accuracy == 0.5
    assert sets["forget/image_memory"].choice_accuracy is None and sets["forget/image_memory"].rouge_l == 1.0
    overall = compute_overall(sets)
    assert overall.mllmu_forget_classification_multimodal == 0.5 and overall.mllmu_forget_cloze_multimodal == 0.5
    assert overall.mllmu_forget_generation_multimodal == 1.0
    assert overall.mllmu_retain_classification_multimodal is None and overall.image_understanding is None
    report = eval_report_markdown(Metrics(target="all", model="m", forget="10", judge="offline", sets=sets, overall=overall))
    assert "| Overall image understanding | n/a | ↑ |" in report
    assert "| Forget Set: classification acc. (multimodal) | 50.0 | ↓ |" in report
    assert "| Retain Set: cloze acc. (multimodal) | n/a | ↑ |" in report


# ---- one path through every stage --------------------------------------------------------------------


@pytest.mark.slow
def test_mllmu_import_finetune_unlearn_eval_report(tmp_path: Path, capsys) -> None:
    """Import → finetune the tiny model → unlearn (SMFA) → eval → report, through the CLI (~40 s on 2 cores)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    src = write_mllmu(tmp_path / "in", n_people=12, n_celebrities=2)
    bench, vanilla, unlearned, ev, rep = (tmp_path / n for n in ("bench", "vanilla", "smfa", "eval", "report"))
    steps = [
        ["bench", "import", "mllmu", str(src), "--out", str(bench), "--anchor-size", "6", "--quiet"],
        ["finetune", "--bench", str(bench), "--model", "tiny", "--out", str(vanilla), "--steps", "100",
         "--batch-size", "16", "--lr", "3e-3"],
        ["unlearn", "--method", "smfa", "--bench", str(bench), "--model", str(vanilla), "--forget", "forget_15",
         "--out", str(unlearned), "--lr", "1e-2", "--param", "max_steps=15", "--param", "anchor_epochs=5", "--eval-limit", "12",
         "--no-verify"],
        ["eval", "--bench", str(bench), "--model", str(vanilla), "--forget", "15", "--out", str(ev), "--limit", "12"],
        ["report", str(ev), str(unlearned / "eval"), "--out", str(rep)],
    ]
    for argv in steps:
        assert main(argv) == 0, capsys.readouterr().err
    before = json.loads((ev / "metrics.json").read_text())["overall"]
    after = json.loads((unlearned / "eval" / "metrics.json").read_text())["overall"]
    for o in (before, after):
        for task in ("classification", "generation", "cloze"):
            for s in ("forget", "test", "retain", "celebrity"):
                assert o[f"mllmu_{s}_{task}_multimodal"] is not None, (s, task)
        for lacking in ("image_understanding", "forget_understanding", "general_vqa", "general_vqa_refusal_rate"):
            assert o[lacking] is None, lacking  # MLLMU-Bench has no such sets: n/a, never 0
    assert before["retain_image_memory"] >= 0.9  # the vanilla memorised its training QA
    assert after["forget_image_memory"] < before["forget_image_memory"]  # SMFA forgot some of it
    compare = (rep / "compare.md").read_text()
    assert "Forget Set classification acc. (multi.)" in compare and "n/a" in compare


def test_bench_show_draws_an_imported_bench(mllmu_bench: Path, tmp_path: Path, capsys) -> None:
    """`smfa bench show` on an imported bench: its counts, and a contact sheet of its people's own images
    (forget people first) and of the images no person owns."""
    from PIL import Image

    from smfa.cli.main import main

    out = tmp_path / "sheet.png"
    assert main(["bench", "show", str(mllmu_bench), "--out", str(out), "--people", "3"]) == 0
    assert "imported" not in capsys.readouterr().err
    sheet = Image.open(out)
    assert sheet.format == "PNG" and sheet.size[0] > 400 and sheet.size[1] > 300
