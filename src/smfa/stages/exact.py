"""Exact deletion (``smfa forget --exact``): the vanilla retrained from its own recipe without the request's
people and every earlier request's people of the chain — the oracle's procedure, as a tier of its own for a
deployer who holds the fine-tuning data and the base model.

The recipe is the vanilla's manifest (base model, bench, steps, seed, LoRA or full, sampler, …; a shipped
pretrained vanilla's is the recipe its ``pretrained.json`` was matched on). What cannot be reproduced is refused
in one line: no manifest, another bench (checksum), another number of processes, base weights that changed,
a recipe field this smfa does not know.

A vanilla trained with ``--slices`` (SISA, :mod:`smfa.stages.finetune`) is retrained only from the earliest slice
that holds one of the newly excluded people, from its checkpoint of the stage before; the result is the sliced
run trained from scratch without the people (the stages before never saw them).

A request answered approximately (``smfa forget``, an unlearning run) can be made exact later: ``--of RUN``
retrains without that run's request (and its chain's earlier people) and links the two runs in the audit record
(:func:`smfa.stages.audit.link_record`), each with the guarantee it gives; ``smfa audit verify`` checks the link.

The exact run's directory is a finetune run (model/, training_rows.txt, slices/) with ``manifest.json`` of stage
``exact`` (the requests it answers, so that a later request on it continues the chain: its root is the exact run
itself, a model that never saw those people) and ``audit.json`` / ``audit.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError
from smfa.rundir import MANIFEST, read_manifest

# What the exact run's record guarantees (the approximate side's: smfa.stages.audit.approximate_guarantee).
EXACT_GUARANTEE = "exact: retrained without the people"


@dataclass
class ExactConfig:
    """An exact deletion request."""

    model: str = ""  # the model the request is on: a vanilla run, an exact run, or an unlearning run of a chain
    people: str = ""  # person ids (comma list or file); with ``of``: that run's request (given, it must be the same)
    of: str = ""  # an unlearning run that answered this request approximately: made exact, linked in the audit
    bench: str = ""  # bench directory (default: the one the vanilla's manifest records; its checksum must match)
    out: str = ""  # run directory to write
    audit_key_file: str | None = None  # sign the audit record (smfa.stages.audit.read_key)
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Base:
    """The run whose recipe an exact request retrains: a vanilla (stage finetune) or an earlier exact run."""

    run: Path
    manifest: dict[str, Any]
    recipe: Any  # FinetuneConfig
    excluded: frozenset[str]  # people it never trained on already

    @property
    def vanilla(self) -> str:
        return str((self.manifest.get("exact") or {}).get("vanilla") or self.run)


def exact(cfg: ExactConfig) -> Path:
    """Answer the request exactly; returns the run directory."""
    from smfa.bench import Bench
    from smfa.bench.forget_set import ForgetSet, parse_people
    from smfa.rundir import atomic_run_dir
    from smfa.stages.audit import read_key

    if not cfg.out:
        raise ConfigError("--out is required: the run directory to write")
    if not cfg.model and not cfg.of:
        raise ConfigError("--exact needs --model (the model the request is on) or --of RUN (a request answered by "
                          "smfa forget, to make exact)")
    key = read_key(cfg.audit_key_file)  # before any work
    approx = _approximate_run(cfg.of) if cfg.of else None
    if approx is not None and cfg.model and Path(cfg.model).resolve() != approx:
        raise ConfigError(f"--model {cfg.model} and --of {cfg.of} name different runs: --of's run is the model the "
                          "request is on (leave --model out)")
    model = str(approx) if approx is not None else cfg.model
    bench = Bench.load(cfg.bench or _recorded_bench(model))
    from smfa.stages.forget import Request, read_chain, resolved

    chain = read_chain(model, bench)
    if approx is not None:
        own = chain.requests[-1]
        earlier = chain.requests[:-1]
        if cfg.people and set(parse_people(cfg.people)) != set(own.people):
            raise ConfigError(f"--people differs from the request {cfg.of} answered ({', '.join(own.people)}); "
                              "leave --people out with --of")
        group = ForgetSet(own.label, frozenset(own.people), tuple(frozenset(r.people) for r in earlier))
    else:
        if not cfg.people:
            raise ConfigError("--people is required (the person ids of the request), or --of RUN")
        earlier = chain.requests
        group = bench.request_set(parse_people(cfg.people), chain.earlier_people)
    base = read_base(chain.root, bench)
    excluded = base.excluded | group.forgotten
    new = excluded - base.excluded
    start = _slice_start(base, bench, new)

    from smfa.stages.finetune import finetune

    out = Path(cfg.out).expanduser().resolve()
    t0 = time.perf_counter()
    with atomic_run_dir(out, overwrite=cfg.overwrite) as stage:
        recipe = replace(base.recipe, bench=str(bench.root), out=str(stage / "retrain"), exclude=",".join(sorted(excluded)),
                         overwrite=False, resume=False, pretrained=False, progress=cfg.progress)
        retrain = finetune(recipe, start)
        for name in os.listdir(retrain):
            if name != MANIFEST:
                os.replace(retrain / name, stage / name)
        manifest = read_manifest(retrain)
        (retrain / MANIFEST).unlink()
        retrain.rmdir()
        wall = time.perf_counter() - t0
        sliced = manifest.get("slices") or {}
        steps_trained = sliced.get("steps_trained", recipe.steps)
        requests = [asdict(r) for r in earlier] + [asdict(Request(str(out), group.label, tuple(sorted(group.people))))]
        info = {"vanilla": base.vanilla, "base": str(base.run), "parent": resolved(model),
                "of": str(approx) if approx is not None else None, "request": requests[-1],
                "excluded": sorted(excluded), "new_people": sorted(new),
                "start_slice": (start.index + 1) if start is not None else None,
                "steps_trained": steps_trained, "steps_full": recipe.steps, "wall_time_s": round(wall, 2)}
        manifest["config"]["out"] = str(out)  # the retrain was written inside the staging directory
        manifest.update(stage="exact", exact=info, requests=requests, root=str(out),
                        command=sys.argv,
                        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        from smfa.rundir import write_json_atomic

        write_json_atomic(stage / MANIFEST, manifest)
        from smfa.stages.forget import Chain, mark_chain

        mark_chain(stage / "model", out, Chain(tuple(earlier), str(out)), group, bench)
        _write_audit(stage, out, manifest, base, start, bench, approx, key)
    return out


def _approximate_run(of: str) -> Path:
    from smfa.stages.forget import run_dir

    path = run_dir(of)
    if not (path / MANIFEST).is_file() or read_manifest(path).get("stage") != "unlearn":
        raise ConfigError(f"--of {of} is not an unlearning run directory (smfa forget / smfa unlearn): only a request "
                          "answered approximately can be made exact with --of")
    return path.resolve()


def _recorded_bench(model: str) -> str:
    from smfa.stages.forget import run_dir

    path = run_dir(model)
    bench = ((read_manifest(path).get("bench") or {}).get("path")) if (path / MANIFEST).is_file() else None
    if not bench:
        raise ConfigError(f"{model} records no bench: pass --bench (the bench the vanilla was trained on)")
    return str(bench)


def read_base(root: str, bench: Any) -> Base:
    """The run a chain's root names, with the recipe an exact retrain reproduces; a root whose recipe cannot be
    reproduced is a one-line :class:`ConfigError` saying why."""
    from smfa.distributed import world_size
    from smfa.stages.finetune import FinetuneConfig, excluded_people, start_weights

    from smfa.stages.forget import run_dir

    run = run_dir(root)
    cannot = "exact deletion retrains the vanilla from its own recipe"
    if not (run / MANIFEST).is_file():
        raise ConfigError(f"{root} has no {MANIFEST}, so its recipe is unknown: {cannot}; train the vanilla with "
                          "smfa finetune (or give its run directory, not a copy of its model)")
    manifest = read_manifest(run)
    if manifest.get("stage") not in ("finetune", "exact"):
        raise ConfigError(f"{run} is a {manifest.get('stage')} run, not a vanilla (smfa finetune): {cannot}")
    checksum = (manifest.get("bench") or {}).get("checksum")
    if checksum != bench.checksum:
        raise ConfigError(f"{run} was trained on another bench (checksum {str(checksum)[:12]}, this bench "
                          f"{bench.checksum[:12]}): {cannot}, on the data it was trained on")
    config = dict(manifest.get("config") or {})
    known = {f.name for f in fields(FinetuneConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"{run}'s recipe has fields this smfa does not know ({', '.join(unknown)}): {cannot}; "
                          "use the smfa version that trained it")
    recipe = FinetuneConfig(**config)
    shipped = manifest.get("pretrained")
    if shipped:
        from smfa.pretrained import recipe_key

        if shipped.get("recipe_key") != recipe_key(bench, recipe):
            raise ConfigError(f"{run} holds the shipped vanilla {shipped.get('name')}, whose recipe key does not match "
                              f"the recipe its manifest records: {cannot}")
    if int(manifest.get("world_size") or 1) != world_size():
        raise ConfigError(f"{run} was trained on {manifest.get('world_size')} processes, this run has {world_size()}: "
                          f"{cannot} (the batches and their order depend on it); launch it the same way")
    if "start_weights" in manifest and manifest["start_weights"] != start_weights(recipe.model):
        raise ConfigError(f"the base model {recipe.model} is not the one {run} started from (weights digest differs): "
                          f"{cannot}; restore that base model")
    return Base(run.resolve(), manifest, recipe, excluded_people(recipe, bench))


def _slice_start(base: Base, bench: Any, new: frozenset[str]) -> Any:
    """The stage a sliced base is retrained from: the earliest slice holding one of ``new``; None unsliced."""
    from smfa.stages.finetune import SLICES_DIR, SliceStart, slice_layout

    if base.recipe.slices == 1:
        return None
    layout = slice_layout(bench, base.recipe.slices, base.recipe.seed)
    recorded = [tuple(g) for g in ((base.manifest.get("slices") or {}).get("people") or [])]
    if recorded != list(layout.people):
        raise ConfigError(f"{base.run} records another slice layout than its recipe gives on this bench: its sliced "
                          "checkpoints cannot be reused; retrain the vanilla")
    index = min(layout.person_slice[p] for p in new)
    missing = [i for i in range(1, index + 1) if not (base.run / SLICES_DIR / f"slice-{i}").is_dir()]
    if missing:
        raise ConfigError(f"{base.run} lacks the checkpoint {SLICES_DIR}/slice-{missing[0]} that an exact request "
                          "retrains from; restore it or retrain the vanilla")
    return SliceStart(index, base.run)


def _write_audit(stage: Path, out: Path, manifest: dict[str, Any], base: Base, start: Any, bench: Any,
                 approx: Path | None, key: bytes | None) -> None:
    from smfa.models.digest import weight_hashes
    from smfa.rundir import file_digest, package_versions, write_json_atomic, write_text_atomic
    from smfa.stages.audit import AUDIT_JSON, AUDIT_MD, AUDIT_VERSION, link_record, sign_run
    from smfa.stages.finetune import SLICES_DIR, TRAINING_ROWS

    info = manifest["exact"]
    excluded = set(info["excluded"])
    trained = (stage / TRAINING_ROWS).read_text(encoding="utf-8").split()
    person_of = {q.id: q.person_id for q in bench.questions}
    if start is not None and start.index > 0:
        input_dir = base.run / SLICES_DIR / f"slice-{start.index}"
    else:
        input_dir = Path(base.recipe.model) if base.recipe.model != "tiny" else None
    audit = {
        "audit_version": AUDIT_VERSION, "kind": "exact", "run": str(out),
        "created": manifest["created"], "guarantee": EXACT_GUARANTEE,
        "request": {"label": info["request"]["label"], "people": info["request"]["people"],
                    "n_people": len(info["request"]["people"])},
        "excluded": info["excluded"], "chain": manifest["requests"][:-1], "parent": info["parent"],
        "vanilla": info["vanilla"], "base": info["base"],
        "bench": {"path": str(bench.root), "checksum": bench.checksum},
        "recipe": manifest["config"],
        "slices": ({"count": manifest["slices"]["count"], "started_at": info["start_slice"]}
                   if manifest.get("slices") else None),
        "cost": {"steps_trained": info["steps_trained"], "steps_full_retrain": info["steps_full"],
                 "wall_time_s": info["wall_time_s"]},
        "training_rows": {"file": TRAINING_ROWS, "n": len(trained), "sha256": file_digest(stage / TRAINING_ROWS),
                          "rows_of_excluded_people": sum(1 for r in trained if person_of.get(r) in excluded)},
        "weights": {"input": {"dir": str(input_dir or base.recipe.model),
                              "files": weight_hashes(input_dir) if input_dir is not None and input_dir.is_dir() else {}},
                    "output": {"dir": "model", "files": weight_hashes(stage / "model")}},
        "link": link_record(approx) if approx is not None else None,
        "versions": package_versions(),
    }
    if audit["training_rows"]["rows_of_excluded_people"]:  # a programming error: the retrain saw the people
        raise RuntimeError(f"the exact retrain trained on {audit['training_rows']['rows_of_excluded_people']} rows of "
                           "excluded people")
    audit = json.loads(json.dumps(audit, default=str))
    write_json_atomic(stage / AUDIT_JSON, audit)
    write_text_atomic(stage / AUDIT_MD, render_exact_md(audit))
    if key is not None:
        sign_run(stage, key)


def render_exact_md(audit: dict[str, Any]) -> str:
    """``audit.md`` of an exact run (the numbers are those of ``audit.json``)."""
    req, cost = audit["request"], audit["cost"]
    lines = [f"# Audit record: {audit['run']}", "",
             f"- guarantee: **{audit['guarantee']}** — the model was trained from its recipe on rows that hold none "
             f"of the {len(audit['excluded'])} excluded people",
             f"- created: {audit['created']}",
             f"- request: {req['n_people']} people ({req['label']}): {', '.join(req['people'])}",
             f"- excluded (this request and every earlier one of the chain): {', '.join(audit['excluded'])}",
             f"- recipe of the vanilla {audit['vanilla']} (retrained from {audit['base']}); bench checksum "
             f"`{audit['bench']['checksum']}`",
             f"- training rows: {audit['training_rows']['n']} ({audit['training_rows']['file']}, sha256 "
             f"`{audit['training_rows']['sha256']}`), {audit['training_rows']['rows_of_excluded_people']} of them "
             "of excluded people",
             f"- cost: {cost['steps_trained']} optimiser steps of the full retrain's {cost['steps_full_retrain']}, "
             f"{cost['wall_time_s']:.1f} s"]
    if audit.get("slices"):
        lines.append(f"- sliced vanilla ({audit['slices']['count']} slices): retrained from slice "
                     f"{audit['slices']['started_at']}, the earliest holding a newly excluded person")
    link = audit.get("link")
    if link:
        lines.append(f"- the same request was answered earlier by {link['run']} — guarantee: {link['guarantee']} "
                     f"(its audit.json sha256 `{link['audit_sha256']}`); this run makes it exact")
    lines += ["", "## Weights (sha256)", ""]
    for side in ("input", "output"):
        rec = audit["weights"][side]
        lines.append(f"- {side} ({rec['dir']}):")
        lines += [f"  - `{name}` `{sha}`" for name, sha in rec["files"].items()]
    lines += ["", f"Versions: {', '.join(f'{k} {v}' for k, v in audit['versions'].items())}.", "",
              f"Check the weights, the training rows and the link with `smfa audit verify {audit['run']}`.", ""]
    return "\n".join(lines)
