"""The visual-only setting (MMUnlearner's reformulation): forget who is in the photo, keep what is known by
name — measured on the micro bench."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_visual_target_forgets_photo_keeps_name(micro_bench_dir: Path, micro_vanilla: Path, micro_vanilla_metrics,
                                                tmp_path: Path, floor, one_torch_thread) -> None:
    from smfa.eval.schema import load_metrics
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    # The paper recipe (the visual setting's shipped k 5): this test is about the setting, not the reference
    # budget, which multiplies the training time on the micro bench. 8 epochs where tests/test_methods.py takes
    # 15: in this setting the anchor (x 8 in the MFA's data) also holds the forget people's name-only rows.
    out = tmp_path / "smfa-visual"
    unlearn(UnlearnConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(out), method="smfa",
                          forget="10", target="visual", params={"epochs": 8}, eval_limit=40,
                          reference="none", progress=False, leak_target=None))
    m = load_metrics(out / "eval")
    assert m.target == "visual"
    assert "forget_text/text_memory/paraphrase" in m.sets and "forget/text_memory" not in m.sets
    assert "forget_text/text_memory" not in m.sets  # its rows are the anchor: never scored
    before_img = micro_vanilla_metrics.sets["forget/image_memory"].leak_rate
    before_txt = micro_vanilla_metrics.sets["forget/text_memory/paraphrase"].leak_rate
    after_img = m.sets["forget/image_memory"].leak_rate
    after_txt = m.sets["forget_text/text_memory/paraphrase"].leak_rate
    floor.at_most("forget photo leak, vanilla's - 0.4", after_img, before_img - 0.4)
    # Name-only knowledge of the same people kept, read on held-out phrasings (its training rows are the anchor):
    # measured 0.64 (16 of 25) against the vanilla's 0.72, i.e. 0.89 x the vanilla's, the same on 3 runs (one
    # thread), photo leak 0.125 (paper recipe, 8 epochs; 15 epochs: 0.68, 0.10; the reference budget, 15 epochs:
    # 0.48, 0.03; on the trained rows the name read ~1.0, docs/defaults.md). Floor 0.75 x the vanilla's (0.54):
    # a margin of 0.10, between 2 and 3 of the 25 questions.
    floor.at_least("forget name-only leak on held-out phrasings (kept), 0.75 x vanilla's", after_txt, 0.75 * before_txt)
    report = (out / "eval" / "report.md").read_text()
    assert "visual" in report


@pytest.mark.parametrize("subset", ["core_sets", "request_sets"])
def test_the_sweep_and_a_request_report_kept_name_memory(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path,
                                                         subset: str) -> None:
    """The k sweep's sets (``core_sets``) and a deletion request's (``request_sets``, ``smfa forget``) keep the
    name-memory set, which in this setting is a held-out-phrasing variant: the kept name memory is a number there."""
    from smfa.bench.schema import name_memory_set
    from smfa.eval.pipeline import EvalConfig, evaluate
    from smfa.eval.schema import load_metrics

    out = tmp_path / subset
    evaluate(EvalConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(out), forget="10",
                        target="visual", limit=5, progress=False, **{subset: True}))
    m = load_metrics(out)
    assert m.sets[name_memory_set("visual")].n == 5
    assert m.overall.forget_text_memory is not None and m.overall.forget_leak_text is not None
