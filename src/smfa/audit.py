"""The audit record of an unlearning run (``audit.json`` + ``audit.md``) and ``smfa audit verify``.

What a privacy officer needs to check a deletion request was answered, and to check later that the served
weights are the ones that were measured:

- the request: the person ids, the number of forget rows and the sha256 of the forget data (each row as
  JSON with sorted keys, in id order, then the bytes of each image they use, in path order);
- the method and its resolved configuration; the chain (parent, earlier requests, root);
- the sha256 of every weight file of the input and the output model (``*.safetensors`` and the shard index);
- the measured leak for the request's people (training phrasing with the photo and by name, held-out
  phrasings, held-out photos), every earlier request's leak, and the attack suite when it ran;
- retain metrics of the output model beside the parent model's on the same questions;
- wall times and package versions.

``smfa audit verify RUN`` recomputes the weight hashes: "OK" (exit 0) or one line per differing, missing or
unrecorded file (exit 2).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from smfa.errors import OutputError
from smfa.rundir import file_digest, read_json

AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
AUDIT_VERSION = "1"
# Retain metrics compared with the parent (keys of smfa.eval.schema.Overall).
RETAIN_KEYS = ("retain_memory", "retain_image_memory", "retain_text_memory", "retain_understanding", "general_vqa")
# The request's leak (keys of Overall) under the names the audit shows.
LEAK_KEYS = {"photo": "forget_leak_image", "name": "forget_leak_text", "paraphrase": "forget_leak_paraphrase",
             "unseen_photo": "forget_leak_unseen_image"}


def weight_files(model_dir: Path) -> list[Path]:
    """The files that hold a model's weights: every ``*.safetensors`` and the shard index, sorted."""
    model_dir = Path(model_dir)
    return sorted(p for p in model_dir.iterdir()
                  if p.is_file() and (p.suffix == ".safetensors" or p.name.endswith(".safetensors.index.json")))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weight_hashes(model_dir: Path) -> dict[str, str]:
    """``{file name: sha256}`` of :func:`weight_files` (memoised per path, size and mtime within a process)."""
    out = {}
    for path in weight_files(model_dir):
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = file_digest(path)
        out[path.name] = _DIGESTS[key]
    if not out:
        raise OutputError(f"{model_dir} has no safetensors weight files to hash")
    return out


def model_digest(hashes: dict[str, str]) -> str:
    """One sha256 over a model's weight-file hashes (names and digests): a key for caches of its outputs."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def forget_data_digest(rows: Iterable[Any], bench_root: Path) -> str:
    """sha256 of the forget data: each row as sorted-key JSON in id order, then each image's bytes in path order."""
    h = hashlib.sha256()
    rows = sorted(rows, key=lambda r: r.id)
    for r in rows:
        h.update(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    for image in sorted({r.image for r in rows if r.image}):
        h.update(image.encode())
        h.update(bytes.fromhex(file_digest(Path(bench_root) / image)))
    return h.hexdigest()


def leak_record(overall: Any) -> dict[str, float | None]:
    return {name: getattr(overall, key) for name, key in LEAK_KEYS.items()}


def retain_record(mine: Any, parent: Any | None) -> dict[str, Any]:
    """Retain metrics of the output model and of the parent on the same questions, and the change."""
    out: dict[str, Any] = {"model": {k: getattr(mine, k) for k in RETAIN_KEYS}}
    if parent is not None:
        out["parent"] = {k: getattr(parent, k) for k in RETAIN_KEYS}
        out["change"] = {k: (None if out["model"][k] is None or out["parent"][k] is None
                             else out["model"][k] - out["parent"][k]) for k in RETAIN_KEYS}
    return out


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _pts(value: Any) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def render_audit_md(audit: dict[str, Any]) -> str:
    """``audit.md``: the audit record for a reader (the numbers are those of ``audit.json``)."""
    req = audit["request"]
    lines = [f"# Audit record: {audit['run']}", "",
             f"- created: {audit['created']}",
             f"- request: {req['n_people']} people ({req['label']}), {req['rows']} forget rows, "
             f"forget data sha256 `{req['forget_data_sha256']}`",
             f"- people: {', '.join(req['people'])}",
             f"- method: {audit['method']}; model started from (parent): {audit['parent']}",
             f"- chain root (original vanilla): {audit['root']}; earlier requests: {len(audit['chain'])}"]
    if audit.get("reference_model"):
        lines.append(f"- reference model of the method (the chain's root): {audit['reference_model']}")
    if audit.get("anchor_cache_hit"):
        lines.append("- retaining anchor: reused from the cache (trained earlier on the same parent weights and data)")
    lines += ["", "## Measured leak of the request's people", ""]
    if audit["leak"] is None:
        lines.append("Not measured (the run was made with --no-eval).")
    else:
        lines += ["| request | people | photo | name | paraphrase | unseen photo | questions |",
                  "|---|---|---|---|---|---|---|"]
        for r in audit["requests"]:
            tag = " (this one)" if r["current"] else ""
            lines.append(f"| {r['request']}{tag} | {r['people']} | {_pct(r['leak_image'])} | {_pct(r['leak_text'])} | "
                         f"{_pct(r['leak_paraphrase'])} | {_pct(r['leak_unseen_image'])} | {r['n']} |")
        lines += ["", "Leak = share of memory answers that still contain the private fact (training phrasing with "
                  "the photo / by name, held-out phrasings, held-out photo variants)."]
    if audit.get("attacks"):
        lines += ["", "## Attacks", ""]
        for name, values in audit["attacks"].items():
            shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
            lines.append(f"- {name}: {shown}")
    retain = audit.get("retain")
    if retain:
        lines += ["", "## Retain metrics against the parent model (same questions)", "",
                  "| metric | this model | parent | change (points) |", "|---|---|---|---|"]
        for k in RETAIN_KEYS:
            parent = (retain.get("parent") or {}).get(k)
            lines.append(f"| {k} | {_pct(retain['model'][k])} | {_pct(parent)} | {_pts((retain.get('change') or {}).get(k))} |")
    lines += ["", "## Weights (sha256)", ""]
    for side in ("input", "output"):
        rec = audit["weights"][side]
        lines.append(f"- {side} ({rec['dir']}):")
        lines += [f"  - `{name}` `{sha}`" for name, sha in rec["files"].items()]
    wall = audit["wall_time_s"]
    lines += ["", f"Wall time: {', '.join(f'{k} {v:.1f} s' for k, v in wall.items() if v is not None)}.",
              f"Versions: {', '.join(f'{k} {v}' for k, v in audit['versions'].items())}.",
              "", f"Check the weights with `smfa audit verify {audit['run']}`.", ""]
    return "\n".join(lines)


def verify(run: str | Path) -> list[str]:
    """Recompute the weight hashes recorded in ``RUN/audit.json``; one line per problem (empty list: OK)."""
    run = Path(run)
    path = run / AUDIT_JSON
    if not path.is_file():
        raise OutputError(f"{run} has no {AUDIT_JSON}: not an audited unlearning run (smfa forget / smfa unlearn write one)")
    audit = read_json(path, lambda msg: OutputError(f"{msg}: the audit record is corrupt"))
    try:
        sides = {side: audit["weights"][side] for side in ("input", "output")}
    except (KeyError, TypeError) as exc:
        raise OutputError(f"{path}: no weights.input / weights.output record; the audit record is corrupt") from exc
    problems = []
    for side, rec in sides.items():
        base = run / rec["dir"] if side == "output" else Path(rec["dir"])
        for name, sha in rec["files"].items():
            file = base / name
            if not file.is_file():
                problems.append(f"{side} weight file {file} is missing (recorded sha256 {sha[:16]}…)")
            elif (actual := file_digest(file)) != sha:
                problems.append(f"{side} weight file {file} differs from the record (sha256 {actual[:16]}… != {sha[:16]}…)")
        if base.is_dir():
            problems += [f"{side} weight file {p} is not in the audit record"
                         for p in weight_files(base) if p.name not in rec["files"]]
    return problems


def _answers_cache(digest: str, bench: Any, max_new_tokens: int) -> Path:
    from smfa.cache import cache_dir

    key = hashlib.sha256(f"{digest}/{bench.checksum}/{max_new_tokens}".encode()).hexdigest()[:20]
    return cache_dir() / "answers" / f"{key}.jsonl"


def parent_retain_metrics(parent: Any, bench: Any, cfg: Any, digest: str | None) -> Any:
    """The parent model's :class:`smfa.eval.schema.Overall` on the retain questions of ``cfg`` (training
    phrasing, ``retain/*`` and general VQA; the same rows the unlearned model was asked). A model's answers
    depend only on its weights, so they are cached per weight digest (and bench and answer length): the
    second request to the same model asks it nothing."""
    from smfa.eval.metrics import compute_all_sets, compute_overall
    from smfa.eval.pipeline import eval_group, generate_sets, make_judge
    from smfa.eval.schema import Generation
    from smfa.rundir import iter_jsonl, write_jsonl_atomic

    group = eval_group(bench, cfg)
    sets = {name: rows for name, rows in bench.eval_sets(group, target=cfg.target, limit=cfg.limit).items()
            if name == "general_vqa" or (name.startswith("retain/") and name.count("/") == 1)}
    path = _answers_cache(digest, bench, cfg.max_new_tokens) if digest else None
    known: dict[str, dict[str, Any]] = {}
    if path is not None and path.is_file():
        known = {row["question_id"]: row for _, row in iter_jsonl(path, OutputError)}
    missing = {name: [r for r in rows if r.id not in known] for name, rows in sets.items()}
    missing = {name: rows for name, rows in missing.items() if rows}
    if missing:
        new = generate_sets(parent, bench, missing, group.forgotten, cfg=cfg)
        known.update({g.question_id: g.to_dict() for g in new})
        if path is not None:
            write_jsonl_atomic(path, list(known.values()))
    gens = [Generation.from_dict({**known[r.id], "set": name, "is_forget_person": False})
            for name, rows in sets.items() for r in rows]
    return compute_overall(compute_all_sets(gens, make_judge(cfg, bench)), cfg.target)


def write_audit(stage: Path, *, run: Path, cfg: Any, hp: Any, group: Any, data: Any, bench: Any,
                requests: dict[str, Any], input_dir: Path | None, input_hashes: dict[str, str],
                output_hashes: dict[str, str], metrics: Any, parent_retain: Any, reference_model: str | None,
                anchor_cache_hit: bool, wall: dict[str, float | None]) -> dict[str, Any]:
    """Write ``audit.json`` and ``audit.md`` into the (staging) run directory ``stage``."""
    import datetime as _dt
    from dataclasses import asdict

    from smfa.rundir import package_versions, write_json_atomic, write_text_atomic

    audit = {
        "audit_version": AUDIT_VERSION,
        "run": str(Path(run).resolve()),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "request": {"label": group.label, "people": sorted(group.people), "n_people": len(group.people),
                    "rows": len(data.forget_rows), "forget_data_sha256": forget_data_digest(data.forget_rows, bench.root)},
        "parent": requests["parent"], "chain": requests["chain"], "root": requests["root"],
        "bench": {"path": str(bench.root), "checksum": bench.checksum},
        "method": cfg.method, "hyperparameters": asdict(hp), "config": asdict(cfg),
        "reference_model": reference_model, "anchor_cache_hit": anchor_cache_hit,
        "weights": {"input": {"dir": str(Path(input_dir).resolve()) if input_dir else str(cfg.model), "files": input_hashes},
                    "output": {"dir": "model", "files": output_hashes}},
        "leak": leak_record(metrics.overall) if metrics is not None else None,
        "requests": [asdict(r) for r in metrics.requests or []] if metrics is not None else [],
        "attacks": metrics.attacks if metrics is not None else None,
        "eval_limit": cfg.eval_limit,
        "retain": retain_record(metrics.overall, parent_retain) if metrics is not None else None,
        "wall_time_s": {k: (round(v, 2) if v is not None else None) for k, v in wall.items()},
        "versions": package_versions(),
    }
    audit = json.loads(json.dumps(audit, default=str))  # plain JSON values, as audit.json will hold
    write_json_atomic(Path(stage) / AUDIT_JSON, audit)
    write_text_atomic(Path(stage) / AUDIT_MD, render_audit_md(audit))
    return audit


# ---- smfa audit verify -------------------------------------------------------------------------------------
def _verify(args: Any) -> int:
    import sys

    problems = verify(args.run)
    if problems:
        for line in problems:
            print(f"smfa audit verify: {line}", file=sys.stderr)
        return 2
    n = sum(len(v["files"]) for v in read_json(Path(args.run) / AUDIT_JSON, OutputError)["weights"].values())
    print(f"OK: {n} weight files match {Path(args.run) / AUDIT_JSON}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="check an unlearning run's audit record",
                       description="Audit records of unlearning runs (audit.json, audit.md).")
    verbs = p.add_subparsers(dest="audit_command", metavar="VERB", required=True)
    v = verbs.add_parser("verify", help="recompute the weight hashes of RUN's audit record: OK (exit 0) or what differs (exit 2)",
                         description="Recompute the sha256 of every input and output weight file recorded in "
                         "RUN/audit.json; print OK, or one line per differing, missing or unrecorded file and exit 2.")
    v.add_argument("run", help="an unlearning run directory (smfa forget / smfa unlearn)")
    v.set_defaults(func=_verify)
