"""The user's cache of trained tiny models, keyed by bench checksum and training config, so that a second
demo (or test session) skips the vanilla training. ``$SMFA_CACHE_DIR`` overrides the location
(default ``$XDG_CACHE_HOME/smfa`` or ``~/.cache/smfa``)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from smfa.rundir import read_manifest


def cache_dir() -> Path:
    env = os.environ.get("SMFA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smfa"


def training_key(bench_checksum: str, cfg) -> str:
    """A digest of everything that decides the trained weights (not paths, not progress/overwrite flags),
    including the built-in tiny model's architecture and initialisation, so a change there retrains."""
    from smfa.models.tiny import TinyModelConfig

    fields = {k: v for k, v in asdict(cfg).items() if k not in ("bench", "out", "overwrite", "resume", "progress", "pretrained")}
    if fields.get("sampler") == "random":  # the default: keep the keys of models cached before the option existed
        fields.pop("sampler")
    arch = asdict(TinyModelConfig()) if cfg.model == "tiny" else None
    blob = json.dumps({"bench": bench_checksum, "config": fields, "tiny_model": arch}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_finetune(bench_dir: str | Path, cfg, *, label: str = "vanilla") -> tuple[Path, bool]:
    """The finetune run for (bench, cfg) from the cache, training it first if missing. Returns (run, was_cached)."""
    from smfa.bench import Bench
    from smfa.training import finetune

    checksum = Bench.load(bench_dir, verify_images=False).checksum
    run = cache_dir() / "runs" / f"{label}-{training_key(checksum, cfg)}"
    if (run / "manifest.json").is_file() and read_manifest(run).get("bench", {}).get("checksum") == checksum:
        return run, True
    # resume=True picks up a cached training that was killed half-way (its checkpoints are kept)
    finetune(replace(cfg, bench=str(bench_dir), out=str(run), overwrite=True, resume=True))
    return run, False
