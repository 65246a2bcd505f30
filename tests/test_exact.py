"""Exact deletion (``smfa forget --exact``, :mod:`smfa.stages.exact`) and SISA slices (``smfa finetune --slices``):
the retrained model never saw the people and is the from-scratch run without them, weight for weight; a sliced
vanilla is retrained only from the earliest slice holding one of them; the audit links an approximate answer
to its exact one and ``smfa audit verify`` checks the link."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smfa.bench import Bench
from smfa.cli.main import main
from smfa.stages.exact import ExactConfig, exact
from smfa.stages.finetune import FinetuneConfig, finetune, slice_layout, slice_steps

STEPS = 8


def _cfg(bench: Path, out: Path, **kw) -> FinetuneConfig:
    return FinetuneConfig(**{**dict(bench=str(bench), out=str(out), steps=STEPS, batch_size=8, save_steps=0,
                                    progress=False), **kw})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _equal(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread (the tests' one_torch_thread, for module fixtures): a run resumed from a fixture's
    checkpoint is weight-equal to one trained from scratch only when both trained with the same thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def vanilla(nano_bench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with _one_thread():
        return finetune(_cfg(nano_bench_dir, tmp_path_factory.mktemp("exact") / "vanilla"))


@pytest.fixture(scope="module")
def sliced(nano_bench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with _one_thread():
        return finetune(_cfg(nano_bench_dir, tmp_path_factory.mktemp("exact") / "sliced", slices=4))


def test_an_exact_request_never_saw_the_people_and_is_the_run_without_them(nano_bench_dir: Path, vanilla: Path,
                                                                          tmp_path: Path, one_torch_thread) -> None:
    bench = Bench.load(nano_bench_dir)
    people = sorted(bench.known_people())[:2]
    run = exact(ExactConfig(model=str(vanilla), people=",".join(people), out=str(tmp_path / "exact"), progress=False))
    trained = set((run / "training_rows.txt").read_text().split())
    person = {q.id: q.person_id for q in bench.questions}
    assert trained and not any(person[r] in people for r in trained)
    assert trained == {q.id for q in bench.training_rows() if q.person_id not in people}
    scratch = finetune(_cfg(nano_bench_dir, tmp_path / "scratch", exclude=",".join(people)))
    assert _equal(run, scratch) and not _equal(run, vanilla)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stage"] == "exact" and manifest["exact"]["excluded"] == people
    assert manifest["exact"]["steps_trained"] == STEPS == manifest["exact"]["steps_full"]
    audit = json.loads((run / "audit.json").read_text())
    assert audit["guarantee"] == "exact: retrained without the people"
    assert audit["training_rows"]["rows_of_excluded_people"] == 0

    # a second request on the exact run excludes both requests' people, and the chain says so
    more = sorted(bench.known_people())[2:3]
    second = exact(ExactConfig(model=str(run), people=",".join(more), out=str(tmp_path / "second"), progress=False))
    assert json.loads((second / "manifest.json").read_text())["exact"]["excluded"] == sorted(people + more)
    assert _equal(second, finetune(_cfg(nano_bench_dir, tmp_path / "scratch2", exclude=",".join(people + more))))


def test_slices_hold_people_not_rows_and_keep_the_total_steps(nano_bench_dir: Path, sliced: Path) -> None:
    bench = Bench.load(nano_bench_dir)
    layout = slice_layout(bench, 4, 0)
    everyone = [p for group in layout.people for p in group]
    assert sorted(everyone) == sorted(bench.known_people()) and len(set(everyone)) == len(everyone)
    assert layout.people == slice_layout(bench, 4, 0).people != slice_layout(bench, 4, 1).people
    record = json.loads((sliced / "manifest.json").read_text())["slices"]
    assert [tuple(g) for g in record["people"]] == list(layout.people)
    assert sum(record["steps"]) == STEPS and record["steps"] == slice_steps(record["rows"], STEPS)
    assert slice_steps([10, 10, 10, 10], 100) == [10, 20, 30, 40]
    assert sorted(p.name for p in (sliced / "slices").iterdir()) == [f"slice-{i}" for i in range(1, 5)]


def test_a_sliced_exact_request_retrains_from_its_earliest_slice(nano_bench_dir: Path, sliced: Path, tmp_path: Path,
                                                                 one_torch_thread) -> None:
    bench = Bench.load(nano_bench_dir)
    layout = slice_layout(bench, 4, 0)
    people = [layout.people[2][0], layout.people[3][0]]  # slices 3 and 4: retrain from slice 3
    run = exact(ExactConfig(model=str(sliced), people=",".join(people), out=str(tmp_path / "exact"), progress=False))
    manifest = json.loads((run / "manifest.json").read_text())
    steps = manifest["slices"]["steps"]
    assert manifest["exact"]["start_slice"] == 3 and manifest["slices"]["started_at"] == 3
    assert manifest["exact"]["steps_trained"] == steps[2] + steps[3] < STEPS
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    assert {e["slice"] for e in log} == {3, 4}
    for i in (1, 2):  # the stages before are the vanilla's, untouched
        a, b = (load_file(str(r / "slices" / f"slice-{i}" / "model.safetensors")) for r in (run, sliced))
        assert all(torch.equal(a[k], b[k]) for k in a)
    scratch = finetune(_cfg(nano_bench_dir, tmp_path / "scratch", slices=4, exclude=",".join(people)))
    assert _equal(run, scratch) and not _equal(run, sliced)


def test_an_approximate_answer_made_exact_is_linked_and_a_tampered_link_fails(capsys, nano_bench_dir: Path,
                                                                               vanilla: Path, tmp_path: Path) -> None:
    bench = Bench.load(nano_bench_dir)
    people = sorted(bench.known_people())[5]
    approx = tmp_path / "approx"
    assert main(["forget", "--model", str(vanilla), "--bench", str(nano_bench_dir), "--people", people, "--out",
                 str(approx), "--method", "ga", "--param", "max_steps=1", "--no-eval", "--no-verify"]) == 0
    assert json.loads((approx / "audit.json").read_text())["guarantee"] == "approximate: ga"
    out = tmp_path / "exact"
    assert main(["forget", "--exact", "--of", str(approx), "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert audit["link"]["run"] == str(approx.resolve()) and audit["link"]["guarantee"] == "approximate: ga"
    assert audit["request"]["people"] == [people] and audit["excluded"] == [people]
    assert "approximate: ga" in (out / "audit.md").read_text()
    capsys.readouterr()
    assert main(["audit", "verify", str(out)]) == 0

    # a later approximate request on the exact model continues its chain: the exact run is the root, its people earlier
    later = tmp_path / "later"
    other = sorted(bench.known_people())[6]
    assert main(["forget", "--model", str(out), "--bench", str(nano_bench_dir), "--people", other, "--out", str(later),
                 "--method", "ga", "--param", "max_steps=1", "--no-eval", "--no-verify"]) == 0
    manifest = json.loads((later / "manifest.json").read_text())
    assert manifest["root"] == str(out.resolve()) and [r["people"] for r in manifest["chain"]] == [[people]]

    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    record = json.loads((tampered / "audit.json").read_text())
    record["link"]["audit_sha256"] = "0" * 64
    (tampered / "audit.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["audit", "verify", str(tampered)]) == 2
    assert "differs from the one linked" in capsys.readouterr().err
    (approx / "audit.json").write_text((approx / "audit.json").read_text().replace(people, "p9999"))
    assert main(["audit", "verify", str(out)]) == 2
    assert "differs from the one linked" in capsys.readouterr().err


def test_exact_refusals_are_one_line(capsys, nano_bench_dir: Path, micro_bench_dir: Path, vanilla: Path,
                                     tmp_path: Path) -> None:
    person = sorted(Bench.load(nano_bench_dir).known_people())[0]
    bare = tmp_path / "bare"
    shutil.copytree(vanilla / "model", bare)
    cases = [
        (["--model", str(bare), "--bench", str(nano_bench_dir), "--people", person], "has no manifest.json"),
        (["--model", str(vanilla), "--bench", str(micro_bench_dir), "--people",
          sorted(Bench.load(micro_bench_dir).known_people())[0]], "another bench"),
        (["--model", str(vanilla), "--people", person, "--method", "smfa"], "--method do not apply"),
        (["--model", str(vanilla), "--people", "p9999"], "unknown person id"),
        (["--of", str(vanilla)], "not an unlearning run"),
    ]
    for extra, needle in cases:
        assert main(["forget", "--exact", "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    for args, needle in [(["--slices", "0"], "--slices must be"), (["--slices", "2", "--resume"], "--resume is not"),
                         (["--exclude", "p9999"], "not a known person")]:
        assert main(["finetune", "--bench", str(nano_bench_dir), "--out", str(tmp_path / "f"), "--steps", "4",
                     *args]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def test_a_shipped_vanilla_has_a_recipe_an_exact_request_reproduces(micro_bench_dir: Path, micro_vanilla: Path,
                                                                   tmp_path: Path) -> None:
    from smfa.errors import ConfigError
    from smfa.stages.exact import read_base

    bench = Bench.load(micro_bench_dir)
    manifest = json.loads((micro_vanilla / "manifest.json").read_text())
    assert manifest.get("pretrained"), "the micro vanilla is the shipped one (tests/fixtures/pretrained)"
    base = read_base(str(micro_vanilla), bench)
    assert (base.recipe.steps, base.recipe.lr, base.recipe.slices, base.excluded) == (2000, 2e-3, 1, frozenset())
    changed = tmp_path / "changed"
    shutil.copytree(micro_vanilla, changed)
    manifest["config"]["steps"] = 1000  # a recipe that is not the one the shipped weights were matched on
    (changed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="recipe key does not match"):
        read_base(str(changed), bench)
