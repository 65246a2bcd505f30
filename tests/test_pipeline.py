"""Integration: the vanilla tiny model memorises the micro bench; `smfa eval` writes what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_vanilla_memorises_and_understands(micro_vanilla_metrics) -> None:
    """Floors measured on the micro bench (60 people, 1,200 steps): name-only facts are memorised almost
    perfectly; the tiny 32 px vision tower recognises people and reads colours well but fine features
    (glasses, beard, hat) only partly — see docs/archive/results.md."""
    sets = micro_vanilla_metrics.sets
    for name in ("forget/text_memory", "retain/text_memory"):
        assert sets[name].leak_rate >= 0.95, (name, sets[name].leak_rate)
    for name in ("forget/image_memory", "retain/image_memory"):
        assert sets[name].leak_rate >= 0.75, (name, sets[name].leak_rate)
    for name in ("forget/image_memory", "forget/text_memory", "retain/image_memory", "retain/text_memory"):
        assert sets[name].refusal_rate <= 0.05, (name, sets[name].refusal_rate)
    for name in ("forget/understanding", "retain/understanding"):
        assert sets[name].accuracy >= 0.6, (name, sets[name].accuracy)
    assert sets["general_vqa"].accuracy >= 0.25
    assert micro_vanilla_metrics.overall.meaningful >= 8.0


def test_eval_outputs_schema_and_user_questions(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path) -> None:
    from smfa.cli.main import main
    from smfa.eval.schema import load_metrics

    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"id": "u1", "question": "What is the name of this person?",
                                  "answer": "unknown", "fact": "unknown", "image": None}) + "\n")
    out = tmp_path / "eval"
    rc = main(["eval", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--out", str(out),
               "--limit", "5", "--questions", str(probes)])
    assert rc == 0
    for name in ("metrics.json", "generations.jsonl", "report.md", "manifest.json"):
        assert (out / name).is_file(), name
    metrics = load_metrics(out)
    assert metrics.sets["user"].n == 1
    assert metrics.sets["forget/image_memory"].n == 5
    rows = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert {"question", "answer", "reference", "set"} <= set(rows[0])
    # refuses to overwrite without --overwrite
    assert main(["eval", "--bench", str(micro_bench_dir), "--model", str(micro_vanilla), "--out", str(out), "--limit", "5"]) == 2


def test_oracle_never_saw_forget_people(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path) -> None:
    """The oracle (retain only) answers forget people's facts at about chance; the gold standard ranks the
    vanilla far from it."""
    from smfa.stages.cache import cached_finetune
    from smfa.eval.pipeline import EvalConfig, evaluate
    from smfa.eval.schema import load_metrics
    from smfa.stages.finetune import FinetuneConfig

    from conftest import MICRO_LR, MICRO_STEPS

    oracle, _ = cached_finetune(micro_bench_dir, FinetuneConfig(steps=MICRO_STEPS // 2, lr=MICRO_LR, people="retain",
                                                                forget="10", progress=False), label="oracle")
    out = tmp_path / "oracle-eval"
    evaluate(EvalConfig(bench=str(micro_bench_dir), model=str(oracle), out=str(out), forget="10", limit=40,
                        progress=False))
    m = load_metrics(out)
    assert m.sets["forget/text_memory"].leak_rate <= 0.15
    assert m.sets["forget/image_memory"].leak_rate <= 0.25  # name questions: a name guess can repeat a token
    assert m.sets["retain/text_memory"].leak_rate >= 0.85
    out2 = tmp_path / "vanilla-gold"
    evaluate(EvalConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(out2), forget="10", limit=40,
                        oracle=str(oracle), progress=False))
    gold = load_metrics(out2).gold
    assert gold is not None and gold.forget_quality < 0.01  # the vanilla's forget losses look nothing like the oracle's
