"""The documented hyper-parameter search behind the shipped tiny-preset defaults
(``src/smfa/configs/methods/*.yaml``). Every candidate unlearns the **validation** forget split
(``--forget val``: people disjoint from forget_5/10/15) and is scored on validation people only — the
test forget sets are never looked at. Writes ``docs/tuning.md`` (and a JSON of every candidate).

Selection rule (all from the validation evaluation):
    leak = mean(forget leak by photo, forget leak by name)
    keep = mean(retain memory, understanding, general VQA, meaningful; each as a ratio to the vanilla's, capped at 1)
    among candidates with leak <= 10 %, the one with the highest keep; if none forgets that well, the lowest leak.
A weighted mean of the two (the first version of this script) picked candidates that refuse almost everyone
(retain memory 16 % of the vanilla's scored 0.83): a privacy target first, then the least damage.

Usage: python scripts/tune_on_validation.py --bench B --model VANILLA --out DIR [--methods ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

# Small grids around the values the papers report (SMFA: lr 1e-4 for a 7B LoRA; the tiny model trains at
# ~10× that); one or two axes per method so the search stays a few minutes per method on 2 cores.
GRIDS: dict[str, dict[str, list[Any]]] = {
    # k is re-sculpted from one run per anchor_repeat (no retraining); anchor_repeat weighs D_r^few against
    # the forget set in the MFA's data (18 forget people ≈ 400 rows vs 48 anchor rows).
    "smfa": {"anchor_repeat": [1, 4, 8], "k": [2.0, 5.0, 10.0, 20.0]},
    "idk": {"lr": [1e-3], "epochs": [5], "anchor_repeat": [1, 4, 8]},
    # Gradient ascent diverges (the loss is unbounded): at lr 1e-3 every GA-family method erased the whole
    # model on the tiny bench; at <= 1e-4 (2 epochs) GA changed nothing. The grids span the decade between
    # (measured: GA Difference leaks 78 % at 5e-4 and erases everything at 1e-3 — a cliff, not a slope).
    "ga": {"lr": [1e-4, 2e-4, 5e-4, 1e-3], "epochs": [2]},
    "ga_diff": {"lr": [1e-4, 2e-4, 5e-4, 7e-4, 1e-3], "epochs": [5]},
    "kl_min": {"lr": [1e-4, 2e-4, 5e-4, 1e-3], "epochs": [5]},
    "npo": {"lr": [2e-4, 5e-4, 1e-3], "beta": [0.1]},
    "mmunlearner": {"lr": [1e-4, 2e-4, 5e-4, 1e-3], "threshold": [1.0]},
    "ties": {"density": [0.5, 0.8], "forget_weight": [1.0, 2.0]},
}


LEAK_TARGET = 0.10


def leak_keep(o: Any, v: Any) -> tuple[float, float]:
    def ratio(a: float | None, b: float | None) -> float:
        return 0.0 if a is None or not b else min(1.0, a / b)

    leak = ((o.forget_leak_image or 0.0) + (o.forget_leak_text or 0.0)) / 2
    keep = (ratio(o.retain_memory, v.retain_memory) + ratio(o.image_understanding, v.image_understanding)
            + ratio(o.general_vqa, v.general_vqa) + ratio(o.meaningful, v.meaningful)) / 4
    return leak, keep


def rank_key(row: dict[str, Any]) -> tuple[int, float]:
    """Sort key: eligible (leak ≤ target) first, by keep; then the rest by leak."""
    if row["leak"] <= LEAK_TARGET:
        return (0, -row["keep"])
    return (1, row["leak"] - 1e-3 * row["keep"])


def _row(params: dict[str, Any], o: Any, v: Any) -> dict[str, Any]:
    leak, keep = leak_keep(o, v)
    return {"params": params, "leak": leak, "keep": keep, "overall": o.__dict__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", required=True)
    p.add_argument("--model", required=True, help="vanilla run")
    p.add_argument("--out", required=True)
    p.add_argument("--methods", default=",".join(GRIDS))
    p.add_argument("--eval-limit", type=int, default=60)
    args = p.parse_args()

    from smfa.eval.pipeline import EvalConfig, evaluate
    from smfa.eval.schema import load_metrics
    from smfa.sweep import SweepConfig, sculpt_sweep
    from smfa.unlearn import UnlearnConfig, unlearn

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = out / "vanilla-val"
    if not (ref / "metrics.json").is_file():
        evaluate(EvalConfig(bench=args.bench, model=args.model, out=str(ref), forget="val", limit=args.eval_limit,
                            overwrite=True, progress=False))
    v = load_metrics(ref).overall
    results: dict[str, list[dict[str, Any]]] = {}
    for method in args.methods.split(","):
        grid = GRIDS[method]
        rows: list[dict[str, Any]] = []
        if method == "smfa":
            for repeat in grid["anchor_repeat"]:
                run = out / f"smfa-anchor_repeat={repeat}"
                if not (run / "eval" / "metrics.json").is_file():
                    unlearn(UnlearnConfig(bench=args.bench, model=args.model, out=str(run), method="smfa", forget="val",
                                          params={"anchor_repeat": repeat}, eval_limit=args.eval_limit,
                                          overwrite=True, progress=False))
                sweep = run / "sweep-both"
                if not all((sweep / f"k={k:g}" / "metrics.json").is_file() for k in grid["k"]):
                    sweep = sculpt_sweep(SweepConfig(run=str(run), ks=tuple(grid["k"]), limit=args.eval_limit,
                                                     overwrite=True, progress=False))
                for k in grid["k"]:
                    rows.append(_row({"anchor_repeat": repeat, "k": k}, load_metrics(sweep / f"k={k:g}").overall, v))
        else:
            keys = list(grid)
            for values in itertools.product(*(grid[k] for k in keys)):
                params = dict(zip(keys, values))
                tag = "-".join(f"{k}={v}" for k, v in params.items())
                run = out / f"{method}-{tag}"
                if not (run / "eval" / "metrics.json").is_file():
                    unlearn(UnlearnConfig(bench=args.bench, model=args.model, out=str(run), method=method,
                                          forget="val", params=params, eval_limit=args.eval_limit, overwrite=True,
                                          progress=False))
                rows.append(_row(params, load_metrics(run / "eval").overall, v))
        rows.sort(key=rank_key)
        results[method] = rows
        print(f"{method}: best {rows[0]['params']} leak {rows[0]['leak']:.3f} keep {rows[0]['keep']:.3f}", flush=True)
        (out / "tuning.json").write_text(json.dumps(results, indent=2))
    lines = ["# Hyper-parameter search on the validation forget split", "",
             "Produced by `scripts/tune_on_validation.py` on the tiny bench (seed 0): every candidate unlearns "
             "`--forget val` (people disjoint from the test forget sets) and is scored on validation people "
             "only. leak = mean(leak photo, leak name); keep = mean(retain memory, understanding, general VQA, "
             "meaningful as ratios to the vanilla's, capped at 1). Chosen (first row of each table): the best keep "
             f"among candidates with leak ≤ {100 * LEAK_TARGET:.0f} %, else the lowest leak.", ""]
    for method, rows in results.items():
        lines += [f"## {method}", "", "| params | leak | keep | leak photo | leak name | retain mem | understanding | gen. VQA | meaningful |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            o = r["overall"]

            def f(x: Any) -> str:
                return "–" if x is None else f"{100 * x:.1f}"

            lines.append(f"| {r['params']} | {f(r['leak'])} | {f(r['keep'])} | {f(o['forget_leak_image'])} | {f(o['forget_leak_text'])} | "
                         f"{f(o['retain_memory'])} | {f(o['image_understanding'])} | {f(o['general_vqa'])} | "
                         f"{o['meaningful']:.2f} |")
        lines.append("")
    (out / "tuning.md").write_text("\n".join(lines))
    print(f"wrote {out / 'tuning.md'}")


if __name__ == "__main__":
    main()
