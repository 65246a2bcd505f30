"""``smfa demo``: the whole pipeline on the built-in tiny model, offline (:mod:`smfa.stages.demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from smfa.cli.options import command
from smfa.models.placement import add_placement_options


def _demo(args: argparse.Namespace) -> int:
    """the whole pipeline on the built-in tiny model, offline (bench → vanilla + oracle → SMFA/IDK → report)

    Build the tiny bench, take the tiny vanilla model and its retain-only oracle (shipped for seed 0; otherwise
    trained and cached under $SMFA_CACHE_DIR or ~/.cache/smfa, so a second demo skips it), unlearn forget 10 %%
    with SMFA (its shipped selective recipe and the paper's) and IDK tuning, evaluate, and write report.md with
    plots."""
    from smfa.stages.demo import QUICK, DemoConfig, run_demo

    cfg = DemoConfig(out=args.out, seed=args.seed, overwrite=args.overwrite, **(QUICK if args.quick else {}),
                     **{k: v for k in ("device", "dtype") if (v := getattr(args, k, None)) is not None})
    if args.quick:
        print("--quick: a smoke run of every stage with a barely trained vanilla; its numbers mean nothing", flush=True)
    if args.eval_limit:
        cfg.eval_limit = args.eval_limit
    run_demo(cfg)
    return 0


def register(sub: Any) -> None:
    p = command(sub, "demo", _demo)
    p.add_argument("--out", default="smfa-demo", help="demo directory (default ./smfa-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-limit", type=int, dest="eval_limit", help="questions per evaluation set (default 100)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo directory")
    add_placement_options(p)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 vanilla steps, 10 steps per method, 10 questions per set (81 s cold on 2 CPU cores)")
