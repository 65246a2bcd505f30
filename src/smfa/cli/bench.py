"""``smfa bench build``, ``smfa bench show`` and ``smfa bench import``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from smfa.bench.config import PRESETS, BenchConfig
from smfa.cli.options import command


def register(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="build or inspect the S-MLLMUn benchmark",
        description="The S-MLLMUn Bench: fictitious people (portraits, private facts, fundus scans), shape "
        "pictures for general VQA, question rows and forget/retain splits, generated deterministically from a seed.",
    )
    actions = bench.add_subparsers(dest="bench_action", metavar="ACTION")
    bench.set_defaults(func=lambda args: _usage(bench))

    build = command(actions, "build", _build)
    build.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                       help="tiny (default): 200 people at 32 px for the built-in tiny model on CPU; "
                       "full: 1,000 people at 336 px for real MLLMs")
    build.add_argument("--seed", type=int, default=0, help="seed of every sampled value (default: 0)")
    build.add_argument("--out", type=Path, required=True, help="output directory (must not exist unless --overwrite)")
    build.add_argument("--anchor-size", type=int, default=None,
                       help="size of the few-shot retain anchor D_r^few (default: 48 tiny, 100 full)")
    build.add_argument("--image-size", type=int, default=None, help="image side in px (default: 32 tiny, 336 full)")
    build.add_argument("--n-people", type=int, default=None, help="number of people (default: 200 tiny, 1000 full; at least 40)")
    build.add_argument("--reference-share", type=float, default=None,
                       help="share of the retain people set apart as the reference pool, whose questions (never labels) "
                       "a --reference budget may use; retain metrics use the rest (default 0.6)")
    build.add_argument("--shape-images", type=int, default=None,
                       help="general-VQA shape pictures, 20%% of them held out for evaluation (default: 500 tiny, 2000 full)")
    build.add_argument("--variants", type=int, default=None,
                       help="portrait variants per person, the last one held out as the unseen photo (default: 3 tiny, "
                       "4 full)")
    build.add_argument("--multi-fact", type=int, default=None, metavar="N",
                       help="N training questions per person asking two private facts at once; three pairs of facts "
                       "are never asked together in training and form the multi_fact evaluation sets (default: 0, none)")
    build.add_argument("--neighbour-pairs", type=float, default=None, metavar="SHARE",
                       help="bench v3: give SHARE of forget_10's and of forget_val's people a planted name twin and as many a "
                       "look twin (5 of 7 visible features) in their retain evaluation pool, for the neighbour sets "
                       "(default: the preset's — tiny 0.55, 10 + 10 twins; full 0; 0 = none, bench v2)")
    build.add_argument("--workers", type=int, default=None,
                       help="rendering processes (default: 1 for small builds, else up to 4); never changes the output")
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    build.add_argument("--quiet", action="store_true", help="no progress bar")

    show = command(actions, "show", _show)
    show.add_argument("bench_dir", metavar="DIR", type=Path, help="a directory written by `smfa bench build`")
    show.add_argument("--out", type=Path, default=Path("contact_sheet.png"),
                      help="PNG to write, replaced if it exists; never inside DIR (default: ./contact_sheet.png)")
    show.add_argument("--people", type=int, default=6, help="how many people to show (default: 6)")

    imp = command(actions, "import", _import)
    imp.add_argument("format", choices=("mllmu", "clear", "jsonl"),
                     help="mllmu: MLLMU-Bench's parquet subsets; clear: CLEAR's; jsonl: your rows (README 'Your own data')")
    imp.add_argument("input", type=Path, help="the dataset directory (mllmu, clear) or the rows file (jsonl)")
    imp.add_argument("--out", type=Path, required=True, help="bench directory to write (must not exist unless --overwrite)")
    imp.add_argument("--images", type=Path, default=None, help="jsonl: the folder that image paths are relative to")
    imp.add_argument("--forget", default=None,
                     help="jsonl: the people to forget, a file of person ids (one per line) or a comma list; stored as "
                     "split forget_user (later: --forget user)")
    imp.add_argument("--anchor-size", type=int, default=48, help="questions in the few-shot retain anchor (default 48)")
    imp.add_argument("--reference-share", type=float, default=BenchConfig.reference_share,
                     help="share of the retain people set apart as the reference pool, whose questions (never labels) a "
                     "--reference budget may use; retain metrics use the rest (default: the built-in bench's, "
                     "%(default)g; 0 keeps every retain person in the retain metrics)")
    imp.add_argument("--image-size", type=int, default=None,
                     help="resize every image to N x N px (default: keep; the built-in tiny model resizes to 32 px itself)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the reference-pool and anchor draws (default 0)")
    imp.add_argument("--strict", action="store_true",
                     help="mllmu, clear: stop at the first row whose short fact (the private value inside its answer) "
                     "cannot be derived, naming it (default: skip such rows, count them in bench.json and print one "
                     "summary line); jsonl always refuses a memory row without its 'fact'")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _build(args: argparse.Namespace) -> int:
    """generate a bench directory

    Generate a bench directory (bench.json, people.jsonl, questions.jsonl, splits.json, images/). The same
    preset, seed and options give byte-identical files."""
    from smfa.bench.build import build_bench
    from smfa.bench.config import preset_config
    from smfa.bench.show import format_counts
    from smfa.errors import ConfigError

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {args.workers})")
    cfg = preset_config(args.preset, seed=args.seed, anchor_size=args.anchor_size, image_size=args.image_size, n_people=args.n_people,
                        reference_share=args.reference_share, n_shape_images=args.shape_images, n_variants=args.variants,
                        multi_fact_phrasings=args.multi_fact, neighbour_pairs=args.neighbour_pairs)
    start = time.perf_counter()
    meta = build_bench(cfg, args.out, overwrite=args.overwrite, workers=args.workers, progress=not args.quiet)
    print(format_counts(meta))
    for group, n in (meta.get("neighbour_pairs_short") or {}).items():
        print(f"warning: neighbour_pairs={cfg.neighbour_pairs:g} asks {n['asked']} twins for {group}, but its pool holds "
              f"{n['pool']} people: planted {n['planted']} (raise --n-people for more, or --neighbour-pairs 0 for none)",
              file=sys.stderr)
    print(f"\nwrote {args.out.resolve()} in {time.perf_counter() - start:.1f}s  checksum {meta['checksum']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    """print a bench's counts and draw a contact sheet of sample images

    Print the counts of a bench directory as tables and write a contact-sheet PNG of a few people (every
    portrait variant and fundus scan, with labels) and shape pictures."""
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


def _import(args: argparse.Namespace) -> int:
    """import MLLMU-Bench, CLEAR or your own JSONL rows as a bench directory

    Write a bench directory (docs/data-format.md) from another benchmark's parquet files or from your own rows;
    every later stage (finetune, unlearn, eval, compare, report) then runs on it unchanged."""
    import sys

    from smfa.bench.importers import ImportOptions
    from smfa.bench.importers.common import skipped_summary
    from smfa.errors import ConfigError

    opts = ImportOptions(out=args.out, seed=args.seed, anchor_size=args.anchor_size, reference_share=args.reference_share,
                         image_size=args.image_size, overwrite=args.overwrite, progress=not args.quiet, strict=args.strict)
    opts.validate()
    if args.format != "jsonl" and (args.images or args.forget):
        raise ConfigError("--images and --forget are for `smfa bench import jsonl`; mllmu and clear bring their own splits")
    start = time.perf_counter()
    if args.format == "mllmu":
        from smfa.bench.importers.mllmu import import_mllmu

        meta = import_mllmu(args.input, opts)
    elif args.format == "clear":
        from smfa.bench.importers.clear import import_clear

        meta = import_clear(args.input, opts)
    else:
        from smfa.bench.importers.jsonl import import_jsonl

        meta = import_jsonl(args.input, opts, images=args.images, forget=args.forget)
    counts = meta["counts"]
    splits = ", ".join(f"{k} ({v})" for k, v in counts["people"].items() if k.startswith("forget_"))
    print(f"people: {counts['people']}\nquestions (kind/format): {counts['questions']}\nforget splits: {splits or 'none'}")
    print(f"\nwrote {args.out.resolve()} in {time.perf_counter() - start:.1f}s  checksum {meta['checksum']}")
    summary = skipped_summary(meta)
    if summary:
        print(summary, file=sys.stderr)
    return 0
