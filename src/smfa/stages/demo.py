"""``smfa demo``: the whole pipeline on the built-in tiny model, offline — build the tiny bench, take (or train
and cache) the tiny vanilla and its retain-only oracle, unlearn forget 10 % with SMFA as it ships (the selective
recipe: + the reference pool labelled by the vanilla), SMFA as the paper gives it (the anchor alone) and IDK
tuning, evaluate, and write the comparison report with plots."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smfa.errors import OutputError

DEMO_METHODS = ("smfa", "smfa@none", "idk")  # compare entries: SMFA's default recipe, its paper recipe, IDK
DEMO_LABELS = {"smfa": "SMFA", "smfa@none": "SMFA paper", "idk": "IDK", "vanilla": "vanilla", "oracle": "oracle"}


@dataclass
class DemoConfig:
    out: str = "smfa-demo"  # demo directory (bench/, runs/, report.md)
    seed: int = 0
    forget: str = "10"
    eval_limit: int = 100  # questions per evaluation set
    # Vanilla recipe: None = smfa finetune's defaults, for which a trained vanilla of the seed-0 bench ships
    # with the package (smfa.pretrained); another seed or recipe trains one (cached after the first demo).
    steps: int | None = None
    method_steps: int | None = None  # cap each method's optimiser steps (None: the tuned defaults)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (smfa.models.placement)
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32
    overwrite: bool = False


QUICK = {"steps": 200, "method_steps": 10, "eval_limit": 10}  # --quick: a smoke run of every stage (81 s cold)


def _eta(done_s: float, remaining_steps: list[str], vanilla_cached: bool) -> str:
    # Measured on 2 CPU cores, each including its evaluation (docs: benchmarks/README.md, demo).
    per = {"smfa": 90.0, "smfa@none": 45.0, "idk": 25.0, "vanilla-eval": 25.0, "oracle-eval": 25.0}
    left = sum(per.get(s, 60.0) for s in remaining_steps)
    return f"[{done_s:5.0f}s elapsed, ~{left / 60:.1f} min left{'' if vanilla_cached else ' after training'}]"


def run_demo(cfg: DemoConfig) -> Path:
    from smfa.bench import build_bench, preset_config
    from smfa.models.placement import resolve_placement
    from smfa.rundir import check_output_dir
    from smfa.stages.cache import cached_finetune
    from smfa.stages.compare import CompareConfig, compare
    from smfa.stages.finetune import FinetuneConfig

    t0 = time.perf_counter()
    resolve_placement(cfg.device, cfg.dtype)  # an impossible --device/--dtype fails before any work
    out = check_output_dir(Path(cfg.out), cfg.overwrite)
    if out.exists():
        if not (out / "cells").is_dir() and not (out / "bench").is_dir():
            raise OutputError(f"{out} exists and is not a demo directory; choose another --out")
        shutil.rmtree(out)  # --overwrite: start the demo over (the cached vanilla is kept)
    bench_dir = out / "bench"
    print(f"[1/4] building the tiny bench (seed {cfg.seed}) → {bench_dir}", flush=True)
    if not (bench_dir / "bench.json").is_file():
        build_bench(preset_config("tiny", seed=cfg.seed), bench_dir, overwrite=True, progress=True)
    print("[2/4] vanilla tiny model (memorises all profiles; shipped for seed 0, else trained and cached)", flush=True)
    recipe = FinetuneConfig(seed=cfg.seed, device=cfg.device, dtype=cfg.dtype)
    if cfg.steps is not None:
        recipe.steps = cfg.steps
    vanilla, cached = cached_finetune(bench_dir, recipe)
    print(f"      {_origin(vanilla, cached)} vanilla: {vanilla}", flush=True)
    # The gold standard: the same recipe on the retain people only (shipped for seed 0, forget 10).
    oracle, cached = cached_finetune(bench_dir, replace(recipe, people="retain", forget=cfg.forget), label="oracle")
    print(f"      {_origin(oracle, cached)} oracle (never saw forget {cfg.forget}): {oracle}  "
          f"{_eta(time.perf_counter() - t0, ['vanilla-eval', 'oracle-eval', *DEMO_METHODS], True)}", flush=True)
    print(f"[3/4] unlearning forget {cfg.forget} % with {', '.join(DEMO_LABELS[m] for m in DEMO_METHODS)} and "
          "evaluating", flush=True)
    params = {m: {"max_steps": cfg.method_steps} for m in DEMO_METHODS} if cfg.method_steps else {}
    compare(CompareConfig(bench=str(bench_dir), model=str(vanilla), out=str(out), methods=DEMO_METHODS,
                          forget=(cfg.forget,), eval_limit=cfg.eval_limit, seed=cfg.seed, params=params,
                          oracle=f"{cfg.forget}={oracle}", allow_existing=True, device=cfg.device, dtype=cfg.dtype))
    print("[4/4] report", flush=True)
    _print_summary(out, cfg.forget)
    print(f"\nreport: {out / 'report.md'}  (plots in {out / ('forget_' + cfg.forget)})  "
          f"total {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def _origin(run: Path, cached: bool) -> str:
    from smfa.rundir import read_manifest

    return "reused cached" if cached else "shipped" if read_manifest(run).get("pretrained") else "trained"


def _print_summary(out: Path, forget: str) -> None:
    from smfa.eval.schema import load_metrics

    rows = [(DEMO_LABELS[r], out / "cells" / f"{r}-f{forget}") for r in ("vanilla", "oracle")] + [
        (DEMO_LABELS[m], out / "cells" / f"{m}-f{forget}" / "eval") for m in DEMO_METHODS]
    head = (f"{'method':<12}{'leak photo↓':>12}{'leak name↓':>12}{'retain mem↑':>13}{'% of vanilla':>14}"
            f"{'understand↑':>13}{'gen. VQA↑':>11}{'meaningful↑':>13}")
    print("\n" + head + "\n" + "-" * len(head))

    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    base = load_metrics(rows[0][1]).overall.retain_memory
    for label, path in rows:
        o = load_metrics(path).overall
        mean = "–" if o.meaningful is None else f"{o.meaningful:.2f}"
        share = "–" if o.retain_memory is None or not base else f"{100 * o.retain_memory / base:.0f}"
        print(f"{label:<12}{pct(o.forget_leak_image):>12}{pct(o.forget_leak_text):>12}{pct(o.retain_memory):>13}"
              f"{share:>14}{pct(o.image_understanding):>13}{pct(o.general_vqa):>11}{mean:>13}")
    print("\nSMFA: the shipped recipe (+ the reference pool's questions and 30 made-up name decoys per forgotten person, "
          "answered by the vanilla, k 20); SMFA paper: "
          "the anchor alone, as the paper trains it; oracle: never saw the forget people (the bar).")
