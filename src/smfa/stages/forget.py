"""Deletion requests: forget named people, one request after another.

A request names people (``--people p0020,p0052``, or a file with one id per line); ``--model`` is the model
that answers it: the vanilla for the first request, or an earlier unlearning run — then the new run starts
from that run's weights and the requests form a **chain**. Every unlearning run records in its manifest:

- ``request``: the people it forgot (``label`` is the split name, or ``request`` for named people);
- ``parent``: the model it started from; ``chain``: the earlier requests, oldest first; ``root``: the
  chain's original vanilla, which methods comparing with the vanilla (NPO's reference, KL's target) use.

The forget group of a run is resolved once (:func:`resolve_forget`, a :class:`smfa.bench.forget_set.ForgetSet`):
the people of earlier requests are never in the retain anchor nor in a retain metric, and the evaluation
reports their leak beside this request's (``metrics.json`` ``requests``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smfa.bench.forget_set import ForgetSet, parse_people
from smfa.errors import ConfigError
from smfa.rundir import MANIFEST, read_manifest


@dataclass(frozen=True)
class Request:
    """One answered deletion request: the run that answered it and the people it forgot."""

    run: str
    label: str
    people: tuple[str, ...]


@dataclass(frozen=True)
class Chain:
    """The requests already answered by a model (oldest first) and the chain's original vanilla."""

    requests: tuple[Request, ...]
    root: str

    @property
    def earlier_people(self) -> tuple[frozenset[str], ...]:
        return tuple(frozenset(r.people) for r in self.requests)


def read_chain(model: str | Path, bench: Any) -> Chain:
    """The chain of ``model``: empty (root = ``model``) for a vanilla or a plain model directory; for an
    unlearning run — given as its directory, its ``model/`` or a checkpoint ``smfa sculpt --merge-to`` wrote
    from it (whose manifest names the run) — that run's chain plus its own request. A run on another bench is
    refused (its person ids would name other people); so is a sculpted checkpoint whose run cannot be found."""
    path = Path(model)
    if not (path / MANIFEST).is_file() and (path.parent / MANIFEST).is_file() and path.name == "model":
        path = path.parent  # RUN/model: the run's manifest is one level up
    if not (path / MANIFEST).is_file():
        return Chain((), str(model))
    manifest = read_manifest(path)
    if manifest.get("stage") == "sculpt":
        return read_chain(_sculpted_from(path, manifest), bench)
    if manifest.get("stage") != "unlearn":
        return Chain((), str(path.resolve()))
    checksum = (manifest.get("bench") or {}).get("checksum")
    if checksum != bench.checksum:
        raise ConfigError(f"{path} was unlearned on another bench (checksum {str(checksum)[:12]}, this bench "
                          f"{bench.checksum[:12]}): its person ids would name other people; use its own bench")
    earlier = tuple(Request(r["run"], r["label"], tuple(r["people"])) for r in manifest.get("chain") or [])
    own = manifest.get("request")
    if own is None:  # a run of a bench split, written before requests were recorded
        split = str(manifest["data"]["forget"])
        own = {"label": split, "people": sorted(bench.forget_people(split))}
    root = manifest.get("root") or manifest["config"]["model"]
    return Chain(earlier + (Request(str(path.resolve()), own["label"], tuple(own["people"])),), str(root))


def _sculpted_from(path: Path, manifest: dict[str, Any]) -> Path:
    """The unlearning run whose adapters a sculpted checkpoint (``smfa sculpt --merge-to``) was merged from:
    its people are forgotten in the checkpoint, so a request on it continues that run's chain. The run must
    still hold the forget adapter the checkpoint recorded (its digest), else it may be another run."""
    from smfa.methods.smfa import FORGET_ADAPTER, adapters_dir
    from smfa.rundir import file_digest
    from smfa.sculpt.adapters import ADAPTER_WEIGHTS

    source = manifest.get("source_run")
    unknown = "so which people it has forgotten is unknown"
    if not source:
        raise ConfigError(f"{path} was written by smfa sculpt but records no source run, {unknown}; "
                          "re-create it with smfa sculpt RUN --merge-to, or start from the run itself")
    run = Path(source)
    if not (run / MANIFEST).is_file() or read_manifest(run).get("stage") != "unlearn":
        raise ConfigError(f"{path} was sculpted from {source}, which is not an unlearning run directory from here, "
                          f"{unknown}; restore that run (or run from where its path resolves), or start from the run")
    weights = adapters_dir(run) / FORGET_ADAPTER / ADAPTER_WEIGHTS
    digests = set((manifest.get("adapter_digests") or {}).values())
    if digests and (not weights.is_file() or file_digest(weights) not in digests):
        raise ConfigError(f"{path} was sculpted from {source}, but that run's {FORGET_ADAPTER} adapter is not the one "
                          f"merged into it, {unknown}; start from the run that made the checkpoint")
    return run


def resolve_forget(bench: Any, forget: str, people: str | None,
                   earlier: tuple[frozenset[str], ...] = ()) -> ForgetSet:
    """The forget group of a run: the named ``people`` (a request: comma list or file) or else the split
    ``forget``, with ``earlier``, the people of the chain's earlier requests (:attr:`Chain.earlier_people`).
    The one place a split name or an id list becomes people."""
    if people:
        return bench.request_set(parse_people(people), earlier)
    group = bench.forget_set(str(forget))
    if earlier:
        bench.request_set(sorted(group.people), earlier)  # the same checks: no one forgotten twice
        group = replace(group, earlier=earlier)
    return group


def chain_record(chain: Chain, group: ForgetSet, model: str, n_rows: int) -> dict[str, Any]:
    """The manifest keys of a run that answered ``group`` starting from ``model``."""
    return {
        "request": {"label": group.label, "people": sorted(group.people), "rows": n_rows},
        "parent": str(Path(model).resolve()) if Path(model).exists() else str(model),
        "chain": [{"run": r.run, "label": r.label, "people": list(r.people)} for r in chain.requests],
        "root": chain.root,
    }


# ---- smfa forget ---------------------------------------------------------------------------------------------
def _forget(args: Any) -> int:
    from smfa.cli.commands import _overrides, _parse_params
    from smfa.config import resolve_config
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    params = _parse_params(args.param)
    if args.k is not None:
        params["k"] = args.k
    over = _overrides(args, ["bench", "model", "out", "method", "target", "seed", "method_config", "eval_limit",
                             "judge", "attacks", "overwrite", "reference", "device", "dtype", "audit_key_file"])
    over.update(forget_people=args.people, params=params, evaluate=args.evaluate, request_eval=True,
                anchor_cache=args.anchor_cache,
                eval_limit=REQUEST_EVAL_LIMIT if args.eval_limit is None else args.eval_limit)
    if args.keep_earlier is not None:
        over["keep_earlier"] = args.keep_earlier
    cfg = resolve_config(UnlearnConfig, args.config, over)
    out = unlearn(cfg)
    print(f"request answered: model in {out}/model, audit record in {out}/audit.md"
          + (f", evaluation in {out}/eval/report.md" if cfg.evaluate else ""))
    return 0


REQUEST_EVAL_LIMIT = 100  # questions per evaluation set of a request (smfa unlearn's default is 200)


def register(sub: Any) -> None:
    from smfa.bench.schema import TARGETS
    from smfa.models.placement import add_placement_options
    from smfa.stages.unlearn import REFERENCE_BUDGETS
    from smfa.eval.judges import available_judges
    from smfa.methods import method_names

    p = sub.add_parser(
        "forget",
        help="answer a deletion request: forget named people from a model (or an earlier request's run), with an audit record",
        description="Forget the named people from --model (a vanilla run, or an earlier unlearning run: the requests "
        "then form a chain whose earlier people stay forgotten and are re-measured), evaluate their leak and the "
        "retain metrics against the parent, and write RUN/audit.json + audit.md (check later with smfa audit verify). "
        "Methods: " + ", ".join(method_names()) + ".",
    )
    p.add_argument("--model", help="vanilla run, model directory, or an earlier unlearning run (a chain)")
    p.add_argument("--bench", help="bench directory (person ids are the bench's)")
    p.add_argument("--people", required=True, metavar="IDS", help="person ids: a comma list or a file with one id per line")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--method", help="method name (default smfa, with its shipped defaults)")
    p.add_argument("--target", choices=TARGETS, help="all: forget photo and name knowledge (default); visual: the photo link only")
    p.add_argument("--k", type=float, help="SMFA sculpt strength")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any method hyper-parameter (repeatable)")
    p.add_argument("--method-config", dest="method_config", help="YAML with the method's hyper-parameters")
    p.add_argument("--reference", choices=REFERENCE_BUDGETS,
                   help="data budget (as smfa unlearn): auto (default: self-full for a method with a retain term), "
                        "none (the paper recipe), self or self-full; the request's people are left out of the reference pool")
    add_placement_options(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-limit", type=int, dest="eval_limit",
                   help=f"at most N questions per evaluation set (default {REQUEST_EVAL_LIMIT})")
    p.add_argument("--attacks", help="also run the attack suite ('all' or a comma list); recorded in the audit")
    p.add_argument("--judge", choices=available_judges())
    p.add_argument("--no-eval", dest="evaluate", action="store_false", default=True,
                   help="skip the evaluation (the audit then records no leak)")
    p.add_argument("--keep-earlier-refusals", dest="keep_earlier", action=argparse.BooleanOptionalAction, default=None,
                   help="in a chain, train the refusal of every earlier request's people again (default on, for methods "
                        "that train refusals: smfa, idk, ties): a suppression list of their questions with refusal "
                        "labels, never a private answer; the audit says what is kept")
    p.add_argument("--key-file", dest="audit_key_file", metavar="PATH",
                   help="sign the audit record with HMAC-SHA256 under the key in this file (RUN/audit.sig); the key stays "
                        "yours, never copied into the run; check with smfa audit verify RUN --key-file PATH")
    p.add_argument("--no-anchor-cache", dest="anchor_cache", action="store_false", default=True,
                   help="retrain the retaining anchor even when one trained on the same weights is cached")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing --out")
    p.add_argument("--config", help="YAML recipe with UnlearnConfig fields")
    p.set_defaults(func=_forget)
