"""``smfa report RUN [RUN ...]``: compare evaluation runs (the paper's main table and plots)."""

from __future__ import annotations

import argparse
from pathlib import Path

from smfa.report import compare_runs, default_labels
from smfa.rundir import atomic_run_dir, write_manifest


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="compare evaluated runs: markdown table in the paper's layout, bars and a trade-off plot",
        description="Read metrics.json from each evaluation run directory and write compare.md (the paper's main "
        "table), methods.png (grouped bars), tradeoff.png (forget memory vs image understanding) and selectivity.png "
        "(forget leak vs retain memory; labels VARIANT@POINT draw one curve per variant) into --out.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="evaluation run directories (with metrics.json)")
    parser.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                        help="one label per run, in order (default: the directory names)")
    parser.add_argument("--aggregate", action="store_true",
                        help="runs that share a label (e.g. one per bench seed) are summarised as mean ± standard "
                             "deviation above the per-run table")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory for the report")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from smfa.eval.schema import load_metrics

    metrics = [load_metrics(run) for run in args.runs]  # fail on a bad run before creating --out
    labels = args.labels if args.labels is not None else default_labels(args.runs)
    with atomic_run_dir(args.out, overwrite=args.overwrite) as tmp:
        paths = compare_runs(metrics, labels, tmp, aggregate=args.aggregate)
        write_manifest(tmp, "report", {"runs": [str(Path(r).resolve()) for r in args.runs], "labels": list(labels),
                                       "aggregate": args.aggregate})
    for path in paths.values():
        print(Path(args.out) / path.name)
    return 0
