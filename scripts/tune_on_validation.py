"""The documented hyper-parameter search behind the shipped tiny-preset defaults
(``src/smfa/configs/methods/*.yaml``). Every candidate unlearns the **validation** forget split
(``--forget val``: people disjoint from forget_5/10/15) and is scored on validation people only — the
test forget sets are never looked at. Writes ``tuning.md`` and a JSON of every candidate into ``--out`` (the
bench v2 search: ``docs/archive/tuning.md``).

Selection rule (all from the validation evaluation):
    leak = mean(forget leak by photo, forget leak by name)
    keep = mean(retain memory, understanding, general VQA, meaningful; each as a ratio to the vanilla's, capped at 1)
    among candidates with leak <= 10 %, the one with the highest keep; if none forgets that well, the lowest leak.
A weighted mean of the two (the first version of this script) picked candidates that refuse almost everyone
(retain memory 16 % of the vanilla's scored 0.83): a privacy target first, then the least damage.

``--target visual`` (MMUnlearner's setting: forget the photo link only) searches the visual-setting grids with
leak = forget leak by photo and keep = mean(forget people's name memory, retain memory, understanding,
general VQA, meaningful; ratios to the vanilla's, capped at 1); the chosen values are shipped as
``src/smfa/configs/methods/visual/<method>.yaml`` (layered over the ``all`` defaults when --target visual).

Usage: python scripts/tune_on_validation.py --bench B --model VANILLA --out DIR [--methods ...] [--target visual]
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
    # the forget set in the MFA's data (18 forget people ≈ 900 rows on bench v2 vs 48 anchor rows).
    "smfa": {"anchor_repeat": [4, 8, 16], "k": [5.0, 10.0, 20.0, 40.0]},
    "idk": {"lr": [1e-3], "epochs": [5], "anchor_repeat": [4, 8, 16]},
    # Gradient ascent diverges (the loss is unbounded). On bench v1 every GA-family method erased the whole
    # model at lr 1e-3 and changed nothing at <= 1e-4 (2 epochs). On bench v2 the v1 defaults (1e-3) of the
    # methods with a retain or reference term erased everything (docs/archive/results.md), so their grids reach a
    # decade lower; plain GA at 2 epochs changed nothing up to 5e-4 on v2 validation (leak 99 %) and still
    # leaked 25 / 44 % at 1e-3, so its grid reaches up.
    "ga": {"lr": [2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3], "epochs": [2]},
    "ga_diff": {"lr": [2e-5, 5e-5, 1e-4, 2e-4, 5e-4], "epochs": [5]},
    "kl_min": {"lr": [5e-5, 1e-4, 2e-4, 5e-4], "epochs": [5]},
    "npo": {"lr": [5e-5, 1e-4, 2e-4, 5e-4], "beta": [0.1]},
    "mmunlearner": {"lr": [2e-5, 5e-5, 1e-4, 1.4e-4, 2e-4], "threshold": [1.0]},
    # TIES merges SMFA's MFA and RA; at forget_weight 2 (the v1 choice) it erased all retain memory on v2
    # (docs/archive/results.md), at 1 it leaked 31 % on validation.
    "ties": {"density": [0.5, 0.8], "forget_weight": [0.5, 1.0, 1.5]},
}

# The visual setting (photo link only): the shipped `all` MFA refuses retain people's photos too (retain
# image memory 96 -> 36 % on the test split) while its photo leak (1 %) is far below the target, so the grid
# weakens the MFA (epochs) and weighs the anchor (which there also holds the forget people's name questions)
# more; k is re-sculpted per run. Other methods' visual grids: their `all` grids.
GRIDS_VISUAL: dict[str, dict[str, list[Any]]] = {
    "smfa": {"anchor_repeat": [8, 24], "epochs": [2, 5], "k": [1.0, 5.0, 20.0]},
    # IDK tuning = SMFA's MFA unsculpted: its candidates are the SMFA grid's MFAs merged with mode none
    # (no retraining; `smfa compare` shares the MFA the same way).
    "idk": {"anchor_repeat": [8, 24], "epochs": [2, 5]},
}

LEAK_TARGET = 0.10


def grid_for(method: str, target: str = "all") -> dict[str, list[Any]]:
    """The search grid of ``method``: its visual-setting grid with ``--target visual`` if it has one, else
    its ``all`` grid. A method without a grid is an error naming the methods that have one."""
    if target == "visual" and method in GRIDS_VISUAL:
        return GRIDS_VISUAL[method]
    if method in GRIDS:
        return GRIDS[method]
    raise SystemExit(f"no search grid for method {method!r}; methods with one: {', '.join(sorted(GRIDS))} "
                     "(add it to GRIDS in scripts/tune_on_validation.py)")


def _ratio(a: float | None, b: float | None) -> float:
    return 0.0 if a is None or not b else min(1.0, a / b)


def leak_keep(o: Any, v: Any, target: str = "all") -> tuple[float, float]:
    parts = [_ratio(o.retain_memory, v.retain_memory), _ratio(o.image_understanding, v.image_understanding),
             _ratio(o.general_vqa, v.general_vqa), _ratio(o.meaningful, v.meaningful)]
    if target == "visual":  # the forget people's name questions must stay answered
        return o.forget_leak_image or 0.0, (sum(parts) + _ratio(o.forget_text_memory, v.forget_text_memory)) / 5
    return ((o.forget_leak_image or 0.0) + (o.forget_leak_text or 0.0)) / 2, sum(parts) / 4


def rank_key(row: dict[str, Any]) -> tuple[int, float]:
    """Sort key: eligible (leak ≤ target) first, by keep; then the rest by leak."""
    if row["leak"] <= LEAK_TARGET:
        return (0, -row["keep"])
    return (1, row["leak"] - 1e-3 * row["keep"])


def _smfa_run(out: Path, mfa_params: dict[str, Any]) -> Path:
    """The SMFA validation run of one MFA setting (IDK's visual candidates read the same runs)."""
    return out / ("smfa-" + "-".join(f"{key}={value}" for key, value in mfa_params.items()))


def _row(params: dict[str, Any], o: Any, v: Any, target: str = "all") -> dict[str, Any]:
    leak, keep = leak_keep(o, v, target)
    return {"params": params, "leak": leak, "keep": keep, "overall": o.__dict__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", required=True)
    p.add_argument("--model", required=True, help="vanilla run")
    p.add_argument("--out", required=True)
    p.add_argument("--methods", help="comma-separated (default: every method of the target's grids)")
    p.add_argument("--eval-limit", type=int, default=60)
    p.add_argument("--target", choices=["all", "visual"], default="all")
    args = p.parse_args()
    methods = args.methods.split(",") if args.methods else list(GRIDS_VISUAL if args.target == "visual" else GRIDS)
    method_grids = {method: grid_for(method, args.target) for method in methods}  # before any evaluation

    from smfa.eval.pipeline import EvalConfig, evaluate
    from smfa.eval.schema import load_metrics
    from smfa.stages.sweep import SweepConfig, sculpt_sweep
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = out / "vanilla-val"
    if not (ref / "metrics.json").is_file():
        evaluate(EvalConfig(bench=args.bench, model=args.model, out=str(ref), forget="val", limit=args.eval_limit,
                            target=args.target, overwrite=True, progress=False))
    v = load_metrics(ref).overall
    results: dict[str, list[dict[str, Any]]] = {}
    for method, grid in method_grids.items():
        rows: list[dict[str, Any]] = []
        if method == "smfa":
            mfa_keys = [key for key in grid if key != "k"]
            for values in itertools.product(*(grid[key] for key in mfa_keys)):
                mfa_params = dict(zip(mfa_keys, values))
                run = _smfa_run(out, mfa_params)
                if not (run / "eval" / "metrics.json").is_file():
                    unlearn(UnlearnConfig(bench=args.bench, model=args.model, out=str(run), method="smfa", forget="val",
                                          target=args.target, params=mfa_params, eval_limit=args.eval_limit,
                                          overwrite=True, progress=False, leak_target=None))
                sweep = run / "sweep-both"
                if not all((sweep / f"k={k:g}" / "metrics.json").is_file() for k in grid["k"]):
                    sweep = sculpt_sweep(SweepConfig(run=str(run), ks=tuple(grid["k"]), limit=args.eval_limit,
                                                     overwrite=True, progress=False))
                for k in grid["k"]:
                    rows.append(_row({**mfa_params, "k": k}, load_metrics(sweep / f"k={k:g}").overall, v, args.target))
        elif method == "idk" and args.target == "visual":
            for values in itertools.product(*(grid[key] for key in grid)):
                mfa_params = dict(zip(grid, values))
                run = _smfa_run(out, mfa_params)
                if not (run / "eval" / "metrics.json").is_file():
                    raise SystemExit(f"IDK's visual candidates are SMFA's MFAs: run --methods smfa first ({run} missing)")
                sweep = run / "sweep-none"
                if not (sweep / "k=0" / "metrics.json").is_file():
                    sweep = sculpt_sweep(SweepConfig(run=str(run), ks=(0.0,), mode="none", limit=args.eval_limit,
                                                     overwrite=True, progress=False))
                rows.append(_row(mfa_params, load_metrics(sweep / "k=0").overall, v, args.target))
        else:
            keys = list(grid)
            for values in itertools.product(*(grid[k] for k in keys)):
                params = dict(zip(keys, values))
                tag = "-".join(f"{k}={v}" for k, v in params.items())
                run = out / f"{method}-{tag}"
                if not (run / "eval" / "metrics.json").is_file():
                    unlearn(UnlearnConfig(bench=args.bench, model=args.model, out=str(run), method=method,
                                          forget="val", target=args.target, params=params, eval_limit=args.eval_limit,
                                          overwrite=True, progress=False, leak_target=None))
                rows.append(_row(params, load_metrics(run / "eval").overall, v, args.target))
        rows.sort(key=rank_key)
        results[method] = rows
        print(f"{method}: best {rows[0]['params']} leak {rows[0]['leak']:.3f} keep {rows[0]['keep']:.3f}", flush=True)
        (out / "tuning.json").write_text(json.dumps(results, indent=2))
    if args.target == "visual":
        title, rule = ("# Hyper-parameter search on the validation forget split: visual-only setting",
                       "leak = leak photo; keep = mean(the forget people's name memory, retain memory, "
                       "understanding, general VQA, meaningful as ratios to the vanilla's, capped at 1)")
        name_col = "name memory kept"
    else:
        title, rule = ("# Hyper-parameter search on the validation forget split",
                       "leak = mean(leak photo, leak name); keep = mean(retain memory, understanding, general VQA, "
                       "meaningful as ratios to the vanilla's, capped at 1)")
        name_col = "leak name"
    lines = [title, "",
             f"Produced by `scripts/tune_on_validation.py --target {args.target}` on the tiny bench (seed 0): every "
             "candidate unlearns `--forget val` (people disjoint from the test forget sets) and is scored on "
             f"validation people only. {rule}. Chosen (first row of each table): the best keep "
             f"among candidates with leak ≤ {100 * LEAK_TARGET:.0f} %, else the lowest leak.", ""]
    for method, rows in results.items():
        lines += [f"## {method}", "", f"| params | leak | keep | leak photo | {name_col} | retain mem | understanding | gen. VQA | meaningful |",
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
