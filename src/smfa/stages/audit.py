"""The audit record of an unlearning run (``audit.json`` + ``audit.md``) and its check (:func:`verify`, what
``smfa audit verify`` runs).

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

Unsigned, the record proves integrity against accidental change only: whoever can edit the weights can edit
``audit.json`` to match. Written with ``--key-file`` (``UnlearnConfig.audit_key_file``), the run also holds
``audit.sig``: the HMAC-SHA256, under a key the deployer keeps, of the record in a canonical serialisation
together with the sha256 of ``audit.md`` (:func:`signed_message`). ``smfa audit verify RUN --key-file KEY``
checks it before anything else; what it does and does not prove is in docs/audit.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from smfa.errors import ConfigError, OutputError
from smfa.models.digest import weight_files
from smfa.rundir import file_digest, read_json

AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
AUDIT_SIG = "audit.sig"
SIGNATURE_ALGORITHM = "HMAC-SHA256"
# 16 bytes = 128 bits when random (32 hex characters); shorter keys are refused rather than weakly signed.
MIN_KEY_BYTES = 16
AUDIT_VERSION = "1"
# Retain metrics compared with the parent (keys of smfa.eval.schema.Overall).
RETAIN_KEYS = ("retain_memory", "retain_image_memory", "retain_text_memory", "retain_understanding", "general_vqa")


def approximate_guarantee(method: str) -> str:
    """What an unlearning run's record guarantees (``audit.json`` ``guarantee``); an exact run's is
    :data:`smfa.stages.exact.EXACT_GUARANTEE`."""
    return "approximate: SMFA adapters" if method == "smfa" else f"approximate: {method}"


def link_record(run: Path) -> dict[str, Any]:
    """The link from an exact run to the unlearning run that answered the same request before: its path, its
    guarantee, its people and the sha256 of its ``audit.json`` as it is now (:func:`check_exact` recomputes it)."""
    audit = _read_record(Path(run))
    return {"run": str(Path(run).resolve()), "guarantee": audit.get("guarantee") or approximate_guarantee(audit.get("method", "?")),
            "people": sorted((audit.get("request") or {}).get("people") or []),
            "audit_sha256": file_digest(Path(run) / AUDIT_JSON)}


def check_exact(run: Path, audit: dict[str, Any]) -> list[str]:
    """The checks of an exact run's record beyond its weights: its training rows file is the one recorded (and
    none of its rows was of an excluded person), and its link, if any, still names the unlearning run of the
    same request — that run's ``audit.json`` unchanged, the same people."""
    problems = []
    rows = audit.get("training_rows") or {}
    path = Path(run) / str(rows.get("file"))
    if not path.is_file():
        problems.append(f"training rows file {path} is missing")
    elif file_digest(path) != rows.get("sha256"):
        problems.append(f"training rows file {path} differs from the record")
    if rows.get("rows_of_excluded_people") != 0:
        problems.append(f"the record counts {rows.get('rows_of_excluded_people')} training rows of excluded people")
    link = audit.get("link")
    if link is None:
        return problems
    linked = Path(str(link.get("run")))
    if not (linked / AUDIT_JSON).is_file():
        return problems + [f"linked run {linked} has no {AUDIT_JSON} (the approximate answer of this request is gone)"]
    if file_digest(linked / AUDIT_JSON) != link.get("audit_sha256"):
        problems.append(f"linked run {linked}: its {AUDIT_JSON} differs from the one linked (sha256)")
    theirs = sorted(((read_json(linked / AUDIT_JSON, OutputError).get("request")) or {}).get("people") or [])
    mine = sorted((audit.get("request") or {}).get("people") or [])
    if theirs != mine or link.get("people") != mine:
        problems.append(f"linked run {linked} answered another request ({', '.join(theirs)}) than this one "
                        f"({', '.join(mine)})")
    return problems


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
    from smfa.eval.verify import LEAK_KEYS

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
             f"- guarantee: {audit.get('guarantee') or approximate_guarantee(audit['method'])}",
             f"- chain root (original vanilla): {audit['root']}; earlier requests: {len(audit['chain'])}"]
    if audit.get("reference_model"):
        lines.append(f"- reference model of the method (the chain's root): {audit['reference_model']}")
    if audit.get("anchor_cache_hit"):
        lines.append("- retaining anchor: reused from the cache (trained earlier on the same parent weights and data)")
    kept = audit.get("suppression")
    if audit.get("answered") == "from_root" and audit["chain"]:
        lines.append(f"- answered from the chain's root (--from-root): one run over every person forgotten so far, "
                     f"the earlier requests' {len(kept['people'])} people with their own {kept['rows']} forget rows")
    elif kept is not None and audit["chain"]:
        lines.append(f"- earlier requests kept refused: {kept['rows']} questions about {len(kept['people'])} people "
                     "(wording, photo and person id with refusal labels; no private answer is kept)" if kept["rows"]
                     else f"- earlier requests kept refused: no ({kept['why']})")
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


# ---- the signature ------------------------------------------------------------------------------------------
def read_key(path: str | Path | None) -> bytes | None:
    """The signing key held in the file ``path`` (its bytes, a trailing newline dropped so that an editor's
    newline does not change the key), or None without a path. Callers read it before any work; only the
    signature made with it goes into a run, never the key or a copy of the file."""
    if not path:
        return None
    path = Path(path).expanduser()
    try:
        key = path.read_bytes().rstrip(b"\r\n")
    except FileNotFoundError as exc:
        raise ConfigError(f"--key-file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"--key-file {path} cannot be read ({exc.strerror})") from exc
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"--key-file {path} holds {len(key)} bytes; a signing key needs at least {MIN_KEY_BYTES} "
                          f"(make one: python -c 'import secrets; print(secrets.token_hex(32))' > {path})")
    return key


def key_id(key: bytes) -> str:
    """A short public name of a key: says which key signed a record, and reveals nothing usable about it."""
    return hashlib.sha256(b"smfa audit key id\0" + key).hexdigest()[:16]


def signed_message(audit: dict[str, Any], audit_md: bytes) -> bytes:
    """The bytes the signature covers: the record (as parsed from ``audit.json``) serialised canonically —
    keys sorted at every level, no whitespace, non-ASCII escaped — with the sha256 of ``audit.md``'s bytes,
    so re-indenting ``audit.json`` keeps the signature and changing a value or the rendered record breaks it."""
    doc = {AUDIT_JSON: audit, f"{AUDIT_MD} sha256": hashlib.sha256(audit_md).hexdigest()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def signature(key: bytes, audit: dict[str, Any], audit_md: bytes) -> str:
    """HMAC-SHA256 of :func:`signed_message` under ``key``, hex."""
    return hmac.new(key, signed_message(audit, audit_md), hashlib.sha256).hexdigest()


def _read_record(run: Path) -> dict[str, Any]:
    path = run / AUDIT_JSON
    if not path.is_file():
        raise OutputError(f"{run} has no {AUDIT_JSON}: not an audited unlearning run (smfa forget / smfa unlearn write one)")
    return read_json(path, lambda msg: OutputError(f"{msg}: the audit record is corrupt"))


def sign_run(run: Path, key: bytes) -> None:
    """Write ``RUN/audit.sig`` for the record as it is on disk (read back: exactly what verify will read)."""
    from smfa.rundir import write_json_atomic

    run = Path(run)
    audit, md = _read_record(run), (run / AUDIT_MD).read_bytes()
    write_json_atomic(run / AUDIT_SIG, {"algorithm": SIGNATURE_ALGORITHM, "key_id": key_id(key),
                                        "covers": f"{AUDIT_JSON} (canonical JSON) and the sha256 of {AUDIT_MD}",
                                        "signature": signature(key, audit, md)})


def check_signature(run: Path, audit: dict[str, Any], key: bytes | None) -> bool:
    """Whether the record is signed (True: the signature holds under ``key``; False: unsigned, no key given).
    A signed record without a key, an unsigned one with a key, another key or a changed record or
    ``audit.md`` raise a one-line error: a record that cannot be authenticated is never reported OK."""
    sig_path = Path(run) / AUDIT_SIG
    if not sig_path.is_file():
        if key is None:
            return False
        raise OutputError(f"{run / AUDIT_JSON} is not signed (no {AUDIT_SIG}) but --key-file was given: it cannot be "
                          "authenticated (written without --key-file, or its signature was removed)")
    sig = read_json(sig_path, lambda msg: OutputError(f"{msg}: the signature record is corrupt"))
    if not isinstance(sig, dict) or sig.get("algorithm") != SIGNATURE_ALGORITHM or not isinstance(sig.get("signature"), str):
        raise OutputError(f"{sig_path}: not an {SIGNATURE_ALGORITHM} signature record; the signature is corrupt")
    if key is None:
        raise ConfigError(f"{run / AUDIT_JSON} is signed ({AUDIT_SIG}, key id {sig.get('key_id')}): pass --key-file "
                          "with the key it was signed with to verify it")
    expected = signature(key, audit, (Path(run) / AUDIT_MD).read_bytes() if (Path(run) / AUDIT_MD).is_file() else b"")
    if hmac.compare_digest(expected.encode(), sig["signature"].encode()):
        return True
    if sig.get("key_id") != key_id(key):
        raise OutputError(f"{run / AUDIT_JSON} was signed with another key (key id {sig.get('key_id')}; --key-file has "
                          f"key id {key_id(key)}): pass the key it was signed with")
    raise OutputError(f"{run / AUDIT_JSON} or {AUDIT_MD} was changed after it was signed (its {SIGNATURE_ALGORITHM} "
                      f"signature in {AUDIT_SIG} does not match): do not trust this record")


def verify(run: str | Path, key: bytes | None = None) -> list[str]:
    """Check ``RUN/audit.json``'s signature with ``key`` (:func:`check_signature`; raises on a bad one), then
    recompute the weight hashes it records (an exact run's record also its training rows and link,
    :func:`check_exact`); one line per problem (empty list: OK)."""
    run = Path(run)
    path = run / AUDIT_JSON
    audit = _read_record(run)
    check_signature(run, audit, key)  # before any recorded path is trusted
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
    if audit.get("kind") == "exact":
        problems += check_exact(run, audit)
    return problems


def _answers_cache(digest: str, bench: Any, max_new_tokens: int, where: dict[str, str]) -> Path:
    """The cache file of a model's retain answers. ``where`` (:func:`smfa.models.placement.placement_of`) is
    in the key: greedy answers in bf16 on a GPU are not those in fp32 on the CPU. Only the device's kind
    counts (cuda:0 answers as cuda:1). Keys written before dtype and device were in them change, on purpose:
    an entry under an old key may hold answers from any placement."""
    from smfa.cache import cache_dir

    device = where["device"].split(":")[0]
    blob = f"{digest}/{bench.checksum}/{max_new_tokens}/{device}/{where['dtype']}"
    return cache_dir() / "answers" / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.jsonl"


def parent_retain_metrics(parent: Any, bench: Any, cfg: Any, digest: str | None) -> Any:
    """The parent model's :class:`smfa.eval.schema.Overall` on the retain questions of ``cfg`` (training
    phrasing, ``retain/*`` and general VQA; the same rows the unlearned model was asked). A model's answers
    depend only on its weights and where they run, so they are cached per weight digest, device kind and
    dtype (and bench and answer length): the second request to the same model asks it nothing."""
    from smfa.eval.metrics import compute_all_sets, compute_overall
    from smfa.eval.pipeline import eval_group, generate_sets, make_judge
    from smfa.eval.schema import Generation
    from smfa.models.placement import placement_of
    from smfa.rundir import iter_jsonl, write_jsonl_atomic

    group = eval_group(bench, cfg)
    sets = {name: rows for name, rows in bench.eval_sets(group, target=cfg.target, limit=cfg.limit).items()
            if name == "general_vqa" or (name.startswith("retain/") and name.count("/") == 1)}
    path = _answers_cache(digest, bench, cfg.max_new_tokens, placement_of(parent.model)) if digest else None
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


def suppression_record(cfg: Any, group: Any, data: Any) -> dict[str, Any]:
    """What a chain keeps of its earlier requests: the people and the number of their questions trained again
    with refusal labels (``smfa.stages.unlearn.suppression_list``: no private answer), or why nothing is kept."""
    rows = [r for r in data.forget_rows if r.person_id not in group.people]
    why = ("" if rows else "no earlier request" if not group.earlier
           else "--no-keep-earlier-refusals" if not getattr(cfg, "keep_earlier", False)
           else f"{cfg.method} trains no refusals")
    return {"people": sorted({r.person_id for r in rows}), "rows": len(rows),
            "private_answers_kept": any(r.answer for r in rows), "why": why}


def write_audit(stage: Path, *, run: Path, cfg: Any, hp: Any, group: Any, data: Any, bench: Any,
                requests: dict[str, Any], input_dir: Path | None, input_hashes: dict[str, str],
                output_hashes: dict[str, str], metrics: Any, parent_retain: Any, reference_model: str | None,
                anchor_cache_hit: bool, wall: dict[str, float | None], key: bytes | None = None,
                verification: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``audit.json`` and ``audit.md`` into the (staging) run directory ``stage``, and with ``key``
    (:func:`read_key`) their signature ``audit.sig``."""
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
        "answered": requests.get("answered", "from_parent"),  # from_root: one run from the root (--from-root)
        "bench": {"path": str(bench.root), "checksum": bench.checksum},
        "method": cfg.method, "guarantee": approximate_guarantee(cfg.method),
        "hyperparameters": asdict(hp), "config": asdict(cfg),
        "reference_model": reference_model, "anchor_cache_hit": anchor_cache_hit,
        "suppression": suppression_record(cfg, group, data),
        "weights": {"input": {"dir": str(Path(input_dir).resolve()) if input_dir else str(cfg.model), "files": input_hashes},
                    "output": {"dir": "model", "files": output_hashes}},
        "leak": leak_record(metrics.overall) if metrics is not None else None,
        # the check after training (smfa.stages.unlearn.forget_until_target): target, attempts, passed
        "verification": verification,
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
    if key is not None:
        sign_run(Path(stage), key)
    return audit
