"""The ``smfa`` command: thin argument parsing; each module of :mod:`smfa.cli` registers its subcommands
with ``register(subparsers)`` and hands the options to a stage (:mod:`smfa.stages`). User errors print one
line and exit with status 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from smfa import __version__
from smfa.errors import SmfaError

# Each module defines ``register(subparsers)`` adding its subcommand(s) (:func:`smfa.cli.options.command`).
_COMMAND_MODULES = (
    "smfa.cli.bench",
    "smfa.cli.commands",
    "smfa.cli.forget",
    "smfa.cli.audit",
    "smfa.cli.report",
    "smfa.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smfa",
        description="Selective, benign unlearning for multimodal LLMs: build the S-MLLMUn bench, fine-tune a "
        "vanilla model, unlearn with SMFA or a baseline, evaluate and compare.",
    )
    parser.add_argument("--version", action="version", version=f"smfa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except SmfaError as exc:
        print(f"smfa {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)
    except KeyboardInterrupt:
        print(f"smfa {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
