"""Retrain a shipped tiny vanilla from scratch and package it (smfa.pretrained).

    python scripts/train_shipped_vanilla.py                # tiny-seed0 → src/smfa/pretrained/tiny-seed0
    python scripts/train_shipped_vanilla.py micro-seed0    # → tests/fixtures/pretrained/micro-seed0
    python scripts/train_shipped_vanilla.py tiny-seed0-oracle10   # the demo's oracle (retain people of forget 10)
    python scripts/train_shipped_vanilla.py micro-seed0-oracle10  # → tests/fixtures/pretrained (the tests' oracle)
    python scripts/train_shipped_vanilla.py tiny-seed0 --from-run RUN --bench BENCH   # package a finished run

Builds the recipe's bench in a temporary directory, trains with the recipe (never from a shipped model),
evaluates nothing, and writes ``model/`` + ``pretrained.json`` atomically. Training pins torch to one
thread so that a rerun on the same CPU gives the same weights.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from smfa.bench import Bench, build_bench, preset_config
from smfa.pretrained import RECIPES, package_run, write_pretrained
from smfa.stages.finetune import FinetuneConfig, finetune

ROOT = Path(__file__).resolve().parents[1]
DEST = {"tiny-seed0": ROOT / "src/smfa/pretrained", "tiny-seed0-oracle10": ROOT / "src/smfa/pretrained",
        "micro-seed0": ROOT / "tests/fixtures/pretrained", "micro-seed0-oracle10": ROOT / "tests/fixtures/pretrained"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="tiny-seed0", choices=sorted(RECIPES))
    parser.add_argument("--from-run", help="package this finished finetune run instead of training (its recipe is checked)")
    parser.add_argument("--bench", help="with --from-run: the recipe's bench, already built")
    args = parser.parse_args()
    recipe = RECIPES[args.name]
    if args.from_run:
        cfg = replace(FinetuneConfig(**recipe["finetune"]), bench=args.bench, out=args.from_run, pretrained=False)
        dest = package_run(Path(args.from_run), Bench.load(args.bench), cfg, DEST[args.name] / args.name)
        print(f"wrote {dest}")
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bench_dir = Path(tmp) / "bench"
        bench_cfg = dict(recipe["bench"])
        build_bench(preset_config(bench_cfg.pop("preset"), **bench_cfg), bench_dir, progress=False)
        cfg = replace(FinetuneConfig(**recipe["finetune"]), bench=str(bench_dir), out=str(Path(tmp) / "run"),
                      pretrained=False)
        run = finetune(cfg)
        dest = write_pretrained(run, Bench.load(bench_dir), cfg, DEST[args.name] / args.name)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {dest} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
