"""Deletion requests: forget named people, one request after another.

A request names people (``--people p0020,p0052``, or a file with one id per line); ``--model`` is the model
that answers it: the vanilla for the first request, or an earlier unlearning run — then the new run starts
from that run's weights and the requests form a **chain**. Every unlearning run records in its manifest:

- ``request``: the people it forgot (``label`` is the split name, or ``request`` for named people);
- ``parent``: the model it started from; ``chain``: the earlier requests, oldest first; ``root``: the
  chain's original vanilla, which methods comparing with the vanilla (NPO's reference, KL's target) use.

The forget group of a run is resolved once (:func:`smfa.bench.forget_set.resolve_forget`, a
:class:`smfa.bench.forget_set.ForgetSet`): the people of earlier requests are never in the retain anchor nor in a retain metric, and the evaluation
reports their leak beside this request's (``metrics.json`` ``requests``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smfa.bench.forget_set import ForgetSet
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


def chain_record(chain: Chain, group: ForgetSet, model: str, n_rows: int) -> dict[str, Any]:
    """The manifest keys of a run that answered ``group`` starting from ``model``."""
    return {
        "request": {"label": group.label, "people": sorted(group.people), "rows": n_rows},
        "parent": str(Path(model).resolve()) if Path(model).exists() else str(model),
        "chain": [{"run": r.run, "label": r.label, "people": list(r.people)} for r in chain.requests],
        "root": chain.root,
    }


REQUEST_EVAL_LIMIT = 100  # questions per evaluation set of a request (smfa unlearn's default is 200)
