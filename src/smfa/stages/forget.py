"""Deletion requests: forget named people, one request after another.

A request names people (``--people p0020,p0052``, or a file with one id per line); ``--model`` is the model
that answers it: the vanilla for the first request, or an earlier unlearning run — then the new run starts
from that run's weights and the requests form a **chain**. Every unlearning run records in its manifest:

- ``request``: the people it forgot (``label`` is the split name, or ``request`` for named people);
- ``parent``: the model it started from; ``chain``: the earlier requests, oldest first; ``root``: the
  chain's original vanilla, which methods comparing with the vanilla (NPO's reference, KL's target) use.

An unlearning run also writes into its ``model/`` what those weights have forgotten (:func:`mark_chain`), so
that the model directory alone — copied elsewhere without the run's manifest — still continues the chain. A
model whose chain cannot be resolved (its record names a root that is gone, or its weights were written by
``smfa unlearn`` but no record vouches for them) is refused: ``--new-chain`` starts a new chain from it on
purpose, its earlier requests' people then neither kept refused nor re-measured.

The forget group of a run is resolved once (:func:`smfa.bench.forget_set.resolve_forget`, a
:class:`smfa.bench.forget_set.ForgetSet`): the people of earlier requests are never in the retain anchor nor in a retain metric, and the evaluation
reports their leak beside this request's (``metrics.json`` ``requests``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smfa.bench.forget_set import ForgetSet
from smfa.errors import ConfigError
from smfa.rundir import MANIFEST, read_json, read_manifest, write_json_atomic


@dataclass(frozen=True)
class Request:
    """One answered deletion request: the run that answered it and the people it forgot."""

    run: str
    label: str
    people: tuple[str, ...]

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Request:
        """A request as manifests and chain markers record it (``asdict``)."""
        return cls(record["run"], record["label"], tuple(record["people"]))


@dataclass(frozen=True)
class Chain:
    """The requests already answered by a model (oldest first) and the chain's original vanilla."""

    requests: tuple[Request, ...]
    root: str

    @property
    def earlier_people(self) -> tuple[frozenset[str], ...]:
        return tuple(frozenset(r.people) for r in self.requests)


def read_chain(model: str | Path, bench: Any, new_chain: bool = False) -> Chain:
    """The chain of ``model``: empty (root = ``model``, resolved) for a vanilla or a plain model directory; for an
    unlearning run — given as its directory, its ``model/`` (with or without the run's manifest beside it: its
    :data:`CHAIN_MARKER`) or a checkpoint ``smfa sculpt --merge-to`` wrote from it (whose manifest names the run)
    — that run's chain plus its own request. ``new_chain``: empty whatever ``model`` is (``--new-chain``).
    Refused in one line: a run on another bench (its person ids would name other people), a sculpted checkpoint
    whose run cannot be found, and a chain whose root is gone or that no record resolves (:func:`_unrecorded_chain`)."""
    if new_chain:
        return Chain((), resolved(model))
    path = run_dir(model)
    if not (path / MANIFEST).is_file():
        return _unrecorded_chain(model, bench)
    manifest = read_manifest(path)
    if manifest.get("stage") == "sculpt":
        return read_chain(_sculpted_from(path, manifest), bench)
    if manifest.get("stage") == "exact":  # retrained without its requests' people: the root of what follows
        _check_bench(path, (manifest.get("bench") or {}).get("checksum"), bench)
        return Chain(tuple(Request.from_dict(r) for r in manifest["requests"]),
                     str(path.resolve()))
    if manifest.get("stage") != "unlearn":
        return Chain((), str(path.resolve()))
    _check_bench(path, (manifest.get("bench") or {}).get("checksum"), bench)
    earlier = tuple(Request.from_dict(r) for r in manifest.get("chain") or [])
    own = manifest.get("request")
    if own is None:  # a run of a bench split, written before requests were recorded
        split = str(manifest["data"]["forget"])
        own = {"label": split, "people": sorted(bench.forget_people(split))}
    requests = earlier + (Request(str(path.resolve()), own["label"], tuple(own["people"])),)
    return Chain(requests, _existing_root(manifest.get("root") or manifest["config"]["model"], path, len(requests)))


# In an unlearned model's directory: the chain its weights answer (:func:`mark_chain`).
CHAIN_MARKER = "smfa_chain.json"
# In its config.json, which travels with the weights wherever they are copied: the run that wrote them.
CONFIG_KEY = "smfa_unlearned"
NEW_CHAIN_HINT = ("or pass --new-chain to start a new chain from it on purpose (the earlier requests' people are "
                  "then neither kept refused nor re-measured)")


def mark_chain(model_dir: Path, run: str | Path, chain: Chain, group: ForgetSet, bench: Any) -> None:
    """Record in ``model_dir`` (an unlearning run's ``model/``, before the run is renamed into place at ``run``)
    what its weights have forgotten: :data:`CHAIN_MARKER` holds the weights' digest, the bench's checksum, the
    chain's root (absolute) and every request answered so far, this one last; ``config.json`` gets
    :data:`CONFIG_KEY` naming the run, so that the weights copied without the marker are still known as
    unlearned. A request on the directory alone continues the chain (:func:`read_chain`)."""
    from smfa.models.digest import model_digest, weight_hashes

    model_dir, run = Path(model_dir), str(Path(run).expanduser().resolve())
    requests = chain.requests + (Request(run, group.label, tuple(sorted(group.people))),)
    write_json_atomic(model_dir / CHAIN_MARKER, {
        "run": run, "weights": model_digest(weight_hashes(model_dir)), "bench": bench.checksum, "root": chain.root,
        "requests": [asdict(r) for r in requests]})
    config = read_json(model_dir / "config.json", ConfigError)
    write_json_atomic(model_dir / "config.json", {**config, CONFIG_KEY: {"run": run}})


def _unrecorded_chain(model: str | Path, bench: Any) -> Chain:
    """The chain of a model with no run manifest: a plain model directory (or a hub id) starts a new one; an
    unlearned model's directory continues the chain its :data:`CHAIN_MARKER` records — its own, or the one in
    the ``model/`` of the run its config.json names — when that marker was written for these very weights (a
    checkpoint derived from them, e.g. re-saved or merged, has forgotten more or other people). Weights written
    by ``smfa unlearn`` (a marker or the config key present) that no marker vouches for are refused."""
    from smfa.models.digest import model_digest, weight_hashes
    from smfa.models.loading import model_dir_of

    model_dir = model_dir_of(model)
    if model_dir is None or not (model_dir / "config.json").is_file():
        return Chain((), resolved(model))  # a hub id, or not a model directory (loading says why)
    config = read_json(model_dir / "config.json", ConfigError)
    written_by = (config.get(CONFIG_KEY) or {}).get("run") if isinstance(config, dict) else None
    markers = [model_dir / CHAIN_MARKER] + ([Path(written_by) / "model" / CHAIN_MARKER] if written_by else [])
    markers = [m for m in markers if m.is_file()]
    if not written_by and not markers:
        return Chain((), resolved(model))
    weights = model_digest(weight_hashes(model_dir))  # memoised: the unlearn stage hashes its input anyway
    for marker in markers:
        record = read_json(marker, lambda msg: ConfigError(f"{msg}: the chain record is corrupt; {NEW_CHAIN_HINT}"))
        if record.get("weights") != weights:
            continue
        _check_bench(model_dir, record.get("bench"), bench)
        requests = tuple(Request.from_dict(r) for r in record["requests"])
        return Chain(requests, _existing_root(record["root"], model_dir, len(requests)))
    raise ConfigError(
        f"{model} holds weights written by smfa unlearn (run {written_by or 'unknown'}) but no record of what they "
        f"have forgotten resolves: no {MANIFEST} beside them and no {CHAIN_MARKER} written for these weights (in "
        f"them or in that run's model/); give the run directory itself or copy its model/ with its {CHAIN_MARKER}, "
        f"{NEW_CHAIN_HINT}")


def run_dir(model: str | Path) -> Path:
    """The run directory ``model`` names: ``RUN/model`` is ``RUN`` when the run's manifest is one level up."""
    path = Path(model).expanduser()
    if path.name == "model" and not (path / MANIFEST).is_file() and (path.parent / MANIFEST).is_file():
        return path.parent
    return path


def resolved(model: str | Path) -> str:
    """``model`` as an absolute path when it is a local one (a chain's root is recorded so), else as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def _existing_root(root: str, where: Path, n_requests: int) -> str:
    """A chain's recorded root, absolute; a hub id as recorded. A local root that is gone is refused: the chain's
    record (and the methods comparing with the original model) would name a model that is not there."""
    from smfa.models.loading import hub_id

    if hub_id(root) is not None or Path(root).expanduser().exists():
        return resolved(root)
    raise ConfigError(f"{where} continues a chain of {n_requests} request(s) whose original model {root} is gone: "
                      f"restore it there, {NEW_CHAIN_HINT}")


def _check_bench(where: Path, checksum: Any, bench: Any) -> None:
    if checksum != bench.checksum:
        raise ConfigError(f"{where} was unlearned on another bench (checksum {str(checksum)[:12]}, this bench "
                          f"{bench.checksum[:12]}): its person ids would name other people; use its own bench")


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


def chain_record(chain: Chain, group: ForgetSet, model: str, n_rows: int) -> dict[str, Any]:
    """The manifest keys of a run that answered ``group`` starting from ``model``."""
    return {
        "request": {"label": group.label, "people": sorted(group.people), "rows": n_rows},
        "parent": str(Path(model).resolve()) if Path(model).exists() else str(model),
        "chain": [{"run": r.run, "label": r.label, "people": list(r.people)} for r in chain.requests],
        "root": chain.root,
    }


REQUEST_EVAL_LIMIT = 100  # questions per evaluation set of a request (smfa unlearn's default is 200)
