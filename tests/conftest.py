"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` bench preset (seed 0), built once per test session. Read-only: copy it before editing."""
    from smfa.bench import build_bench, preset_config

    out = tmp_path_factory.mktemp("bench") / "tiny"
    build_bench(preset_config("tiny", seed=0), out, progress=False)
    return out


# ---- the tiny pipeline, shared by the integration tests -------------------------------------------------
# A smaller bench than the tiny preset (60 people) so that the vanilla model trains in a few minutes on 2
# cores; the trained model is cached under $SMFA_CACHE_DIR (CI: a fresh directory per clone) keyed by the
# bench checksum and config, so local re-runs skip the training.
MICRO = dict(n_people=60, n_shape_images=160, anchor_size=24)
MICRO_STEPS = 1200
MICRO_LR = 2e-3


@pytest.fixture(scope="session")
def micro_bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smfa.bench import build_bench, preset_config

    out = tmp_path_factory.mktemp("micro") / "bench"
    build_bench(preset_config("tiny", seed=0, **MICRO), out, progress=False)
    return out


@pytest.fixture(scope="session")
def micro_vanilla(micro_bench_dir: Path) -> Path:
    """The vanilla tiny model trained on the micro bench (memorises every profile)."""
    from smfa.cache import cached_finetune
    from smfa.training import FinetuneConfig

    run, _ = cached_finetune(micro_bench_dir, FinetuneConfig(steps=MICRO_STEPS, lr=MICRO_LR, save_steps=400, progress=False))
    return run


@pytest.fixture(scope="session")
def micro_vanilla_metrics(micro_bench_dir: Path, micro_vanilla: Path, tmp_path_factory: pytest.TempPathFactory):
    """The vanilla's evaluation (the reference every method test compares with)."""
    from smfa.eval.pipeline import EvalConfig, evaluate
    from smfa.eval.schema import load_metrics

    out = tmp_path_factory.mktemp("eval") / "vanilla"
    evaluate(EvalConfig(bench=str(micro_bench_dir), model=str(micro_vanilla), out=str(out), forget="10",
                        limit=40, progress=False))
    return load_metrics(out)
