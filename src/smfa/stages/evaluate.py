"""The ``smfa eval`` stage: :func:`smfa.eval.pipeline.evaluate` on the forget groups a run answered.

An unlearning run records whom it forgot in its manifest: its request's people and, when its ``--model`` was an
earlier unlearning run, the people of every earlier request of the chain (:func:`smfa.stages.forget.read_chain`).
Scored against the default split instead, those people would count as retain people. So when ``--model`` is
such a run (its directory, its ``model/`` or a checkpoint merged from it) and no group is named, the evaluation
takes the run's groups and says so in one line; a named forget group that is not the run's is refused. Without
``--target`` it is scored in the setting it unlearned in (:func:`run_target`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from smfa.bench import Bench
from smfa.bench.forget_set import REQUEST_LABEL
from smfa.errors import ConfigError
from smfa.eval.pipeline import EvalConfig, eval_group
from smfa.rundir import MANIFEST, read_manifest
from smfa.stages.forget import read_chain

DEFAULT_FORGET = EvalConfig().forget
DEFAULT_TARGET = EvalConfig().target


def run_groups(cfg: EvalConfig, bench: Any) -> EvalConfig:
    """``cfg`` with the forget groups of the unlearning run it evaluates: unchanged for a model that answered no
    request; with the run's request and earlier requests where ``cfg`` names no group (the default split, no
    people, no earlier groups); with the earlier requests added where ``cfg`` names the run's own forget people.
    Forget people or earlier groups other than the run's are a one-line :class:`ConfigError`."""
    chain = read_chain(cfg.model, bench)
    if not chain.requests:
        return cfg
    *before, own = chain.requests
    cfg = replace(cfg, target=run_target(own.run, cfg.target))
    earlier = [sorted(r.people) for r in before]
    if cfg.forget_people is None and cfg.forget == DEFAULT_FORGET and not cfg.earlier:
        named = own.label == REQUEST_LABEL
        return replace(cfg, forget=DEFAULT_FORGET if named else own.label,
                       forget_people=",".join(own.people) if named else None, earlier=earlier)
    asked = eval_group(bench, replace(cfg, earlier=[]))
    what = (f"{cfg.model} forgot {_group(own.label, own.people)}"
            + (f" after {len(before)} earlier request(s) of its chain" if before else ""))
    if asked.people != frozenset(own.people):
        raise ConfigError(f"{what}, not {_group(asked.label, asked.people)}: leave out --forget and --forget-people "
                          "to evaluate it on its own groups")
    if cfg.earlier and [set(e) for e in cfg.earlier] != [set(e) for e in earlier]:
        raise ConfigError(f"{what}; the earlier groups given are not its chain's ({len(cfg.earlier)} given): leave "
                          "them out to use its manifest's")
    return replace(cfg, earlier=earlier)


def run_target(run: str, asked: str) -> str:
    """The setting to score a run in: the one it unlearned in (its manifest's ``config.target``) where ``asked`` is
    the default — a visual-setting run scored in ``all`` would count the name memory it kept on purpose as a leak."""
    if asked != DEFAULT_TARGET or not (Path(run) / MANIFEST).is_file():
        return asked
    return str((read_manifest(run).get("config") or {}).get("target") or asked)


def _group(label: str, people: Any) -> str:
    """A forget group in words: "a request of 3 people", "split 10 (6 people)"."""
    n = f"{len(people)} {'person' if len(people) == 1 else 'people'}"
    return f"a request of {n}" if label == REQUEST_LABEL else f"split {label} ({n})"


def evaluate_run(cfg: EvalConfig) -> Path:
    """``smfa eval``: :func:`smfa.eval.pipeline.evaluate` on :func:`run_groups`, saying in one line which groups
    a run's manifest gave."""
    bench = Bench.load(cfg.bench)
    resolved = run_groups(cfg, bench)
    if resolved != cfg:
        group = eval_group(bench, resolved)
        earlier = (f"; by {len(group.earlier)} earlier request(s): {sum(map(len, group.earlier))} people, reported "
                   "apart and never as retain") if group.earlier else ""
        setting = f" in the {resolved.target} setting it unlearned in" if resolved.target != cfg.target else ""
        print(f"evaluating {cfg.model} on the groups its manifest records{setting}: forgotten by this run, "
              f"{_group(group.label, group.people)}{earlier}", flush=True)
    from smfa.eval.pipeline import evaluate  # looked up at call time (tests patch it)

    return evaluate(resolved)
