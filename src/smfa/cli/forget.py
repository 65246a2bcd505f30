"""``smfa forget``: answer a deletion request (:mod:`smfa.stages.forget`) with an unlearning run and its
audit record."""

from __future__ import annotations

import argparse
from typing import Any

from smfa.cli.options import (RELEARN_OPTIONS, add_attack_options, add_from_root, add_key_file, add_method_params,
                               add_new_chain, add_verify_options, command, overrides, verify_overrides)
from smfa.config import parse_params, resolve_config
from smfa.errors import ConfigError
from smfa.stages.forget import REQUEST_EVAL_LIMIT


def _forget(args: Any) -> int:
    """answer a deletion request: forget named people from a model (or an earlier request's run), with an audit
    record

    Forget the named people from --model (a vanilla run, or an earlier unlearning run: the requests then form a
    chain whose earlier people stay forgotten and are re-measured), evaluate their leak and the retain metrics
    against the parent, and write RUN/audit.json + audit.md (check later with smfa audit verify). Methods:
    {methods}. With --exact: retrain the vanilla from its own recipe without the people instead (exact deletion;
    --of RUN makes an earlier approximate answer exact and links the two in the audit record)."""
    if args.exact or args.of:
        return _exact(args)
    if not args.people:
        raise ConfigError("--people is required (the person ids of the request)")
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    params = parse_params(args.param)
    if args.k is not None:
        params["k"] = args.k
    over = overrides(args, ["bench", "model", "out", "method", "target", "seed", "method_config", "eval_limit",
                             "judge", "attacks", *RELEARN_OPTIONS, "overwrite", "reference", "device", "dtype",
                             "audit_key_file", "new_chain", "from_root"])
    over.update(forget_people=args.people, params=params, evaluate=args.evaluate, request_eval=True,
                anchor_cache=args.anchor_cache,
                eval_limit=REQUEST_EVAL_LIMIT if args.eval_limit is None else args.eval_limit)
    if args.keep_earlier is not None:
        over["keep_earlier"] = args.keep_earlier
    over.update(verify_overrides(args))
    cfg = resolve_config(UnlearnConfig, args.config, over)
    if not args.verify:
        cfg.leak_target = None
    out = unlearn(cfg)
    print(f"request answered: model in {out}/model, audit record in {out}/audit.md"
          + (f", evaluation in {out}/eval/report.md" if cfg.evaluate else ""))
    return 0


# Options of an approximate answer that an exact one (a retrain from the vanilla's recipe) has no use for.
NOT_EXACT = ("method", "target", "k", "param", "method_config", "reference", "seed", "eval_limit", "attacks", "judge",
             "keep_earlier", "new_chain", "from_root", "leak_target", "verify_attempts", "config", "device", "dtype")


def _exact(args: Any) -> int:
    """``--exact``: retrain the vanilla without the people (:mod:`smfa.stages.exact`)."""
    from smfa.stages.exact import ExactConfig, exact

    if args.of and not args.exact:
        raise ConfigError("--of RUN makes that run's request exact: pass --exact with it")
    given = [n for n in NOT_EXACT if getattr(args, n, None) not in (None, [])]
    if given or not args.evaluate or not args.verify or not args.anchor_cache:
        names = given + [n for n, on in (("no_eval", not args.evaluate), ("no_verify", not args.verify),
                                          ("no_anchor_cache", not args.anchor_cache)) if on]
        raise ConfigError(f"--exact retrains the vanilla from its own recipe; {', '.join('--' + n.replace('_', '-') for n in names)} "
                          "do not apply to it")
    out = exact(ExactConfig(model=args.model or "", people=args.people or "", of=args.of or "", bench=args.bench or "",
                            out=args.out or "", audit_key_file=args.audit_key_file, overwrite=bool(args.overwrite)))
    print(f"request answered exactly: model in {out}/model (retrained without the people), audit record in {out}/audit.md")
    return 0


def register(sub: Any) -> None:
    from smfa.bench.schema import TARGETS
    from smfa.eval.judges import available_judges
    from smfa.methods import method_names
    from smfa.models.placement import add_placement_options
    from smfa.reference import REFERENCE_BUDGETS

    p = command(sub, "forget", _forget, methods=", ".join(method_names()))
    p.add_argument("--model", help="vanilla run, model directory, or an earlier unlearning run (a chain)")
    p.add_argument("--bench", help="bench directory (person ids are the bench's)")
    p.add_argument("--people", metavar="IDS", help="person ids: a comma list or a file with one id per line (required, "
                   "but with --exact --of)")
    p.add_argument("--exact", action="store_true",
                   help="answer exactly: retrain the vanilla from its own recipe (its manifest) without the request's "
                        "people and every earlier request's; a vanilla trained with --slices is retrained from the "
                        "earliest slice holding one of them (docs/exact.md)")
    p.add_argument("--of", metavar="RUN", help="with --exact: make the request RUN (smfa forget) answered approximately "
                   "exact; the audit record links the two runs")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--method", help="method name (default smfa, with its shipped defaults)")
    p.add_argument("--target", choices=TARGETS, help="all: forget photo and name knowledge (default); visual: the photo link only")
    p.add_argument("--k", type=float, help="SMFA sculpt strength")
    add_method_params(p)
    p.add_argument("--reference", choices=REFERENCE_BUDGETS,
                   help="data budget (as smfa unlearn): auto (default: self-full for a method with a retain term), "
                        "none (the paper recipe), self or self-full; the request's people are left out of the reference pool")
    add_placement_options(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-limit", type=int, dest="eval_limit",
                   help=f"at most N questions per evaluation set (default {REQUEST_EVAL_LIMIT})")
    add_attack_options(p, "also run the attack suite ('all' or a comma list); recorded in the audit")
    p.add_argument("--judge", choices=available_judges())
    p.add_argument("--no-eval", dest="evaluate", action="store_false", default=True,
                   help="skip the evaluation (the audit then records no leak)")
    p.add_argument("--keep-earlier-refusals", dest="keep_earlier", action=argparse.BooleanOptionalAction, default=None,
                   help="in a chain, train the refusal of every earlier request's people again (default on, for methods "
                        "that train refusals: smfa, idk, ties): a suppression list of their questions with refusal "
                        "labels, never a private answer; the audit says what is kept")
    add_new_chain(p)
    add_from_root(p)
    add_verify_options(p)
    add_key_file(p)
    p.add_argument("--no-anchor-cache", dest="anchor_cache", action="store_false", default=True,
                   help="retrain the retaining anchor even when one trained on the same weights is cached")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing --out")
    p.add_argument("--config", help="YAML recipe with UnlearnConfig fields")
