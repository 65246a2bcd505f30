"""``smfa bench build`` and ``smfa bench show``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smfa.bench.config import PRESETS


def register(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="build or inspect the S-MLLMUn benchmark",
        description="The S-MLLMUn Bench: fictitious people (portraits, private facts, fundus scans), shape "
        "pictures for general VQA, question rows and forget/retain splits, generated deterministically from a seed.",
    )
    actions = bench.add_subparsers(dest="bench_action", metavar="ACTION")
    bench.set_defaults(func=lambda args: _usage(bench))

    build = actions.add_parser(
        "build",
        help="generate a bench directory",
        description="Generate a bench directory (bench.json, people.jsonl, questions.jsonl, splits.json, images/). "
        "The same preset, seed and options give byte-identical files.",
    )
    build.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                       help="tiny (default): 200 people at 32 px for the built-in tiny model on CPU; "
                       "full: 1,000 people at 336 px for real MLLMs")
    build.add_argument("--seed", type=int, default=0, help="seed of every sampled value (default: 0)")
    build.add_argument("--out", type=Path, required=True, help="output directory (must not exist unless --overwrite)")
    build.add_argument("--anchor-size", type=int, default=None,
                       help="size of the few-shot retain anchor D_r^few (default: 48 tiny, 100 full)")
    build.add_argument("--image-size", type=int, default=None, help="image side in px (default: 32 tiny, 336 full)")
    build.add_argument("--n-people", type=int, default=None, help="number of people (default: 200 tiny, 1000 full; at least 40)")
    build.add_argument("--workers", type=int, default=None,
                       help="rendering processes (default: 1 for small builds, else up to 4); never changes the output")
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=_build)

    show = actions.add_parser(
        "show",
        help="print a bench's counts and draw a contact sheet of sample images",
        description="Print the counts of a bench directory as tables and write a contact-sheet PNG of a few "
        "people (every portrait variant and fundus scan, with labels) and shape pictures.",
    )
    show.add_argument("bench_dir", metavar="DIR", type=Path, help="a directory written by `smfa bench build`")
    show.add_argument("--out", type=Path, default=Path("contact_sheet.png"),
                      help="PNG to write, replaced if it exists; never inside DIR (default: ./contact_sheet.png)")
    show.add_argument("--people", type=int, default=6, help="how many people to show (default: 6)")
    show.set_defaults(func=_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _build(args: argparse.Namespace) -> int:
    from smfa.bench.build import build_bench
    from smfa.bench.config import preset_config
    from smfa.bench.show import format_counts
    from smfa.errors import ConfigError

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {args.workers})")
    cfg = preset_config(args.preset, seed=args.seed, anchor_size=args.anchor_size, image_size=args.image_size, n_people=args.n_people)
    start = time.perf_counter()
    meta = build_bench(cfg, args.out, overwrite=args.overwrite, workers=args.workers, progress=not args.quiet)
    print(format_counts(meta))
    print(f"\nwrote {args.out.resolve()} in {time.perf_counter() - start:.1f}s  checksum {meta['checksum']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from smfa.bench.load import Bench
    from smfa.bench.show import contact_sheet, format_counts
    from smfa.errors import ConfigError

    if args.people < 1:
        raise ConfigError(f"--people must be >= 1 (got {args.people})")
    bench = Bench.load(args.bench_dir)
    out = contact_sheet(bench, args.out, n_people=args.people)
    print(format_counts(bench.meta))
    print(f"\ncontact sheet: {out}")
    return 0
