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
