"""Shipped pretrained vanillas: used when bench content and recipe match (and said so), refused with the
reason otherwise; the installed run is a normal finetune run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from smfa.bench import Bench
from smfa.pretrained import content_checksum, find_pretrained, write_pretrained
from smfa.rundir import read_manifest, write_manifest
from smfa.stages.finetune import FinetuneConfig, finetune


@pytest.fixture()
def shipped(micro_bench_dir: Path, tmp_path: Path, monkeypatch) -> tuple[Path, FinetuneConfig]:
    """An untrained tiny model packaged as a shipped vanilla for the micro bench (no training needed to test
    the mechanism), alone on the search path."""
    from smfa.models.tiny import build_tiny

    bench = Bench.load(micro_bench_dir, verify_images=False)
    cfg = FinetuneConfig(steps=7, lr=1e-3)
    run = tmp_path / "run"
    model, processor = build_tiny(bench)
    model.save_pretrained(run / "model")
    processor.save_pretrained(run / "model")
    write_manifest(run, "finetune", cfg, data={"rows": 1}, final_loss=0.5)
    write_pretrained(run, bench, cfg, tmp_path / "ship" / "micro-test")
    monkeypatch.setattr("smfa.pretrained.search_path", lambda: [tmp_path / "ship"])
    return tmp_path / "ship" / "micro-test", cfg


def test_a_matching_bench_and_recipe_use_the_shipped_weights(micro_bench_dir: Path, shipped, tmp_path: Path, capsys) -> None:
    src, cfg = shipped
    out = finetune(replace(cfg, bench=str(micro_bench_dir), out=str(tmp_path / "vanilla")))
    assert "using the shipped vanilla micro-test" in capsys.readouterr().out
    assert (out / "model" / "model.safetensors").read_bytes() == (src / "model" / "model.safetensors").read_bytes()
    manifest = read_manifest(out)
    assert manifest["pretrained"]["name"] == "micro-test" and manifest["data"]["people"] == "all"
    assert not list(tmp_path.glob(".vanilla.partial*"))


def test_any_difference_says_why_and_trains(micro_bench_dir: Path, shipped, tiny_bench_dir: Path) -> None:
    _, cfg = shipped
    bench = Bench.load(micro_bench_dir, verify_images=False)
    found, why = find_pretrained(bench, replace(cfg, steps=8))
    assert found is None and "recipe differs in steps" in why
    found, why = find_pretrained(Bench.load(tiny_bench_dir, verify_images=False), cfg)
    assert found is None and "no shipped vanilla was trained on this bench" in why
    found, why = find_pretrained(bench, replace(cfg, people="retain"))
    assert found is None and "recipe differs in people" in why
    assert find_pretrained(bench, cfg)[0] is not None


def test_content_checksum_ignores_png_bytes_and_eval_rows_but_not_training_rows(micro_bench_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(micro_bench_dir, tmp_path / "b"))
    before = content_checksum(Bench.load(copy, verify_images=False))
    png = next((copy / "images" / "portraits").glob("*.png"))
    png.write_bytes(png.read_bytes() + b"\0")  # re-encoded images: same content
    assert content_checksum(Bench.load(copy, verify_images=False)) == before
    trained = {q.id for q in Bench.load(copy, verify_images=False).training_rows()}
    rows = (copy / "questions.jsonl").read_text().splitlines()
    held_out = next(i for i, r in enumerate(rows) if json.loads(r)["id"] not in trained)
    rows[held_out] = json.dumps({**json.loads(rows[held_out]), "question": "Who is this, please?"})
    (copy / "questions.jsonl").write_text("\n".join(rows) + "\n")
    assert content_checksum(Bench.load(copy, verify_images=False)) == before  # an evaluation row: not learnt
    first = next(i for i, r in enumerate(rows) if json.loads(r)["id"] in trained)
    rows[first] = json.dumps({**json.loads(rows[first]), "question": "Who is this, please?"})
    (copy / "questions.jsonl").write_text("\n".join(rows) + "\n")
    assert content_checksum(Bench.load(copy, verify_images=False)) != before  # a training row


def test_the_shipped_tiny_vanilla_and_oracle_are_small_and_describe_themselves() -> None:
    root = Path(__file__).parents[1] / "src" / "smfa" / "pretrained"
    for name in ("tiny-seed0", "tiny-seed0-oracle10"):
        meta = json.loads((root / name / "pretrained.json").read_text())
        assert meta["bench"] == {**meta["bench"], "preset": "tiny", "seed": 0, "version": "3.0"}
        assert meta["retrain"] and meta["recipe_key"] and meta["versions"]["torch"]
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) <= 10_000_000  # both together


def test_the_default_bench_finds_its_shipped_vanilla_and_forget_10_oracle(tiny_bench_dir: Path, tmp_path: Path) -> None:
    """The demo's two models ship: the oracle for exactly the people of forget_10, and it passes the oracle check."""
    from smfa.eval.pipeline import check_oracle

    bench = Bench.load(tiny_bench_dir, verify_images=False)
    vanilla, _ = find_pretrained(bench, FinetuneConfig())
    oracle, why = find_pretrained(bench, FinetuneConfig(people="retain", forget="10"))
    assert vanilla.name == "tiny-seed0" and oracle.name == "tiny-seed0-oracle10" and "never saw forget split 10" in why
    assert json.loads((oracle / "pretrained.json").read_text())["left_out"] == sorted(bench.forget_people("10"))
    found, why = find_pretrained(bench, FinetuneConfig(people="retain", forget="15"))
    assert found is None and "tiny-seed0-oracle10 fits this bench but its recipe differs in forget" in why
    run = finetune(FinetuneConfig(bench=str(tiny_bench_dir), out=str(tmp_path / "oracle"), people="retain",
                                  forget="10", progress=False))  # installed, not trained
    assert read_manifest(run)["pretrained"]["name"] == "tiny-seed0-oracle10"
    check_oracle(str(run), bench, "10")  # raises when the oracle saw a forget person or left out a retain one


def test_the_cache_installs_the_shipped_vanilla_instead_of_training(micro_bench_dir: Path, shipped, tmp_path: Path,
                                                                    monkeypatch) -> None:
    from smfa.stages.cache import cached_finetune

    monkeypatch.setenv("SMFA_CACHE_DIR", str(tmp_path / "cache"))
    src, cfg = shipped
    run, cached = cached_finetune(micro_bench_dir, replace(cfg, progress=False))  # resume=True inside: still shipped
    assert not cached and read_manifest(run)["pretrained"]["name"] == "micro-test"
    assert cached_finetune(micro_bench_dir, replace(cfg, progress=False)) == (run, True)
