"""Every method, on the micro bench with its shipped tiny-preset defaults: forgetting happened (forget leak
below the vanilla's) — and for SMFA, retention held — measured by the same evaluation code."""

from __future__ import annotations

from pathlib import Path

import pytest

from smfa.methods import method_names

pytestmark = pytest.mark.slow

# The micro bench forgets 5 people (~110 rows) where the tiny bench forgets 18 (~400): every method gets
# 15 epochs so that it takes about as many optimiser steps as the shipped tiny defaults (measured: GA
# Difference at its shipped 5 epochs moved the micro leak only 0.99 → 0.93, GA at 2 epochs 0.99 → 0.88).
MICRO_PARAMS = {name: {"epochs": 15} for name in method_names()}
# The method tests run the paper recipe (``--reference none``): what they check is each method's forgetting and
# retention, not the reference budget, which costs 5-10x the training time on the micro bench (~1,300
# self-labelled rows). The default budget is run end to end by test_compare_reuses_smfa_mfa_for_idk here, by
# tests/test_demo.py and tests/test_reference_budget.py.
REFERENCE = "none"


@pytest.fixture(scope="module")
def unlearned(micro_bench_dir: Path, micro_vanilla: Path, tmp_path_factory: pytest.TempPathFactory):
    """``unlearned(method)`` → (run directory, its metrics): one run per method per module (the SMFA run serves
    four tests). SMFA, IDK and TIES train the same MFA (and SMFA and TIES the same RA), so it is trained once and
    reused, as ``smfa compare`` does — test_compare_reuses_smfa_mfa_for_idk shows a reused MFA gives the
    standalone run's weights. One intra-op thread while training: the weights, hence the measured numbers, do
    not depend on the machine's thread count."""
    import torch

    from smfa.eval.schema import load_metrics
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    root = tmp_path_factory.mktemp("methods")
    runs: dict[str, tuple[Path, object]] = {}

    def run(method: str) -> tuple[Path, object]:
        if method not in runs:
            out = root / method
            threads = torch.get_num_threads()
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("SMFA_CACHE_DIR", str(root / "cache"))  # the shared RA: in this module's directory only
                torch.set_num_threads(1)
                try:
                    unlearn(UnlearnConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(out),
                                          method=method, forget="10", reference=REFERENCE,
                                          params=MICRO_PARAMS.get(method, {}), eval_limit=30, progress=False,
                                          shared_dir=str(root / "shared"), anchor_cache=True, leak_target=None))
                finally:
                    torch.set_num_threads(threads)
            runs[method] = (out, load_metrics(out / "eval"))
        return runs[method]

    return run


def _leak(m) -> float:
    return (m.sets["forget/image_memory"].leak_rate + m.sets["forget/text_memory"].leak_rate) / 2


@pytest.mark.parametrize("method", method_names())
def test_method_forgets(method: str, unlearned, micro_vanilla_metrics, floor) -> None:
    out, m = unlearned(method)
    before, after = _leak(micro_vanilla_metrics), _leak(m)
    floor.at_most("forget leak (mean of photo, name), vanilla's - 0.2", after, before - 0.2, method)
    assert (out / "model" / "model.safetensors").is_file() and (out / "manifest.json").is_file()


def test_smfa_forgets_and_retains(unlearned, micro_vanilla_metrics, floor) -> None:
    out, m = unlearned("smfa")
    # Measured (micro, k = 10, 15 epochs): leaks 0 / 0, retain memory 0.68 of the vanilla's 0.96,
    # understanding 0.70 vs 0.76, general VQA 0.40 vs 0.38. Retain memory is SMFA's weak point on our bench:
    # refusals spread to retain people's memory questions (docs/archive/results.md).
    v = micro_vanilla_metrics.overall
    o = m.overall
    # Floors leave room for the vanilla's numerics (1 vs 2 threads give slightly different weights; one CI
    # run measured leak photo 0.17 with an unseeded LoRA init, since fixed).
    floor.at_most("forget leak, photo", o.forget_leak_image, 0.25)
    floor.at_most("forget leak, name", o.forget_leak_text, 0.25)
    floor.at_least("retain memory, 0.5 x vanilla's", o.retain_memory, 0.5 * v.retain_memory)
    floor.at_least("image understanding, 0.8 x vanilla's", o.image_understanding, 0.8 * v.image_understanding)
    floor.at_least("general VQA, 0.75 x vanilla's", o.general_vqa, 0.75 * v.general_vqa)
    for name in ("forget", "anchor"):
        assert (out / "adapters" / name / "adapter_model.safetensors").is_file()
    assert (out / "sculpt" / "sculpt_report.json").is_file()


def test_k_sweep_reuses_adapters(unlearned, tmp_path_factory: pytest.TempPathFactory) -> None:
    from smfa.stages.sweep import SweepConfig, sculpt_sweep

    root = tmp_path_factory.mktemp("sweep")
    out, _ = unlearned("smfa")
    sweep = sculpt_sweep(SweepConfig(run=str(out), ks=(0.0, 1000.0), limit=20, progress=False,
                                     out=str(root / "sweep")))
    import json

    rows = json.loads((sweep / "sweep.json").read_text())["rows"]
    assert [r["k"] for r in rows] == [0.0, 1000.0]
    # k = 0 masks every conflicting entry; a huge k masks none (= the unsculpted MFA): forgetting can only grow.
    assert rows[1]["forget_memory"] <= rows[0]["forget_memory"] + 0.05
    assert (sweep / "k_sweep.png").is_file()


def test_out_of_core_merge_matches_in_memory(unlearned, tmp_path_factory) -> None:
    """`smfa sculpt RUN --merge-to DIR --k K` (shard by shard, on disk) writes the same weights as the
    in-memory merge of `smfa unlearn` with the same k."""
    from safetensors.torch import load_file

    from smfa.cli.main import main

    root = tmp_path_factory.mktemp("ooc")
    out, _ = unlearned("smfa")
    k = __import__("json").loads((out / "manifest.json").read_text())["hyperparameters"]["k"]
    assert main(["sculpt", str(out), "--merge-to", str(root / "merged"), "--k", str(k)]) == 0
    a = load_file(str(out / "model" / "model.safetensors"))
    b = load_file(str(root / "merged" / "model.safetensors"))
    shared = [n for n in a if n in b]
    assert len(shared) == len(a)
    worst = max(float((a[n].float() - b[n].float()).abs().max()) for n in shared)
    assert worst < 1e-5, worst


def test_smfa_dual_variant(micro_bench_dir: Path, micro_vanilla: Path, micro_vanilla_metrics, tmp_path: Path) -> None:
    """--dual: an image-view MFA and a text-view MFA, each sculpted against the same RA with its own k, averaged."""
    import json

    import torch

    from smfa.eval.schema import load_metrics
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    out = tmp_path / "dual"
    unlearn(UnlearnConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(out), method="smfa", forget="10",
                          reference=REFERENCE, params={"dual": True, "epochs": 5}, eval_limit=10, progress=False,
                          leak_target=None))
    report = json.loads((out / "sculpt" / "sculpt_report.json").read_text())
    from smfa.rundir import read_manifest

    used = read_manifest(out)["hyperparameters"]  # the shipped values of the budget the run resolved
    assert [v["k"] for v in report["views"]] == [used["k"], used["k_text"]]  # image view k, text view k_text
    assert (out / "adapters" / "forget_text" / "adapter_model.safetensors").is_file()
    # Each view's sculpted update is halved by the average; measured on the micro bench (15 epochs) this
    # removes the forgetting (leak 0.97 vs the vanilla's 0.94 in one run): the dual variant needs a larger k
    # or more epochs here. So the run is a short one (5 epochs) and what is checked is that the merge used
    # both views (the weights moved).
    from safetensors.torch import load_file

    merged = load_file(str(out / "model" / "model.safetensors"))
    vanilla = load_file(str(micro_vanilla / "model" / "model.safetensors"))
    moved = [n for n in merged if "q_proj" in n and not torch.equal(merged[n], vanilla[n])]
    assert moved, "the dual merge left every adapted weight unchanged"
    assert load_metrics(out / "eval").sets["forget/image_memory"].n > 0


def test_compare_reuses_smfa_mfa_for_idk(micro_bench_dir: Path, micro_vanilla: Path, tmp_path: Path) -> None:
    """IDK tuning is SMFA's MFA unsculpted: in one comparison it is trained once, and the IDK model equals
    the one a standalone IDK run trains (its wall time still counts the MFA's training)."""
    from safetensors.torch import load_file

    from smfa.stages.compare import CompareConfig, compare
    from smfa.rundir import read_manifest
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    params = {"max_steps": 3}
    out = compare(CompareConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(tmp_path / "cmp"),
                                methods=("smfa", "idk"), forget=("10",), eval_limit=2, include_reference=False,
                                params={"smfa": params, "idk": params}, progress=False))
    shared = list((out / "cells" / ".shared").glob("mfa-*"))
    assert len(shared) == 1 and (shared[0] / "train.json").is_file()
    idk_manifest = read_manifest(out / "cells" / "idk-f10")
    assert read_manifest(out / "cells" / "smfa-f10")["reused_adapter_train_s"] == 0
    assert idk_manifest["reused_adapter_train_s"] > 0
    assert idk_manifest["wall_time_s"] >= idk_manifest["reused_adapter_train_s"]
    alone = unlearn(UnlearnConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(tmp_path / "idk"),
                                  method="idk", forget="10", params=params, evaluate=False, progress=False,
                                  leak_target=None))
    a = load_file(str(alone / "model" / "model.safetensors"))
    b = load_file(str(out / "cells" / "idk-f10" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-6


def test_lora_trainees_share_the_vanillas_weights_and_never_write_them() -> None:
    """A LoRA phase trains a view of the vanilla (no weight copied: at 7B a copy is 14 GB); the adapters
    live in the view's modules only, and the merge (``finish``) writes into a copy, never the vanilla."""
    from types import SimpleNamespace

    import torch

    from smfa.methods.base import MethodConfig
    from smfa.methods.context import UnlearnContext
    from smfa.models.families import family_for
    from smfa.models.tiny import TinyModelConfig, build_processor, build_tiny_model
    from smfa.training.engine import apply_lora
    from smfa.training.runs import finish

    cfg = TinyModelConfig(vision_hidden=16, vision_layers=1, text_hidden=32, text_layers=1, text_intermediate=64)
    vanilla = build_tiny_model(build_processor(["a tiny corpus of words"], cfg), cfg)
    before = {k: v.clone() for k, v in vanilla.state_dict().items()}
    ctx = UnlearnContext(bench=None, vanilla=SimpleNamespace(model=vanilla), data=None, target="all", seed=0,
                         work_dir=Path("."))
    view = ctx.trainee(MethodConfig(lora=True))
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(view.parameters(), vanilla.parameters()))
    trainee = apply_lora(view, family_for(vanilla), r=4, alpha=4, dropout=0.0)
    assert not any("lora_" in name for name, _ in vanilla.named_modules())
    with torch.no_grad():  # an update of the adapters
        for name, p in trainee.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)
    merged = finish(trainee)
    assert all(torch.equal(vanilla.state_dict()[k], v) for k, v in before.items())
    moved = [k for k, v in merged.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert moved and all("language_model" in k for k in moved)
    full = ctx.trainee(MethodConfig(lora=False))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(full.parameters(), vanilla.parameters()))
