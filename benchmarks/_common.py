"""Shared set-up of the benchmark scripts: a tiny bench and a cached vanilla model."""

from __future__ import annotations

import argparse
import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workdir", default=os.environ.get("SMFA_BENCH_WORKDIR", "/tmp/smfa-benchmarks"),
                   help="where the bench and runs are written (default /tmp/smfa-benchmarks)")
    p.add_argument("--steps", type=int, default=None,
                   help="vanilla training steps (default: smfa finetune's, whose seed-0 vanilla ships with the package)")
    return p


def tiny_setup(workdir: str, steps: int | None = None) -> tuple[Path, Path]:
    """(bench dir, vanilla run) for the tiny preset, seed 0; the vanilla is the shipped one (default steps)
    or comes from the smfa cache."""
    from smfa.bench import build_bench, preset_config
    from smfa.stages.cache import cached_finetune
    from smfa.stages.finetune import FinetuneConfig

    bench = Path(workdir) / "bench-tiny"
    if not (bench / "bench.json").is_file():
        build_bench(preset_config("tiny", seed=0), bench, overwrite=True, progress=False)
    vanilla, _ = cached_finetune(bench, FinetuneConfig() if steps is None else FinetuneConfig(steps=steps))
    return bench, vanilla


@contextmanager
def timed(label: str, results: dict[str, float]):
    t0 = time.perf_counter()
    yield
    results[label] = time.perf_counter() - t0
    print(f"  {label}: {results[label]:.1f} s", flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
