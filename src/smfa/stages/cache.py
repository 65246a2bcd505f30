"""The user's cache of trained tiny models, keyed by bench checksum and training config, so that a second
demo (or test session) skips the vanilla training; under :func:`smfa.cache.cache_dir`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from smfa.cache import cache_dir
from smfa.pretrained import training_key
from smfa.rundir import read_manifest


def cached_finetune(bench_dir: str | Path, cfg, *, label: str = "vanilla") -> tuple[Path, bool]:
    """The finetune run for (bench, cfg) from the cache, training it first if missing. Returns (run, was_cached)."""
    from smfa.bench import Bench
    from smfa.stages.finetune import finetune

    checksum = Bench.load(bench_dir, verify_images=False).checksum
    run = cache_dir() / "runs" / f"{label}-{training_key(checksum, cfg)}"
    if (run / "manifest.json").is_file() and read_manifest(run).get("bench", {}).get("checksum") == checksum:
        return run, True
    # resume=True picks up a cached training that was killed half-way (its checkpoints are kept)
    finetune(replace(cfg, bench=str(bench_dir), out=str(run), overwrite=True, resume=True))
    return run, False
