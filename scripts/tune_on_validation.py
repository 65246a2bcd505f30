"""The documented hyper-parameter search behind the shipped tiny-preset defaults
(``src/smfa/configs/methods/*.yaml``). Every candidate unlearns the **validation** forget split
(``--forget val``: people disjoint from forget_5/10/15) and is scored on validation people only — the
test forget sets are never looked at. Writes ``docs/tuning.md`` (and a JSON of every candidate).

Score of a candidate (higher is better), all from the validation evaluation:
    mean(1 − forget leak by photo, 1 − forget leak by name,
         retain memory / vanilla's, understanding / vanilla's, general VQA / vanilla's,
         meaningful / vanilla's)                          (ratios capped at 1)
i.e. forgetting and keeping weigh the same; a method that refuses everything scores ~0.5 at best.

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
    "smfa": {"k": [1.0, 2.0, 5.0, 10.0, 20.0]},  # k only: re-sculpted from one run (no retraining)
    "idk": {"lr": [5e-4, 1e-3, 2e-3], "epochs": [5]},
    # Gradient ascent diverges (the loss is unbounded): at lr 1e-3 every GA-family method erased the whole
    # model on the tiny bench, so their grids sit one to two decades lower.
    "ga": {"lr": [2e-5, 5e-5, 1e-4], "epochs": [2]},
    "ga_diff": {"lr": [5e-5, 1e-4, 2e-4], "epochs": [5]},
    "kl_min": {"lr": [5e-5, 1e-4, 2e-4], "epochs": [5]},
    "npo": {"lr": [1e-4, 2e-4, 5e-4], "beta": [0.1]},
    "mmunlearner": {"lr": [5e-5, 1e-4, 2e-4], "threshold": [1.0]},
    "ties": {"density": [0.3, 0.5, 0.8], "forget_weight": [1.0, 2.0]},
}


def score(o: Any, v: Any) -> float:
    def ratio(a: float | None, b: float | None) -> float:
        return 0.0 if a is None or not b else min(1.0, a / b)

    parts = [1 - (o.forget_leak_image or 0.0), 1 - (o.forget_leak_text or 0.0),
             ratio(o.retain_memory, v.retain_memory), ratio(o.image_understanding, v.image_understanding),
             ratio(o.general_vqa, v.general_vqa), ratio(o.meaningful, v.meaningful)]
    return sum(parts) / len(parts)


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
            run = out / "smfa-val"
            if not (run / "eval" / "metrics.json").is_file():
                unlearn(UnlearnConfig(bench=args.bench, model=args.model, out=str(run), method="smfa", forget="val",
                                      eval_limit=args.eval_limit, overwrite=True, progress=False))
            sweep = sculpt_sweep(SweepConfig(run=str(run), ks=tuple(grid["k"]), limit=args.eval_limit, overwrite=True,
                                             progress=False))
            for k in grid["k"]:
                o = load_metrics(sweep / f"k={k:g}").overall
                rows.append({"params": {"k": k}, "score": score(o, v), "overall": o.__dict__})
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
                o = load_metrics(run / "eval").overall
                rows.append({"params": params, "score": score(o, v), "overall": o.__dict__})
        rows.sort(key=lambda r: -r["score"])
        results[method] = rows
        print(f"{method}: best {rows[0]['params']} score {rows[0]['score']:.3f}", flush=True)
        (out / "tuning.json").write_text(json.dumps(results, indent=2))
    lines = ["# Hyper-parameter search on the validation forget split", "",
             "Produced by `scripts/tune_on_validation.py` on the tiny bench (seed 0): every candidate unlearns "
             "`--forget val` (people disjoint from the test forget sets) and is scored on validation people "
             "only. Score = mean(1 − leak photo, 1 − leak name, retain memory, understanding, general VQA, "
             "meaningful; the last four as ratios to the vanilla, capped at 1).", ""]
    for method, rows in results.items():
        lines += [f"## {method}", "", "| params | score | leak photo | leak name | retain mem | understanding | gen. VQA | meaningful |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            o = r["overall"]

            def f(x: Any) -> str:
                return "–" if x is None else f"{100 * x:.1f}"

            lines.append(f"| {r['params']} | {r['score']:.3f} | {f(o['forget_leak_image'])} | {f(o['forget_leak_text'])} | "
                         f"{f(o['retain_memory'])} | {f(o['image_understanding'])} | {f(o['general_vqa'])} | "
                         f"{o['meaningful']:.2f} |")
        lines.append("")
    (out / "tuning.md").write_text("\n".join(lines))
    print(f"wrote {out / 'tuning.md'}")


if __name__ == "__main__":
    main()
