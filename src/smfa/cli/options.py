"""What the subcommands share: a subcommand's parser, the options several of them take with the same meaning,
and the call of a stage on its resolved config."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

from smfa.config import resolve_config

# --forget takes a split of the bench or a file of person ids; the bench checks it (smfa.bench.load.Bench.forget_people).
FORGET_HELP = ("5, 10, 15 or val on a built-in bench, an imported bench's split (e.g. 10 or forget_10, user), "
               "or a file of person ids, one per line")


def command(sub: Any, name: str, func: Callable[[argparse.Namespace], int], **fields: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, which runs ``func(args)``. ``func``'s docstring is the command's text:
    its first paragraph the one-line help ``smfa --help`` lists, the rest the description ``smfa NAME --help``
    shows (argparse joins the lines); ``{field}`` in it is filled from ``fields``."""
    summary, _, description = inspect.cleandoc(func.__doc__ or "").partition("\n\n")
    if fields:
        summary, description = summary.format(**fields), description.format(**fields)
    p = sub.add_parser(name, help=summary, description=description)
    p.set_defaults(func=func)
    return p


def run_stage(cls: type, stage: Callable[[Any], Any], config: str | None, over: dict[str, Any], done: str) -> int:
    """Resolve ``cls`` (YAML ``config`` ← ``over``), run ``stage`` on it and print ``done`` with ``{out}``, what
    the stage returned (where it wrote). Returns the exit status, 0."""
    out = stage(resolve_config(cls, config, over))
    print(done.format(out=out))
    return 0


def overrides(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options ``names`` as config overrides (``None``: not given)."""
    return {n: getattr(args, n, None) for n in names}


def bool_pair(p: argparse.ArgumentParser, name: str, help_on: str, help_off: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(f"--{name}", dest=name.replace("-", "_"), action="store_true", default=None, help=help_on)
    g.add_argument(f"--no-{name}", dest=name.replace("-", "_"), action="store_false", help=help_off)


def add_method_params(p: argparse.ArgumentParser) -> None:
    """``--param`` and ``--method-config``: a method's hyper-parameters over its shipped defaults."""
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any method hyper-parameter (repeatable)")
    p.add_argument("--method-config", dest="method_config", help="YAML with the method's hyper-parameters")


def add_key_file(p: argparse.ArgumentParser) -> None:
    """``--key-file``: sign an unlearning run's audit record (:func:`smfa.stages.audit.read_key`)."""
    p.add_argument("--key-file", dest="audit_key_file", metavar="PATH",
                   help="sign the audit record with HMAC-SHA256 under the key in this file (RUN/audit.sig); the key stays "
                        "yours, never copied into the run; check with smfa audit verify RUN --key-file PATH")


def add_new_chain(p: argparse.ArgumentParser) -> None:
    """``--new-chain``: start a new request chain from ``--model`` on purpose (:func:`smfa.stages.forget.read_chain`)."""
    p.add_argument("--new-chain", dest="new_chain", action="store_true", default=None,
                   help="start a new chain of requests from --model even when it is an unlearned model: the people "
                        "of its earlier requests are then neither kept refused nor re-measured (without it, an "
                        "unlearned model whose chain cannot be resolved is refused)")


def add_from_root(p: argparse.ArgumentParser) -> None:
    """``--from-root``: answer a request on a chain by one run from the chain's root (``UnlearnConfig.from_root``)."""
    p.add_argument("--from-root", dest="from_root", action=argparse.BooleanOptionalAction, default=None,
                   help="on a chain, answer the request with one run from the chain's root (original) model over "
                        "every person forgotten so far, with their own forget rows, instead of training --model "
                        "further (default off: docs/defaults.md); still recorded as the chain's next request "
                        "(parent --model). On a model that is not a chain it changes nothing")


RELEARN_OPTIONS = ["relearn_steps", "relearn_lr", "relearn_share", "relearn_batch_size", "relearn_params",
                   "relearn_repair_steps"]


def _number_list(kind: type) -> Any:
    """An argparse type: a comma list of ``kind`` numbers (one number is a list of one) as a tuple."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of {kind.__name__}s, got {text!r}") from None
    return parse


def add_attack_options(p: argparse.ArgumentParser, attacks_help: str) -> None:
    """``--attacks`` and the relearn attack's protocol (``--relearn-*``, docs/robustness.md; unset: the model's
    default, the sweep of smfa.eval.attack_pieces.relearn_defaults). Their config fields are ``attacks`` and
    :data:`RELEARN_OPTIONS`."""
    p.add_argument("--attacks", help=attacks_help)
    p.add_argument("--relearn-steps", type=_number_list(int), dest="relearn_steps", metavar="N[,N...]",
                   help="relearn attacks: optimiser step counts, each read from one run per lr (default: relearn 20, "
                        "relearn_sweep 20,100,500)")
    p.add_argument("--relearn-lr", type=_number_list(float), dest="relearn_lr", metavar="LR[,LR...]",
                   help="relearn attacks: AdamW learning rates, the worst case over them reported (default: relearn "
                        "3e-4 full on the tiny model, 1e-4 LoRA / 1e-5 full on real families; relearn_sweep "
                        "1e-4,3e-4,1e-3, 1e-5,3e-5,1e-4 for full fine-tuning of real families)")
    p.add_argument("--relearn-repair-steps", type=int, dest="relearn_repair_steps", metavar="N",
                   help="relearn attacks: also run every cell after N steps on retain people's rows (repair-then-attack; "
                        "default: relearn 0, relearn_sweep 20)")
    p.add_argument("--relearn-share", type=float, dest="relearn_share",
                   help="relearn attack: fraction of each forget person's facts trained on; the rest is asked (default 0.5)")
    p.add_argument("--relearn-batch-size", type=int, dest="relearn_batch_size", help="relearn attack: rows per step (default 16)")
    p.add_argument("--relearn-params", choices=("lora", "full"), dest="relearn_params",
                   help="relearn attack: train a LoRA adapter (injected, then removed) or a full copy of the language model "
                        "(default: full on the tiny model, lora on real families)")


def add_verify_options(p: argparse.ArgumentParser) -> None:
    """``--leak-target``, ``--verify-attempts``, ``--no-verify``: the check of a request's leak after training
    (``UnlearnConfig.leak_target``; :func:`smfa.stages.unlearn.forget_until_target`)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--leak-target", type=float, dest="leak_target", metavar="RATE",
                   help="after training, the forgotten people's leak (photo, name, held-out phrasings) must "
                        "be at most RATE (default 0.05); above it stronger settings are tried, and a run still above "
                        "it ends with exit status 3 and its numbers")
    g.add_argument("--no-verify", dest="verify", action="store_false", default=True,
                   help="skip that check (the run reports whatever leak it has)")
    p.add_argument("--verify-attempts", type=int, dest="verify_attempts", metavar="N",
                   help="stronger settings tried at most N times before giving up (default 2; SMFA: a larger k, then "
                        "twice the steps)")


def verify_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides of :func:`add_verify_options` (``--no-verify`` is ``leak_target`` None, which
    ``overrides`` would read as "not given")."""
    return {"leak_target": args.leak_target, "verify_attempts": args.verify_attempts}
